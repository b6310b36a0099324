"""Several repositories in one server: name clashes, the thread split, the launcher's parameter overrides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from deploy_fixtures import make_repository

from model_repo_builder.errors import RepositoryError, SpecError
from model_repo_builder.repository import config as model_config
from model_repo_builder.repository.manifest import MANIFEST_NAME, Manifest
from model_repo_builder.runtime.docker import docker_command
from model_repo_builder.runtime.server import served_models
from model_repo_builder.runtime.threads import thread_split
from model_repo_builder.spec import LaunchSpec
from model_repo_builder.templates.common.trb_runtime import LAUNCH_PARAMETERS_VARIABLE, model_parameters


def write_repository(root: Path, models: dict[str, int], threads: int = 2, fixed: int | None = None) -> Path:
    """A repository of `models` (name → instances), each config with `threads` intra-op threads."""
    root.mkdir(parents=True)
    for name, instances in models.items():
        config = {
            "name": name,
            "backend": "python",
            "max_batch_size": 8,
            "instance_group": [{"count": instances, "kind": "KIND_CPU"}],
            "parameters": model_config.string_parameters({"intra_op_threads": threads}),
        }
        (root / name).mkdir()
        (root / name / "config.pbtxt").write_text(model_config.render(config), encoding="utf-8")
    manifest = Manifest(
        name=next(iter(models)),
        task="feature-extraction",
        source={},
        options={"threads_per_instance": fixed},
        model={},
        verification={},
        versions={},
        files={},
    )
    (root / MANIFEST_NAME).write_text(manifest.to_yaml(), encoding="utf-8")
    return root


def test_models_of_several_repositories_map_to_their_repository(tmp_path: Path) -> None:
    a = write_repository(tmp_path / "a", {"minilm": 1})
    b = write_repository(tmp_path / "b", {"t5": 1, "t5_stream": 1})
    assert served_models((a, b)) == {"minilm": a, "t5": b, "t5_stream": b}


def test_a_model_name_in_two_repositories_is_refused_naming_both(tmp_path: Path) -> None:
    a = write_repository(tmp_path / "a", {"minilm": 1})
    b = write_repository(tmp_path / "b", {"minilm": 2})
    with pytest.raises(RepositoryError, match=rf"'minilm' is in both {a} and {b}"):
        served_models((a, b))


def test_launch_spec_takes_several_repositories_and_refuses_one_twice(tmp_path: Path) -> None:
    spec = LaunchSpec(repositories=(tmp_path / "a", tmp_path / "b"))
    assert spec.repository == tmp_path / "a"
    with pytest.raises(SpecError, match="more than once"):
        LaunchSpec(repositories=(tmp_path / "a", tmp_path / "x" / ".." / "a"))
    with pytest.raises(SpecError, match="at least one repository"):
        LaunchSpec(repositories=())


def test_one_repository_keeps_the_threads_its_build_chose(tmp_path: Path) -> None:
    a = write_repository(tmp_path / "a", {"t5": 2, "t5_stream": 2}, threads=4)
    split = thread_split(served_models((a,)), cores=4)
    assert [(m.model, m.instances, m.threads) for m in split.models] == [("t5", 2, 4), ("t5_stream", 2, 4)]
    assert split.overrides() == {}


def test_several_repositories_divide_the_cores_across_all_instances(tmp_path: Path) -> None:
    a = write_repository(tmp_path / "a", {"minilm": 2}, threads=4)
    b = write_repository(tmp_path / "b", {"bert": 1, "bert2": 1}, threads=8)
    split = thread_split(served_models((a, b)), cores=8)
    assert {m.model: m.threads for m in split.models} == {"minilm": 2, "bert": 2, "bert2": 2}
    assert split.total_threads == 8 and not split.oversubscribed
    assert split.overrides() == {m: {"intra_op_threads": "2"} for m in ("minilm", "bert", "bert2")}
    assert split.describe() == "8 cores: bert 1×2, bert2 1×2, minilm 2×2 (instances × threads)"


def test_more_instances_than_cores_get_one_thread_each_and_say_so(tmp_path: Path) -> None:
    a = write_repository(tmp_path / "a", {"minilm": 2}, threads=1)
    b = write_repository(tmp_path / "b", {"bert": 2}, threads=1)
    split = thread_split(served_models((a, b)), cores=2)
    assert {m.model: m.threads for m in split.models} == {"minilm": 1, "bert": 1}
    assert split.oversubscribed and split.total_threads == 4
    assert split.overrides() == {}  # already one thread each as built


def test_threads_chosen_at_build_are_kept_and_count_against_the_budget(tmp_path: Path) -> None:
    a = write_repository(tmp_path / "a", {"minilm": 1}, threads=4, fixed=4)
    b = write_repository(tmp_path / "b", {"bert": 2}, threads=8)
    split = thread_split(served_models((a, b)), cores=8)
    assert {m.model: (m.threads, m.fixed) for m in split.models} == {"minilm": (4, True), "bert": (2, False)}


def test_model_parameters_lays_the_launchers_overrides_over_the_config(monkeypatch) -> None:
    config = {
        "name": "minilm",
        "parameters": {"intra_op_threads": {"string_value": "2"}, "x": {"string_value": "y"}},
    }
    monkeypatch.delenv(LAUNCH_PARAMETERS_VARIABLE, raising=False)
    assert model_parameters(config) == {"intra_op_threads": "2", "x": "y"}
    monkeypatch.setenv(
        LAUNCH_PARAMETERS_VARIABLE, json.dumps({"minilm": {"intra_op_threads": 1}, "t5": {"x": "z"}})
    )
    assert model_parameters(config) == {"intra_op_threads": "1", "x": "y"}


def test_docker_mounts_each_repository_and_names_each(tmp_path: Path) -> None:
    first, second = make_repository(tmp_path / "a"), make_repository(tmp_path / "b")
    command = docker_command(LaunchSpec(repositories=(first, second)))
    assert f"{first.resolve()}:/models/0:ro" in command
    assert f"{second.resolve()}:/models/1:ro" in command
    assert [c for c in command if c.startswith("--model-repository")] == [
        "--model-repository=/models/0",
        "--model-repository=/models/1",
    ]
