"""Multi-model sweep pieces that need no server: overlap, figures, ratios, results, report, spec, CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from model_repo_builder.cli import main
from model_repo_builder.errors import RepositoryError, SpecError
from model_repo_builder.perf.analysis import percentile
from model_repo_builder.perf.cache import CacheCounts, cache_enabled, parse_statistics
from model_repo_builder.perf.compare import load_results
from model_repo_builder.perf.multi_model import (
    MIN_OVERLAP,
    WINDOWS,
    MeasuredModel,
    ModelLevel,
    MultiModelResults,
    SharedLevel,
    Span,
    model_level,
    overlap,
    sharing_cost,
    summary_sentence,
)
from model_repo_builder.perf.perf_analyzer import completed_between, measured_span
from model_repo_builder.perf.report import sharing_columns, sharing_rows, write_models_report
from model_repo_builder.spec import MultiModelSweepSpec

RECORDED = Path(__file__).parent / "data" / "perf_analyzer" / "shared_concurrency_grpc"


def _experiment(name: str) -> dict:
    return json.loads((RECORDED / name / "profile_export.json").read_text())["experiments"][0]


def _span(experiment: dict) -> Span:
    start, end = measured_span(experiment, WINDOWS)
    return Span(start_ns=start, end_ns=end)


def test_two_recorded_concurrent_runs_overlap_and_give_figures_from_the_common_span() -> None:
    runs = {name: _experiment(name) for name in ("minilm-int8", "bert-cls")}
    spans = {name: _span(experiment) for name, experiment in runs.items()}
    common = overlap(spans)
    assert common.start_ns == max(s.start_ns for s in spans.values())
    assert common.end_ns == min(s.end_ns for s in spans.values())
    assert common.overlapped and min(common.fractions.values()) >= MIN_OVERLAP
    for name, experiment in runs.items():
        assert common.fractions[name] == pytest.approx(common.common_s / spans[name].seconds, abs=1e-4)
        completed = completed_between(experiment, common.start_ns, common.end_ns)
        level = model_level(completed, common.common_s)
        latencies_ms = [(done - sent) / 1e6 for sent, done in completed]
        assert level.requests == len(completed) > 0
        assert level.throughput_rps == pytest.approx(len(completed) / common.common_s)
        assert level.p99_ms == pytest.approx(percentile(latencies_ms, 99))
        assert level.p50_ms == pytest.approx(np.percentile(latencies_ms, 50))


def test_the_recorded_shared_run_costs_the_embedding_model_throughput_and_latency() -> None:
    solo_run, shared_run = _experiment("solo-minilm-int8"), _experiment("minilm-int8")
    solo_span = _span(solo_run)
    solo = model_level(completed_between(solo_run, solo_span.start_ns, solo_span.end_ns), solo_span.seconds)
    span = _span(shared_run)
    shared = model_level(completed_between(shared_run, span.start_ns, span.end_ns), span.seconds)
    cost = sharing_cost("minilm-int8", solo, shared)
    assert cost.throughput_ratio == pytest.approx(shared.throughput_rps / solo.throughput_rps, abs=1e-4)
    assert cost.p99_ratio == pytest.approx(shared.p99_ms / solo.p99_ms, abs=1e-4)
    # What this recording shows: driven beside the classifier, the embedding model lost throughput.
    assert cost.throughput_ratio < 1


def test_overlap_of_shifted_and_of_disjoint_windows() -> None:
    half = overlap({"a": Span(start_ns=0, end_ns=10**9), "b": Span(start_ns=5 * 10**8, end_ns=15 * 10**8)})
    assert (half.start_ns, half.end_ns, half.common_s) == (5 * 10**8, 10**9, 0.5)
    assert half.fractions == {"a": 0.5, "b": 0.5} and not half.overlapped
    mostly = overlap({"a": Span(start_ns=0, end_ns=10**9), "b": Span(start_ns=10**8, end_ns=11 * 10**8)})
    assert mostly.fractions == {"a": 0.9, "b": 0.9} and mostly.overlapped
    apart = overlap({"a": Span(start_ns=0, end_ns=10), "b": Span(start_ns=20, end_ns=30)})
    assert apart.common_s == 0 and apart.fractions == {"a": 0.0, "b": 0.0} and not apart.overlapped


def test_model_level_without_requests_and_with_tokens_and_cache() -> None:
    empty = model_level([], 1.5)
    assert (empty.throughput_rps, empty.p50_ms, empty.p99_ms, empty.requests) == (0.0, None, None, 0)
    level = model_level([(0, 2_000_000), (0, 4_000_000)], 0.5, 10.0, CacheCounts(hits=3, misses=1))
    assert level.throughput_rps == 4.0 and level.tokens_per_s == 40.0
    assert (level.p50_ms, level.cache_hits, level.cache_misses) == (3.0, 3, 1)


def _level(rps: float, p50: float, p99: float, **extra: object) -> ModelLevel:
    return ModelLevel(throughput_rps=rps, p50_ms=p50, p99_ms=p99, requests=10, window_s=1.0, **extra)  # type: ignore[arg-type]


def test_sharing_ratios_are_shared_over_solo_and_absent_without_a_figure() -> None:
    cost = sharing_cost("a", _level(100, 10, 20), _level(60, 15, 50))
    assert (cost.throughput_ratio, cost.p50_ratio, cost.p99_ratio) == (0.6, 1.5, 2.5)
    missing = sharing_cost("a", _level(100, 10, 20), None)
    assert (missing.throughput_ratio, missing.p50_ratio, missing.p99_ratio) == (None, None, None)
    nothing_alone = sharing_cost(
        "a",
        ModelLevel(throughput_rps=0.0, p50_ms=None, p99_ms=None, requests=0, window_s=1.0),
        _level(5, 1, 1),
    )
    assert nothing_alone.throughput_ratio is None and nothing_alone.p99_ratio is None


def _results(overlapped: bool = True, cache: bool = False) -> MultiModelResults:
    fractions = {"a": 0.97, "b": 0.95} if overlapped else {"a": 0.4, "b": 0.5}
    common = overlap({"a": Span(start_ns=0, end_ns=100), "b": Span(start_ns=0, end_ns=100)})
    common = type(common)(start_ns=0, end_ns=100, common_s=1.0, fractions=fractions, overlapped=overlapped)
    counts = {"cache_hits": 7, "cache_misses": 1} if cache else {}
    levels = tuple(
        SharedLevel(
            mode="concurrency",
            load=load,
            costs=(
                sharing_cost("a", _level(100 * load, 10, 20, **counts), _level(60 * load, 15, 50, **counts)),
                sharing_cost("b", _level(200 * load, 5, 8), _level(100 * load, 6, 16)),
            ),
            overlap=common,
        )
        for load in (1.0, 4.0)
    )
    models = (
        MeasuredModel(
            name="a",
            task="feature-extraction",
            repository="r/a",
            response_cache=cache,
            tokens_per_request=None,
        ),
        MeasuredModel(
            name="b",
            task="text-classification",
            repository="r/b",
            response_cache=False,
            tokens_per_request=None,
        ),
    )
    return MultiModelResults(
        models=models, windows=3, measurement_interval_ms=500, min_overlap=MIN_OVERLAP, levels=levels
    )


def test_summary_names_each_models_cost_at_the_highest_level_and_the_overlap() -> None:
    text = summary_sentence(_results())
    assert text.startswith(
        "Driven together at concurrency 4 each: a keeps 60% of its solo throughput, p99 ×2.50"
    )
    assert "b keeps 50% of its solo throughput, p99 ×2.00" in text
    assert "overlapped for 95% of each model's time" in text
    assert "overlapped only 40%" in summary_sentence(_results(overlapped=False))
    failed = MultiModelResults(
        models=(),
        windows=3,
        measurement_interval_ms=500,
        min_overlap=MIN_OVERLAP,
        levels=(
            SharedLevel(mode="concurrency", load=1.0, costs=(), overlap=None, error="perf_analyzer failed"),
        ),
    )
    assert summary_sentence(failed) == "No level was measured with the models together: perf_analyzer failed."


def test_results_serialise_and_the_report_has_one_row_per_model_and_level(tmp_path: Path) -> None:
    section = _results().to_dict()
    assert json.loads(json.dumps(section)) == section  # plain data
    results = {"model": "a+b", "summary": "s", "models": section, "errors": []}
    rows = list(sharing_rows(results))
    assert [(row["model"], row["load"]) for row in rows] == [("a", 1.0), ("b", 1.0), ("a", 4.0), ("b", 4.0)]
    assert rows[2]["solo_rps"] == 400 and rows[2]["shared_rps"] == 240 and rows[2]["throughput_ratio"] == 0.6
    assert rows[3]["overlap"] == 0.95
    assert "solo_cache_hits" not in sharing_columns(results)
    write_models_report(results, tmp_path)
    with (tmp_path / "levels.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 4 and table[0]["model"] == "a" and float(table[0]["p99_ratio"]) == 2.5
    page = (tmp_path / "report.html").read_text()
    assert "Solo and shared" in page and "data:image/png;base64," in page
    assert json.loads((tmp_path / "results.json").read_text())["models"] == section


def test_cache_columns_appear_for_a_model_with_the_response_cache() -> None:
    results = {"models": _results(cache=True).to_dict()}
    assert sharing_columns(results)[-4:] == (
        "solo_cache_hits",
        "solo_cache_misses",
        "shared_cache_hits",
        "shared_cache_misses",
    )
    first = next(sharing_rows(results))
    assert (first["solo_cache_hits"], first["shared_cache_misses"]) == (7, 1)


def test_compare_refuses_multi_model_results(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text(json.dumps({"model": "a+b", "models": _results().to_dict()}))
    with pytest.raises(RepositoryError, match="multi-model sweep"):
        load_results(tmp_path)


def test_cache_counts_from_both_clients_statistics_forms() -> None:
    http = {
        "model_stats": [
            {
                "name": "m",
                "version": "1",
                "inference_stats": {"cache_hit": {"count": 5}, "cache_miss": {"count": 2}},
            },
            {"name": "other", "version": "1", "inference_stats": {"cache_hit": {"count": 99}}},
        ]
    }
    assert parse_statistics(http, "m") == CacheCounts(hits=5, misses=2)
    grpc = {"model_stats": [{"name": "m", "version": "1", "inference_stats": {"cache_hit": {"count": "12"}}}]}
    assert parse_statistics(grpc, "m") == CacheCounts(hits=12, misses=0)
    assert CacheCounts(hits=12, misses=3).since(CacheCounts(hits=5, misses=2)) == CacheCounts(
        hits=7, misses=1
    )
    assert cache_enabled({"response_cache": {"enable": True}}) and not cache_enabled({"name": "m"})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"url": "127.0.0.1:8001", "models": ("a",)}, "at least two models"),
        ({"url": "127.0.0.1:8001", "models": ("a", "b", "a")}, "names a more than once"),
        ({"url": "127.0.0.1:8001"}, "`--models` is required with `--url`"),
        ({"repositories": (Path("r1"),)}, "`--models a,b` or at least two repositories"),
        ({"repositories": (Path("r1"), Path("r2")), "url": "h:1"}, "not both"),
        ({"url": "h:1", "models": ("a", "")}, "empty name"),
        ({"url": "h:1", "models": ("a", "b"), "concurrency": (0,)}, "`--concurrency` must be an integer ≥ 1"),
        ({"url": "h:1", "models": ("a", "b"), "protocol": "udp"}, "`--protocol`"),
    ],
)
def test_multi_model_spec_refuses_bad_input(fields: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        MultiModelSweepSpec(**fields)


def test_cli_refuses_one_model_and_one_model_options_with_models() -> None:
    one = CliRunner().invoke(main, ["sweep", "--url", "127.0.0.1:1", "--models", "a"])
    assert one.exit_code != 0 and "`--models` needs at least two models" in one.output
    slo = CliRunner().invoke(main, ["sweep", "--url", "127.0.0.1:1", "--models", "a,b", "--slo", "p99=1s"])
    assert slo.exit_code != 0 and "`--slo` applies to a one-model sweep" in slo.output
    model = CliRunner().invoke(main, ["sweep", "r1", "r2", "--model", "a"])
    assert model.exit_code != 0 and "`--model` applies to a one-model sweep" in model.output
