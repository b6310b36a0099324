"""Build-time checks of pre/post steps: SPEC forms, the contract, and what lands in the repository."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model_repo_builder.errors import SpecError
from model_repo_builder.runtime.sidecar import copy_steps, read_steps

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "steps.py"
KINDS = {"pre": "text", "post": "vectors"}


def test_steps_are_copied_hashed_and_recorded_in_order(tmp_path: Path) -> None:
    specs = {
        "pre": (f"{EXAMPLES}:scrub_emails", f"{EXAMPLES}:translate_prompt"),
        "post": (f"{EXAMPLES}:matryoshka_128",),
    }
    steps = copy_steps(specs, KINDS, tmp_path)
    assert [step.name for step in steps] == [
        "pre-0-scrub_emails",
        "pre-1-translate_prompt",
        "post-0-matryoshka_128",
    ]
    assert read_steps(tmp_path) == steps
    recorded = json.loads((tmp_path / "sidecars" / "steps.json").read_text())
    assert [entry["kind"] for entry in recorded] == ["text", "text", "vectors"]
    assert (tmp_path / "sidecars" / steps[0].file).read_bytes() == EXAMPLES.read_bytes()


def test_a_module_spec_is_found_by_import_and_its_file_copied(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "my_steps.py").write_text("def same(texts):\n    return list(texts)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    (step,) = copy_steps({"pre": ("my_steps:same",)}, KINDS, tmp_path / "model")
    assert (step.function, step.file) == ("same", "pre_0_my_steps.py")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no-colon", "must be `path/to/file.py:function`"),
        ("missing.py:f", "is not a file"),
        (f"{EXAMPLES}:nothing_here", "has no function 'nothing_here'"),
        ("no_such_module_xyz:f", "not importable"),
    ],
)
def test_a_bad_spec_names_what_is_wrong(tmp_path: Path, spec: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        copy_steps({"pre": (spec,)}, KINDS, tmp_path)


def test_a_step_breaking_its_contract_is_refused_at_build(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def drop_one(texts):\n    return texts[1:]\n\ndef not_vectors(v):\n    return 'x'\n")
    with pytest.raises(SpecError, match="must return a list of 2 strings"):
        copy_steps({"pre": (f"{bad}:drop_one",)}, KINDS, tmp_path / "out")
    with pytest.raises(SpecError, match="2-D array with one row per input row"):
        copy_steps({"post": (f"{bad}:not_vectors",)}, KINDS, tmp_path / "out")
