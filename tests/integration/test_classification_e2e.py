"""Classifiers and rerankers built, launched on the real tritonserver and queried over HTTP and gRPC.

Random-weight BERTs with MiniLM's real tokenizer (tests/classifier_fixtures.py); served scores are
compared with the source model in PyTorch (classification) and with sentence-transformers'
`CrossEncoder.predict` (reranking).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from classifier_fixtures import write_classifier
from click.testing import CliRunner
from conftest import running_server

from model_repo_builder.build import BuildResult, build
from model_repo_builder.cli import main
from model_repo_builder.client import infer_task
from model_repo_builder.export.classifier_verify import SAMPLE_QUERIES, reference_scores
from model_repo_builder.export.verify import SAMPLE_TEXTS
from model_repo_builder.runtime.server import TritonServer
from model_repo_builder.spec import BuildSpec
from model_repo_builder.tasks import get_task

pytestmark = pytest.mark.integration

TEXTS = list(SAMPLE_TEXTS)
QUERIES = list(SAMPLE_QUERIES)


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_classifier(tmp_path_factory.mktemp("models") / "bert-3-labels", num_labels=3)


@pytest.fixture(scope="module")
def reranker_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_classifier(tmp_path_factory.mktemp("models") / "bert-reranker", num_labels=1, seed=1)


def _build(tmp_path_factory: pytest.TempPathFactory, source: Path, precision: str) -> BuildResult:
    output = tmp_path_factory.mktemp(f"repos-{source.name}-{precision}")
    return build(BuildSpec(source=str(source), output=output, precision=precision, max_batch_size=8))


@pytest.fixture(scope="module")
def classifier(
    tmp_path_factory: pytest.TempPathFactory, classifier_dir: Path
) -> Iterator[tuple[BuildResult, TritonServer]]:
    built = _build(tmp_path_factory, classifier_dir, "fp32")
    with running_server(built.repository) as server:
        yield built, server


@pytest.fixture(scope="module")
def reranker(
    tmp_path_factory: pytest.TempPathFactory, reranker_dir: Path
) -> Iterator[tuple[BuildResult, TritonServer]]:
    built = _build(tmp_path_factory, reranker_dir, "fp32")
    with running_server(built.repository) as server:
        yield built, server


def _url(server: TritonServer, protocol: str) -> str:
    return server.grpc_url if protocol == "grpc" else server.http_url


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_classification_scores_and_labels_equal_the_source_model(
    classifier, classifier_dir, protocol
) -> None:
    built, server = classifier
    task = get_task("text-classification")
    assert built.manifest.task == task.name
    outputs = infer_task(
        built.name, task, {"TEXT": TEXTS}, _url(server, protocol), protocol, max_batch_size=8
    )
    expected = reference_scores(classifier_dir, tuple(TEXTS), None, "softmax", 512, allow_pickle=False)
    np.testing.assert_allclose(outputs["SCORES"], expected, atol=1e-4)
    labels = [row.reshape(-1)[0].decode() for row in outputs["LABEL"]]
    id2label = json.loads((classifier_dir / "config.json").read_text())["id2label"]
    assert labels == [id2label[str(index)] for index in expected.argmax(axis=1)]
    assert len(set(labels)) > 1  # the texts really are told apart


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_reranker_scores_equal_cross_encoder_predict(reranker, reranker_dir, protocol) -> None:
    from sentence_transformers import CrossEncoder

    built, server = reranker
    task = get_task("text-ranking")
    outputs = infer_task(
        built.name,
        task,
        {"QUERY": QUERIES, "TEXT": TEXTS},
        _url(server, protocol),
        protocol,
        max_batch_size=8,
    )
    expected = CrossEncoder(str(reranker_dir), device="cpu").predict(list(zip(QUERIES, TEXTS, strict=True)))
    served = outputs["SCORE"].reshape(-1)
    np.testing.assert_allclose(served, expected, atol=1e-4)
    assert list(np.argsort(-served)) == list(np.argsort(-expected))


def test_trb_infer_prints_passages_sorted_by_score(reranker) -> None:
    built, server = reranker
    passages = TEXTS[:4]
    result = CliRunner().invoke(
        main,
        [
            "infer",
            str(built.repository),
            "--url",
            server.http_url,
            "--query",
            QUERIES[1],
            "--json",
            *passages,
        ],
    )
    assert result.exit_code == 0, result.output
    ranked = json.loads(result.output)["ranked"]
    assert sorted(item["text"] for item in ranked) == sorted(passages)
    scores = [item["score"] for item in ranked]
    assert scores == sorted(scores, reverse=True)


def test_a_reranking_request_with_unequal_queries_and_passages_is_refused(reranker) -> None:
    from model_repo_builder.client import infer
    from model_repo_builder.errors import InferenceError

    built, server = reranker
    with pytest.raises(InferenceError, match="every text input needs the same number of rows"):
        infer(built.name, {"QUERY": QUERIES[:1], "TEXT": TEXTS[:2]}, ["SCORE"], server.http_url)


def test_int8_classifier_and_reranker_verify_and_serve_close_to_fp32(
    tmp_path_factory, classifier_dir, reranker_dir
) -> None:
    for source, task_name, inputs, output in [
        (classifier_dir, "text-classification", {"TEXT": TEXTS}, "SCORES"),
        (reranker_dir, "text-ranking", {"QUERY": QUERIES, "TEXT": TEXTS}, "SCORE"),
    ]:
        built = _build(tmp_path_factory, source, "int8")
        assert built.manifest.verification["max_score_diff"] <= 0.1
        with running_server(built.repository) as server:
            served = infer_task(built.name, get_task(task_name), inputs, server.http_url, max_batch_size=8)[
                output
            ]
        activation = "softmax" if output == "SCORES" else "sigmoid"
        queries = tuple(QUERIES) if output == "SCORE" else None
        expected = reference_scores(source, tuple(TEXTS), queries, activation, 512, allow_pickle=False)
        assert np.abs(served.reshape(expected.shape) - expected).max() <= 0.1


def test_a_model_trb_cannot_serve_fails_clearly_and_writes_nothing(
    tmp_path: Path, classifier_dir: Path
) -> None:
    reader = tmp_path / "reader"
    reader.mkdir()
    config = {"model_type": "bert", "architectures": ["BertForQuestionAnswering"], "vocab_size": 100}
    (reader / "config.json").write_text(json.dumps(config))
    (reader / "model.safetensors").write_bytes((classifier_dir / "model.safetensors").read_bytes())
    output = tmp_path / "repos"
    result = CliRunner().invoke(main, ["build", str(reader), "--output", str(output)])
    assert result.exit_code != 0
    assert "question-answering" in result.output and "not yet supported" in result.output
    assert "Traceback" not in result.output
    assert not output.exists() or not any(output.iterdir())


def test_sweep_drives_a_reranker_with_query_and_passage(reranker, tmp_path: Path) -> None:
    from model_repo_builder.perf.sweep import run_sweep
    from model_repo_builder.spec import SweepSpec

    built, _ = reranker
    results = run_sweep(SweepSpec(repository=built.repository, concurrency=(1,), output=tmp_path)).results
    level = results["configs"][0]["levels"][0]
    assert level["throughput_rps"] > 0 and level["requests"] > 0
    (data_file,) = (tmp_path / "raw").glob("input_data_*.json")
    step = json.loads(data_file.read_text())["data"][0]
    assert set(step) == {"QUERY", "TEXT"} and step["QUERY"] != step["TEXT"]
