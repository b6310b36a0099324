"""`trb sweep` against the real tritonserver with the real perf_analyzer, kept short."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from model_repo_builder.cli import main
from model_repo_builder.errors import InferenceError, SpecError
from model_repo_builder.perf import profiles
from model_repo_builder.perf.sweep import Sweeper, SweepError, run_sweep, serve
from model_repo_builder.repository.variants import Scheduling, make_variant
from model_repo_builder.spec import SweepSpec

pytestmark = pytest.mark.integration


def test_sweep_measures_analyses_and_reports(int8_repo, tmp_path: Path) -> None:
    folder = tmp_path / "run"
    result = CliRunner().invoke(
        main,
        [
            "sweep",
            str(int8_repo.repository),
            "--concurrency",
            "1,4",
            "--interval-ms",
            "400",
            "--slo",
            "p99=5000ms",
            "--target-qps",
            "500",
            "--cost-per-hour",
            "1.0",
            "--profile",
            "ramp",
            "--profile-duration",
            "6",
            "--output",
            str(folder),
        ],
    )
    assert result.exit_code == 0, result.output
    results = json.loads((folder / "results.json").read_text())
    (config,) = results["configs"]
    assert [level["load"] for level in config["levels"]] == [1.0, 4.0]
    for level in config["levels"]:
        latencies = np.array(level["latencies_ms"])
        assert level["requests"] == len(latencies) > 0
        # Percentiles come from the per-request data, and agree with perf_analyzer's own figures.
        assert level["p99_ms"] == pytest.approx(np.percentile(latencies, 99), rel=1e-3, abs=0.01)
        assert level["p50_ms"] == pytest.approx(level["reported"]["p50_ms"], rel=0.15, abs=1.0)
        assert level["throughput_rps"] > 0
        # The model has trb's admission queue: Triton sees a request that goes through it only while
        # execute() admits it; the sweep counts trb's queue and worker time as the server's.
        assert level["breakdown_includes"] == "trb admission queue and worker"
    # 4 clients: requests are answered in place (in Triton's durations) or by trb's worker (in trb's,
    # added by the sweep); either way the server's share is counted, not booked as network time.
    busy = config["levels"][-1]["breakdown"]
    assert busy["server_queue_ms"] + busy["server_compute_infer_ms"] > 0.3 * config["levels"][-1]["avg_ms"]
    capacity = config["capacity"]
    assert capacity["met"] and capacity["throughput_rps"] == max(
        lv["throughput_rps"] for lv in config["levels"]
    )
    assert results["plan"]["replicas"] == int(np.ceil(500 / (capacity["throughput_rps"] * 0.8) - 1e-9))
    assert results["cost_per_million_usd"] == pytest.approx(1.0 / (capacity["throughput_rps"] * 3600) * 1e6)
    assert results["summary"].startswith("One replica sustains")
    ramp = results["profiles"][0]
    assert [step["load"] for step in ramp["steps"]][:2] == [1.0, 2.0] and all(
        s["throughput_rps"] > 0 for s in ramp["steps"]
    )
    page = (folder / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 4 and results["summary"] in page
    assert "report.html" in result.output


def test_search_measures_fewer_configs_than_the_grid(int8_repo, tmp_path: Path) -> None:
    common = dict(
        repository=int8_repo.repository,
        concurrency=(2, 8),
        measurement_interval_ms=300,
        slo="p99=2000ms",
        search=True,
        search_instances=(1, 2),
        search_max_batch_sizes=(4, 16),
        search_queue_delays_us=(0, 2000),
    )
    grid = run_sweep(SweepSpec(**common, search_strategy="grid", output=tmp_path / "grid")).results
    descent = run_sweep(SweepSpec(**common, output=tmp_path / "descent")).results
    assert grid["search"]["configurations_measured"] == grid["search"]["grid_size"] == 8
    assert descent["search"]["configurations_measured"] <= 7
    assert descent["search"]["perf_analyzer_runs"] < grid["search"]["perf_analyzer_runs"]

    # How close descent comes to the grid's best is a benchmark figure on 2 shared cores, not a test
    # (the search logic alone is tested on a fixed landscape in tests/unit/test_sweep_parts.py).
    measured = {c["name"]: c for c in descent["configs"]}
    assert measured[descent["best_config"]]["capacity"]["met"]


def test_stress_shows_the_bounded_queue_shedding_load(int8_repo, tmp_path: Path) -> None:
    variant = make_variant(
        int8_repo.repository,
        tmp_path / "small-queue",
        Scheduling(instances=1, max_batch_size=4, max_queue_delay_us=0, max_queue_size=2),
    )
    spec = SweepSpec(repository=variant)
    sweeper = Sweeper(spec, tmp_path / "run")
    with serve(spec, variant) as target:
        outcome = profiles.stress(sweeper, target, users=24, duration_s=4)
    assert outcome["rejected"] > 0 and outcome["ok"] > 0 and outcome["errors"] == 0
    assert outcome["verdict"].startswith("sheds load")
    # Shedding means failing fast: a full queue answers 503 at once instead of holding the request.
    assert outcome["rejected_p50_ms"] < 100


def test_unreachable_server_is_a_clear_error_and_keeps_the_run(tmp_path: Path, free_ports) -> None:
    (port,) = free_ports(1)
    with pytest.raises(InferenceError, match=f"127.0.0.1:{port}"):
        run_sweep(SweepSpec(url=f"127.0.0.1:{port}", model="nothing", output=tmp_path))
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["errors"] and results["configs"] == []


def test_max_new_tokens_on_an_embedding_model_is_a_clear_error(int8_repo, tmp_path: Path) -> None:
    spec = SweepSpec(repository=int8_repo.repository, concurrency=(1,), max_new_tokens=8, output=tmp_path)
    with pytest.raises(SpecError, match="`--max-new-tokens` applies to text-generation models"):
        run_sweep(spec)


def test_unmet_slo_exits_non_zero_with_partial_results(int8_repo, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        [
            "sweep",
            str(int8_repo.repository),
            "--concurrency",
            "1",
            "--interval-ms",
            "300",
            "--slo",
            "p99=0.001ms",
            "--output",
            str(tmp_path),
        ],
    )
    assert result.exit_code == SweepError.exit_code
    assert "No configuration met p99" in result.output
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["configs"][0]["levels"][0]["throughput_rps"] > 0


def test_compare_cli_exit_codes(tmp_path: Path) -> None:
    def run(capacity: float) -> Path:
        folder = tmp_path / str(capacity)
        folder.mkdir()
        level = {"mode": "concurrency", "load": 4.0, "throughput_rps": capacity, "p50_ms": 5.0, "p99_ms": 9.0}
        (folder / "results.json").write_text(
            json.dumps(
                {
                    "configs": [
                        {
                            "name": "a",
                            "levels": [level],
                            "knee": {"throughput_rps": capacity},
                            "capacity": {"met": True, "throughput_rps": capacity, "load": 4.0},
                        }
                    ],
                    "best_config": "a",
                }
            )
        )
        return folder

    same = CliRunner().invoke(main, ["sweep", "--compare", str(run(100.0)), str(run(98.0))])
    assert same.exit_code == 0, same.output
    worse = CliRunner().invoke(main, ["sweep", "--compare", str(run(100.0 + 1e-9)), str(run(70.0))])
    assert worse.exit_code == 1 and "regressed" in worse.output
