"""`trb sweep REPO_A REPO_B --models a,b` against the real tritonserver and perf_analyzer, kept short.

The session's int8 MiniLM (embeddings) and a random-weight BERT classifier built here: one level,
short windows. Asserts structure, that every model has solo and shared figures and that the
concurrent runs' windows overlapped; speed is measured in bench/bench_multi_model.py, not here.
"""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path

import pytest
from classifier_fixtures import write_classifier
from click.testing import CliRunner

from model_repo_builder.build import BuildResult, build
from model_repo_builder.cli import main
from model_repo_builder.spec import BuildSpec

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def classifier_repo(tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    source = write_classifier(tmp_path_factory.mktemp("models") / "bert-3-labels", num_labels=3)
    output = tmp_path_factory.mktemp("repos-classifier")
    return build(BuildSpec(source=str(source), output=output, max_batch_size=8))


def test_two_models_alone_and_together(int8_repo, classifier_repo, tmp_path: Path) -> None:
    folder = tmp_path / "run"
    names = [int8_repo.name, classifier_repo.name]
    result = CliRunner().invoke(
        main,
        ["sweep", str(int8_repo.repository), str(classifier_repo.repository), "--models", ",".join(names)]
        + ["--concurrency", "2", "--interval-ms", "500", "--output", str(folder)],
    )
    assert result.exit_code == 0, result.output
    results = json.loads((folder / "results.json").read_text())
    section = results["models"]
    assert [model["name"] for model in section["models"]] == names
    assert [model["task"] for model in section["models"]] == ["feature-extraction", "text-classification"]
    (level,) = section["levels"]
    assert (level["mode"], level["load"], level["error"]) == ("concurrency", 2.0, None)
    # The two perf_analyzer processes measured at the same time, as their timestamps show.
    assert level["overlap"]["overlapped"], level["overlap"]
    assert set(level["overlap"]["fractions"]) == set(names)
    for cost in level["costs"]:
        for figures in (cost["solo"], cost["shared"]):
            assert figures["requests"] > 0 and figures["throughput_rps"] > 0
            assert 0 < figures["p50_ms"] <= figures["p99_ms"]
        assert cost["throughput_ratio"] == pytest.approx(
            cost["shared"]["throughput_rps"] / cost["solo"]["throughput_rps"], abs=1e-4
        )
        assert cost["p99_ratio"] == pytest.approx(cost["shared"]["p99_ms"] / cost["solo"]["p99_ms"], abs=1e-4)
    for name in names:  # one perf_analyzer per model and run, each with its own reports
        assert (folder / "raw" / "shared-concurrency-2" / name / "profile_export.json").is_file()
        assert (folder / "raw" / "solo-concurrency-2" / name / "profile_export.json").is_file()
    assert results["summary"].startswith("Driven together at concurrency 2 each:")
    assert all(name in result.output for name in names) and "throughput_ratio" in result.output
    page = (folder / "report.html").read_text()
    assert "Solo and shared" in page and html.escape(results["summary"]) in page
    assert len((folder / "levels.csv").read_text().splitlines()) == 1 + len(names)


def test_an_unknown_model_and_a_name_clash_are_refused_before_measuring(
    int8_repo, classifier_repo, tmp_path: Path
) -> None:
    repositories = [str(int8_repo.repository), str(classifier_repo.repository)]
    unknown = CliRunner().invoke(main, ["sweep", *repositories, "--models", f"{int8_repo.name},nope"])
    assert unknown.exit_code != 0
    assert "`--models`: no model named nope" in unknown.output and classifier_repo.name in unknown.output
    clash = tmp_path / "copy"
    shutil.copytree(int8_repo.repository, clash, ignore=shutil.ignore_patterns("__pycache__"))
    clashed = CliRunner().invoke(main, ["sweep", str(int8_repo.repository), str(clash)])
    assert clashed.exit_code != 0
    assert f"model '{int8_repo.name}' is in both" in clashed.output
