"""Several repositories in one tritonserver: correct and concurrent answers, clashes, the thread split.

MiniLM (embeddings, the session's fp32 repository) and a random-weight BERT classifier built here are
served by one process; their answers are compared with the source models.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from classifier_fixtures import write_classifier
from click.testing import CliRunner
from conftest import BuiltRepository, launch_spec, running_server

from model_repo_builder.build import BuildResult, build
from model_repo_builder.cli import main
from model_repo_builder.client import embed_texts, infer_task
from model_repo_builder.export.classifier_verify import reference_scores
from model_repo_builder.export.verify import SAMPLE_TEXTS, reference_embeddings
from model_repo_builder.models.source import resolve_source
from model_repo_builder.repository.manifest import read_manifest
from model_repo_builder.repository.variants import Scheduling, make_variant
from model_repo_builder.runtime.server import TritonServer
from model_repo_builder.runtime.supervisor import stub_processes
from model_repo_builder.spec import BuildSpec
from model_repo_builder.tasks import get_task

pytestmark = pytest.mark.integration

TEXTS = list(SAMPLE_TEXTS)


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_classifier(tmp_path_factory.mktemp("models") / "bert-3-labels", num_labels=3)


# One instance per model here (the default is one per core): the thread split between two models
# then differs from what each gets alone on any machine, so the tests below can see it.
@pytest.fixture(scope="module")
def classifier_repo(tmp_path_factory: pytest.TempPathFactory, classifier_dir: Path) -> BuildResult:
    output = tmp_path_factory.mktemp("repos-classifier")
    return build(BuildSpec(source=str(classifier_dir), output=output, max_batch_size=8, instances=1))


@pytest.fixture(scope="module")
def minilm(fp32_repo: BuiltRepository, tmp_path_factory: pytest.TempPathFactory) -> BuiltRepository:
    """The session's fp32 MiniLM repository as a one-instance variant (same files, hash-checked)."""
    options = fp32_repo.result.manifest.options
    one = Scheduling(
        instances=1,
        max_batch_size=options["max_batch_size"],
        max_queue_delay_us=options["max_queue_delay_us"],
    )
    variant = make_variant(fp32_repo.repository, tmp_path_factory.mktemp("minilm-one") / "minilm", one)
    result = dataclasses.replace(fp32_repo.result, repository=variant, manifest=read_manifest(variant))
    return BuiltRepository(spec=dataclasses.replace(fp32_repo.spec, instances=1), result=result)


@pytest.fixture(scope="module")
def both(minilm, classifier_repo) -> Iterator[TritonServer]:
    """One server on the MiniLM repository and the classifier repository."""
    with running_server(minilm.repository, classifier_repo.repository) as server:
        yield server


def _expected_embeddings(minilm) -> np.ndarray:
    model = minilm.result.manifest.model
    _, _, expected = reference_embeddings(
        resolve_source("minilm").path, TEXTS, model["pooling"], model["normalize"], model["max_length"], False
    )
    return expected


def test_two_repositories_of_different_tasks_answer_correctly_and_concurrently(
    both, minilm, classifier_repo, classifier_dir
) -> None:
    assert both.models == sorted([minilm.name, classifier_repo.name])
    expected_vectors = _expected_embeddings(minilm)
    expected_scores = reference_scores(classifier_dir, tuple(TEXTS), None, "softmax", 512, allow_pickle=False)
    task = get_task("text-classification")
    results: dict[str, list[np.ndarray]] = {"embed": [], "classify": []}
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def embed() -> None:
        start.wait()
        for _ in range(10):
            results["embed"].append(embed_texts(minilm.name, TEXTS, url=both.http_url))

    def classify() -> None:
        start.wait()
        for _ in range(10):
            outputs = infer_task(classifier_repo.name, task, {"TEXT": TEXTS}, both.http_url, max_batch_size=8)
            results["classify"].append(outputs["SCORES"])

    def guarded(target):
        def run() -> None:
            try:
                target()
            except BaseException as error:  # reported below, with the thread's own error
                errors.append(error)

        return run

    threads = [threading.Thread(target=guarded(t)) for t in (embed, embed, classify, classify)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert len(results["embed"]) == 20 and len(results["classify"]) == 20
    for vectors in results["embed"]:
        cosine = np.sum(vectors * expected_vectors, axis=1)  # both normalized
        assert cosine.min() > 0.999
    for scores in results["classify"]:
        np.testing.assert_allclose(scores, expected_scores, atol=1e-4)


def test_the_cores_are_divided_across_the_models_and_reach_onnx_runtime(
    both, minilm, classifier_repo
) -> None:
    cores = len(os.sched_getaffinity(0))
    split = {m.model: m.threads for m in both.threads.models}
    assert split == {minilm.name: max(1, cores // 2), classifier_repo.name: max(1, cores // 2)}
    stubs = stub_processes(both.pid)
    shared_threads = len(os.listdir(f"/proc/{stubs[f'{minilm.name}_0_0']}/task"))
    with running_server(minilm.repository) as alone:
        assert {m.model: m.threads for m in alone.threads.models} == {minilm.name: cores}
        alone_stub = stub_processes(alone.pid)[f"{minilm.name}_0_0"]
        alone_threads = len(os.listdir(f"/proc/{alone_stub}/task"))
    # ONNX Runtime's intra-op pool has threads - 1 workers (the caller is the first): alone the stub
    # runs `cores` of them, beside the classifier half as many.
    assert alone_threads - shared_threads == cores - max(1, cores // 2)


def test_a_model_name_in_two_repositories_is_refused_before_start(minilm, tmp_path, free_ports) -> None:
    clash = tmp_path / "copy"
    shutil.copytree(minilm.repository, clash, ignore=shutil.ignore_patterns("__pycache__"))
    http, grpc, metrics = free_ports(3)
    result = CliRunner().invoke(
        main,
        ["launch", str(minilm.repository), str(clash), "--http-port", str(http)]
        + ["--grpc-port", str(grpc), "--metrics-port", str(metrics)],
    )
    assert result.exit_code == 1
    assert f"model '{minilm.name}' is in both {minilm.repository} and {clash}" in result.output


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_building_into_a_folder_of_repositories_touches_only_the_built_one(
    tmp_path, minilm, classifier_dir, monkeypatch
) -> None:
    output = tmp_path / "repos"
    shutil.copytree(minilm.repository, output / minilm.name, ignore=shutil.ignore_patterns("__pycache__"))
    before = snapshot(output / minilm.name)

    from model_repo_builder.repository import config as model_config

    def interrupt(config):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(model_config, "render", interrupt)
        with pytest.raises(KeyboardInterrupt):
            build(BuildSpec(source=str(classifier_dir), output=output, name="bert", max_batch_size=8))
    assert sorted(p.name for p in output.iterdir()) == [minilm.name]  # no half-written model B
    assert snapshot(output / minilm.name) == before

    built = build(BuildSpec(source=str(classifier_dir), output=output, name="bert", max_batch_size=8))
    assert sorted(p.name for p in output.iterdir()) == sorted([minilm.name, "bert"])
    assert snapshot(output / minilm.name) == before
    assert (built.repository / "bert" / "config.pbtxt").is_file()


def test_trb_launch_serves_two_repositories_prints_the_split_and_supervises_both(
    minilm, classifier_repo, free_ports
) -> None:
    import json
    import signal
    import subprocess
    import sys
    import time

    from model_repo_builder.runtime.status import state_file

    http, grpc, metrics = free_ports(3)
    command = [str(Path(sys.executable).with_name("trb")), "launch"]
    command += [str(minilm.repository), str(classifier_repo.repository)]
    command += ["--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)]
    launcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    printed: list[str] = []
    try:
        assert launcher.stdout is not None
        for line in launcher.stdout:  # the launcher prints its endpoints once every model is ready
            printed.append(line)
            if line.startswith("Ctrl-C"):
                break
        output = "".join(printed)
        assert f"serving {classifier_repo.name}, {minilm.name} from" in output, output
        share = max(1, len(os.sched_getaffinity(0)) // 2)
        assert f"{classifier_repo.name} 1×{share}, {minilm.name} 1×{share}" in output, output
        assert "shared by all models" in output

        def status() -> dict:
            result = CliRunner().invoke(main, ["status", "--url", f"127.0.0.1:{http}", "--json"])
            assert result.exit_code == 0, result.output
            return json.loads(result.output)

        deadline = time.monotonic() + 30
        while not state_file(http).exists():  # the supervisor writes it when it starts watching
            assert time.monotonic() < deadline, "no supervisor state"
            time.sleep(0.1)
        seen = status()
        assert [m["name"] for m in seen["models"]] == [classifier_repo.name, minilm.name]
        assert all(m["ready"] for m in seen["models"])
        assert seen["launcher"]["repositories"] == {
            classifier_repo.name: str(classifier_repo.repository),
            minilm.name: str(minilm.repository),
        }
        stubs = stub_processes(seen["launcher"]["pid"])
        os.kill(stubs[f"{classifier_repo.name}_0_0"], signal.SIGKILL)
        deadline = time.monotonic() + 30
        restarts: dict[str, int] = {}
        while restarts.get(classifier_repo.name, 0) < 1:  # polls the state file the supervisor writes
            assert time.monotonic() < deadline, "the classifier was not reloaded"
            time.sleep(0.1)
            restarts = {m["name"]: m["restarts"] for m in status()["models"]}
        assert restarts == {classifier_repo.name: 1, minilm.name: 0}
        scores = infer_task(
            classifier_repo.name,
            get_task("text-classification"),
            {"TEXT": TEXTS},
            f"127.0.0.1:{http}",
            max_batch_size=8,
        )
        assert scores["SCORES"].shape == (len(TEXTS), 3)
    finally:
        launcher.send_signal(signal.SIGTERM)
        launcher.wait(timeout=60)
    assert launcher.returncode == 0


def test_priority_levels_and_rate_limited_models_load_and_answer(minilm, classifier_repo, tmp_path) -> None:
    """Two repositories whose models share one rate limiter resource, one of them with priorities."""
    from model_repo_builder.repository import config as model_config
    from model_repo_builder.spec import LaunchSpec

    def copy(built, name: str, **options: object) -> Path:
        target = tmp_path / name
        shutil.copytree(
            built.repository / built.name,
            target / built.name,
            ignore=shutil.ignore_patterns("config.pbtxt", "__pycache__"),
        )
        current = model_config.as_dict(
            model_config.parse((built.repository / built.name / "config.pbtxt").read_text())
        )
        batch = int(current["max_batch_size"])
        spec = BuildSpec(
            source="x",
            instances=1,
            max_batch_size=batch,
            rate_limit_resources=("cpu=1",),
            **options,  # type: ignore[arg-type]
        )
        config = {**current, **model_config.scheduling(spec)}
        (target / built.name / "config.pbtxt").write_text(model_config.render(config), encoding="utf-8")
        return target  # no trb.yaml: not what `trb build` wrote

    embedder = copy(minilm, "embedder", priority_levels=2, priority_queues=("2=4",))
    classifier = copy(classifier_repo, "classifier")
    ports = launch_spec(embedder)
    spec = LaunchSpec(
        repositories=(embedder, classifier),
        http_port=ports.http_port,
        grpc_port=ports.grpc_port,
        metrics_port=ports.metrics_port,
        rate_limit_resources=("cpu=1",),
    )
    with TritonServer(spec) as server:
        command = server.command()
        assert "--rate-limit=execution_count" in command and "--rate-limit-resource=cpu:1" in command
        task = get_task("feature-extraction")
        for priority in (1, 2):
            vectors = infer_task(
                minilm.name, task, {"TEXT": TEXTS}, server.http_url, max_batch_size=8, priority=priority
            )
            assert vectors["EMBEDDING"].shape[0] == len(TEXTS)
        scores = infer_task(
            classifier_repo.name,
            get_task("text-classification"),
            {"TEXT": TEXTS},
            server.http_url,
            max_batch_size=8,
        )
        assert scores["SCORES"].shape == (len(TEXTS), 3)
