"""A task is one registered module: build, the README writer and `trb infer` read everything from it."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from model_repo_builder.build import build
from model_repo_builder.cli import main
from model_repo_builder.client import resolve_target
from model_repo_builder.repository import config as model_config
from model_repo_builder.repository.embedding import BuiltModel
from model_repo_builder.spec import BuildSpec
from model_repo_builder.tasks import (
    ModelFacts,
    Task,
    TensorIO,
    buildable_names,
    register,
    registered,
    unregister,
)


class ToyTask(Task):
    """Counts characters: a task with no export, so the test needs no model weights."""

    name = "toy-counting"
    summary = "text in, its length out"
    inputs = (TensorIO(name="WORDS", data_type="TYPE_STRING"),)
    outputs = (TensorIO(name="LENGTH", data_type="TYPE_INT32"),)
    main_output = "LENGTH"
    needs_tokenizer = False

    def detect(self, facts: ModelFacts) -> bool:
        return facts.model_type == "toy"

    def build(self, spec: Any, source: Any, name: str, staging: Path) -> BuiltModel:
        (staging / name / "1").mkdir(parents=True)
        config = {
            "name": name,
            "backend": "python",
            "max_batch_size": spec.max_batch_size,
            "input": [item.config() for item in self.inputs],
            "output": [item.config() for item in self.outputs],
        }
        (staging / name / "config.pbtxt").write_text(model_config.render(config))
        return BuiltModel(model={"unit": "characters"}, verification={"summary": "nothing to verify"})

    def readme_call(self, name: str, options: dict[str, Any], model: dict[str, Any], repo_dir: str) -> str:
        return f"Send `WORDS` to {name}; `LENGTH` counts {model['unit']}."

    def format_result(self, texts: Sequence[str], outputs: dict[str, np.ndarray]) -> list[str]:
        return [f"{text}: {int(n)}" for text, n in zip(texts, outputs["LENGTH"].reshape(-1), strict=True)]

    def result_json(self, texts: Sequence[str], outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        return {"lengths": outputs["LENGTH"].reshape(-1).tolist()}


def toy_source(folder: Path) -> Path:
    """A model directory a toy task recognises: config.json says `toy`, with (unused) weights."""
    source = folder / "toy-model"
    source.mkdir()
    (source / "config.json").write_text(json.dumps({"model_type": "toy"}))
    (source / "model.safetensors").write_bytes(b"unused")
    return source


@pytest.fixture
def toy_task() -> Iterator[Task]:
    task = register(ToyTask())
    yield task
    unregister(task.name)


def test_registering_a_task_makes_build_the_readme_and_infer_pick_it_up(
    toy_task: Task, tmp_path: Path
) -> None:
    source = toy_source(tmp_path)
    assert toy_task.name in buildable_names()

    result = build(BuildSpec(source=str(source), output=tmp_path / "repos"))
    assert result.manifest.task == toy_task.name
    readme = (result.repository / "README.md").read_text()
    assert "Send `WORDS` to toy-model; `LENGTH` counts characters." in readme
    config = model_config.parse((result.repository / "toy-model" / "config.pbtxt").read_text())
    assert [i.name for i in config.input] == ["WORDS"]

    name, task, max_batch = resolve_target(str(result.repository))
    assert (name, task, max_batch) == ("toy-model", toy_task, 32)
    assert task.text_inputs == ("WORDS",)


def test_two_tasks_claiming_one_model_is_an_error_naming_both(toy_task: Task, tmp_path: Path) -> None:
    from model_repo_builder.errors import UnsupportedModelError
    from model_repo_builder.tasks import choose_task

    class Greedy(ToyTask):
        name = "toy-greedy"

    register(Greedy())
    try:
        facts = ModelFacts.read(tmp_path, {"model_type": "toy"})
        with pytest.raises(
            UnsupportedModelError, match="fits several tasks.*toy-counting, toy-greedy.*--task"
        ):
            choose_task(facts)
        assert choose_task(facts, "toy-greedy").name == "toy-greedy"
    finally:
        unregister("toy-greedy")


def test_build_help_names_every_buildable_task() -> None:
    output = CliRunner().invoke(main, ["build", "--help"], terminal_width=400).output
    help_text = " ".join(output.split())
    for name in buildable_names():
        assert name in help_text
    assert set(buildable_names()) <= set(registered())


class PickyToyTask(ToyTask):
    """A toy whose 7-bit int8 weights fail verification, as a model's might."""

    name = "toy-picky"

    def build(self, spec: Any, source: Any, name: str, staging: Path) -> BuiltModel:
        from model_repo_builder.errors import VerificationError

        if spec.int8_scheme == "s8-reduced":
            raise VerificationError("cosine 0.98 < 0.99", {"EMBEDDING": 0.1})
        return super().build(spec, source, name, staging)


def test_int8_auto_keeps_the_first_scheme_that_verifies(tmp_path: Path) -> None:
    task = register(PickyToyTask())
    try:
        source = toy_source(tmp_path)
        spec = BuildSpec(source=str(source), output=tmp_path / "repos", precision="int8", task=task.name)
        result = build(spec)
        assert result.manifest.options["int8_scheme"] == "u8"
        assert result.manifest.verification["int8_scheme"]["saturation_free"] is True
        assert sorted(p.name for p in (tmp_path / "repos").iterdir()) == ["toy-model"]  # no leftovers
    finally:
        unregister(task.name)


@pytest.mark.parametrize(("cores", "encoder"), [(1, 1), (2, 2), (3, 3), (16, 4)])
def test_encoders_default_to_one_instance_per_core_up_to_four_generation_to_one(
    cores: int, encoder: int
) -> None:
    tasks = registered()
    for name in ("feature-extraction", "text-classification", "text-ranking", "token-classification"):
        assert tasks[name].default_instances("cpu", cores) == encoder, name
        assert tasks[name].default_instances("gpu", cores) == 1, name
    assert tasks["text2text-generation"].default_instances("cpu", cores) == 1


class ParallelToyTask(ToyTask):
    """A toy that, like the encoders, runs one instance per core by default."""

    name = "toy-parallel"
    max_default_cpu_instances = 4

    def build(self, spec: Any, source: Any, name: str, staging: Path) -> BuiltModel:
        built = super().build(spec, source, name, staging)
        return BuiltModel(
            model={**built.model, "count": spec.instance_count}, verification=built.verification
        )


def test_a_build_without_instances_records_the_tasks_default_and_an_explicit_count_wins(
    tmp_path: Path,
) -> None:
    from model_repo_builder.runtime.threads import available_cores

    task = register(ParallelToyTask())
    try:
        source = toy_source(tmp_path)
        spec = BuildSpec(source=str(source), output=tmp_path / "repos", task=task.name)
        default = build(spec).manifest
        assert default.options["instances"] == default.model["count"] == min(available_cores(), 4)
        explicit = build(BuildSpec(**{**spec.__dict__, "instances": 3})).manifest
        assert explicit.options["instances"] == explicit.model["count"] == 3
    finally:
        unregister(task.name)
