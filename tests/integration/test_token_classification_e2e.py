"""A token classifier built, launched and queried: served spans equal transformers' pipeline ("simple")."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from classifier_fixtures import write_token_classifier
from click.testing import CliRunner
from conftest import running_server

from model_repo_builder.build import BuildResult, build
from model_repo_builder.cli import main
from model_repo_builder.client import infer_task
from model_repo_builder.export.verify import SAMPLE_TEXTS
from model_repo_builder.runtime.server import TritonServer
from model_repo_builder.spec import BuildSpec
from model_repo_builder.tasks import get_task

pytestmark = pytest.mark.integration

TEXTS = [*SAMPLE_TEXTS[:8], "Ada Lovelace wrote programs for Charles Babbage in London and Paris."]


@pytest.fixture(scope="module")
def token_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_token_classifier(tmp_path_factory.mktemp("models") / "bert-ner")


@pytest.fixture(scope="module")
def served(tmp_path_factory, token_model) -> Iterator[tuple[BuildResult, TritonServer]]:
    built = build(
        BuildSpec(source=str(token_model), output=tmp_path_factory.mktemp("repos"), max_batch_size=16)
    )
    with running_server(built.repository) as server:
        yield built, server


def _pipeline_spans(model_dir: Path, texts: list[str]) -> list[list[tuple[str, int, int, float]]]:
    from transformers import pipeline

    ner = pipeline("token-classification", model=str(model_dir), aggregation_strategy="simple", device="cpu")
    return [
        [(e["entity_group"], e["start"], e["end"], float(e["score"])) for e in ner(text)] for text in texts
    ]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_served_spans_equal_the_pipeline_with_simple_aggregation(served, token_model, protocol) -> None:
    built, server = served
    task = get_task("token-classification")
    assert built.manifest.task == task.name
    url = server.grpc_url if protocol == "grpc" else server.http_url
    outputs = infer_task(built.name, task, {"TEXT": TEXTS}, url, protocol)
    expected = _pipeline_spans(token_model, TEXTS)
    assert sum(len(row) for row in expected) > 5  # the random model really finds entities
    for row, want in enumerate(expected):
        count = len(want)
        labels = [label.decode() for label in outputs["ENTITY_LABELS"][row][:count]]
        starts = outputs["ENTITY_STARTS"][row][:count].tolist()
        ends = outputs["ENTITY_ENDS"][row][:count].tolist()
        assert list(zip(labels, starts, ends, strict=True)) == [(label, s, e) for label, s, e, _ in want]
        np.testing.assert_allclose(
            outputs["ENTITY_SCORES"][row][:count], [score for *_, score in want], atol=1e-4
        )
        assert (outputs["ENTITY_STARTS"][row][count:] == -1).all()  # the rest is padding


def test_trb_infer_prints_the_spans(served) -> None:
    built, server = served
    text = TEXTS[-1]
    result = CliRunner().invoke(
        main, ["infer", str(built.repository), "--url", server.http_url, "--json", text]
    )
    assert result.exit_code == 0, result.output
    (spans,) = json.loads(result.output)["entities"]
    assert all(span["text"] == text[span["start"] : span["end"]] for span in spans)
