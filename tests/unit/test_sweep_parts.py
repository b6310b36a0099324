"""Sweep pieces that need no server: spec validation, prompts, metrics parsing, report, comparison."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from model_repo_builder.errors import RepositoryError, SpecError
from model_repo_builder.perf.compare import compare, headline_metrics
from model_repo_builder.perf.metrics import parse_prometheus
from model_repo_builder.perf.report import write_report
from model_repo_builder.perf.sweep import Sweeper, load_prompts, search
from model_repo_builder.repository.variants import Scheduling
from model_repo_builder.spec import SweepSpec


def _level(load: float, rps: float, p99: float) -> dict:
    return {
        "mode": "concurrency",
        "load": load,
        "throughput_rps": rps,
        "p50_ms": p99 / 2,
        "p90_ms": p99 * 0.8,
        "p95_ms": p99 * 0.9,
        "p99_ms": p99,
        "avg_ms": p99 / 2,
        "errors": 0,
        "breakdown": {"server_queue_ms": 1.0, "server_compute_infer_ms": p99 / 3},
        "latencies_ms": [p99 / 2, p99],
    }


def _results(capacity: float, p99: float) -> dict:
    levels = [_level(1, capacity / 3, p99 / 4), _level(4, capacity, p99), _level(8, capacity * 1.05, p99 * 5)]
    return {
        "model": "m",
        "configs": [
            {
                "name": "as-built",
                "settings": {},
                "levels": levels,
                "knee": {"found": True, "throughput_rps": capacity, "p99_ms": p99, "load": 4},
                "capacity": {"met": True, "throughput_rps": capacity, "load": 4},
            }
        ],
        "best_config": "as-built",
        "summary": "One replica sustains …",
        "slo": {"percentile": 99, "latency_ms": 100},
        "histogram": {"config": "as-built", "load": 4, "latencies_ms": [1.0, 2.0, 2.5, 9.0]},
        "profiles": [
            {
                "name": "ramp",
                "kind": "ramp",
                "verdict": "ok",
                "steps": [
                    {"start_s": 0, "load": 1, "throughput_rps": 5, "p50_ms": 1, "p99_ms": 2},
                    {"start_s": 3, "load": 4, "throughput_rps": 9, "p50_ms": 2, "p99_ms": 4},
                ],
            }
        ],
    }


def test_sweep_spec_needs_exactly_one_target() -> None:
    with pytest.raises(SpecError, match="repository to launch, or `--url`"):
        SweepSpec()
    with pytest.raises(SpecError, match="`--model` is required"):
        SweepSpec(url="127.0.0.1:8001")
    with pytest.raises(SpecError, match="`--search` needs a repository"):
        SweepSpec(url="127.0.0.1:8001", model="m", search=True)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("concurrency", (0,), "`--concurrency`"),
        ("request_rates", (-1.0,), "`--request-rate`"),
        ("profiles", ("spike",), "`--profile`"),
        ("headroom", 1.0, "`--headroom`"),
        ("budget_s", 0.0, "`--budget`"),
        ("measurement_interval_ms", 10, "`--interval-ms`"),
        ("target_qps", 0.0, "`--target-qps`"),
        ("max_new_tokens", 0, "`--max-new-tokens`"),
    ],
)
def test_sweep_spec_names_the_bad_option(field: str, value: object, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        SweepSpec(repository=Path("repos/x"), **{field: value})  # type: ignore[arg-type]


def test_prompts_file(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("first prompt\n\n  second prompt  \n", encoding="utf-8")
    assert load_prompts(prompts) == ["first prompt", "second prompt"]
    prompts.write_text("\n \n", encoding="utf-8")
    with pytest.raises(SpecError, match="no non-empty line"):
        load_prompts(prompts)
    prompts.write_bytes(b"\xff\xfe bad")
    with pytest.raises(SpecError, match="UTF-8"):
        load_prompts(prompts)
    assert len(load_prompts(None)) >= 8


def test_prometheus_sums_label_sets() -> None:
    text = "\n".join(
        [
            "# HELP nv_inference_request_success Number of successful inference requests",
            'nv_inference_request_success{model="a",version="1"} 10',
            'nv_inference_request_success{model="b",version="1"} 5',
            'nv_inference_queue_duration_us{model="a",version="1"} 1234.5',
            "nv_cpu_utilization 0.25",
            'nv_untracked_metric{model="a"} 99',
        ]
    )
    assert parse_prometheus(text) == {
        "nv_inference_request_success": 15.0,
        "nv_inference_queue_duration_us": 1234.5,
        "nv_cpu_utilization": 0.25,
    }


def test_report_holds_plots_tables_and_json(tmp_path: Path) -> None:
    results = _results(capacity=120.0, p99=40.0)
    html_path = write_report(results, tmp_path)
    page = html_path.read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 4  # curves, breakdown, histogram, one profile
    assert "One replica sustains" in page
    for png in (
        "latency_vs_throughput.png",
        "latency_breakdown.png",
        "response_times.png",
        "profile_0_ramp.png",
    ):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "results.json").read_text())["best_config"] == "as-built"
    rows = (tmp_path / "levels.csv").read_text().splitlines()
    assert rows[0].startswith("config,mode,load,throughput_rps") and len(rows) == 4


def test_a_generation_sweep_adds_a_tokens_column_after_requests(tmp_path: Path) -> None:
    results = _results(capacity=120.0, p99=40.0)
    results["generation"] = {"max_new_tokens": 32, "tokens_per_request": 30.0, "prompts": 8}
    for level in results["configs"][0]["levels"]:
        level["tokens_per_s"] = level["throughput_rps"] * 30.0
    write_report(results, tmp_path)
    reader = csv.DictReader((tmp_path / "levels.csv").read_text().splitlines())
    table = list(reader)
    assert list(reader.fieldnames or [])[:5] == ["config", "mode", "load", "throughput_rps", "tokens_per_s"]
    assert table and all(float(row["tokens_per_s"]) == float(row["throughput_rps"]) * 30 for row in table)
    assert "<th>tokens_per_s</th>" in (tmp_path / "report.html").read_text(encoding="utf-8")


def test_compare_flags_a_capacity_drop(tmp_path: Path) -> None:
    write_report(_results(capacity=100.0, p99=40.0), tmp_path / "a")
    write_report(_results(capacity=85.0, p99=40.0), tmp_path / "b")
    write_report(_results(capacity=97.0, p99=41.0), tmp_path / "c")
    assert (
        headline_metrics(json.loads((tmp_path / "a" / "results.json").read_text()))["capacity_rps"] == 100.0
    )
    dropped = compare(tmp_path / "a", tmp_path / "b", threshold_pct=10)
    assert dropped.regressed
    assert {row.metric for row in dropped.rows if row.regressed} == {
        "capacity_rps",
        "knee_rps",
        "max_throughput_rps",
    }
    assert not compare(tmp_path / "a", tmp_path / "c", threshold_pct=10).regressed


def test_compare_rejects_a_non_results_file(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text("{}", encoding="utf-8")
    with pytest.raises(RepositoryError, match="not a trb sweep results.json"):
        compare(tmp_path, tmp_path, 10)


def test_ports_are_distinct_and_a_taken_preferred_port_is_replaced() -> None:
    import socket

    from model_repo_builder.runtime.ports import free_ports, preferred_or_free_ports

    ports = free_ports(3)
    assert len(set(ports)) == 3
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        replaced = preferred_or_free_ports((busy, ports[0]))
        assert busy not in replaced and len(set(replaced)) == 2


def test_a_config_with_no_successful_level_has_an_unmet_capacity(tmp_path: Path) -> None:
    sweeper = Sweeper(SweepSpec(repository=Path("repos/x"), slo="p99=100ms"), tmp_path)
    failed = {"mode": "concurrency", "load": 2.0, "error": "perf_analyzer failed", "throughput_rps": 0.0}
    entry = sweeper.analyse("i1-b16-d0", {}, [failed])
    assert entry["capacity"]["met"] is False and entry["capacity"]["throughput_rps"] == 0.0
    assert entry["knee"] is None


class _Landscape(Sweeper):
    """A sweeper whose configurations have fixed capacities: the search logic alone, without noise."""

    def __init__(self, capacities: dict[tuple[int, int, int], float], strategy: str, folder: Path):
        spec = SweepSpec(
            repository=Path("repos/x"),
            slo="p99=100ms",
            search=True,
            search_strategy=strategy,
            search_instances=(1, 2),
            search_max_batch_sizes=(4, 16),
            search_queue_delays_us=(0, 2000),
        )
        super().__init__(spec, folder)
        self.capacities = capacities

    def measure_config(self, repository: Path | None, scheduling: Scheduling | None) -> dict[str, Any]:
        assert scheduling is not None
        self.measurements += 2  # what two perf_analyzer levels would count
        key = (scheduling.instances, scheduling.max_batch_size, scheduling.max_queue_delay_us)
        capacity = self.capacities[key]
        return {"name": scheduling.name, "capacity": {"met": capacity > 0, "throughput_rps": capacity}}


# More instances help most, a larger batch helps, a queue delay helps a little; one config is unmet.
LANDSCAPE = {
    (instances, batch, delay): 100.0 * instances + (40.0 if batch == 16 else 0.0) + (10.0 if delay else 0.0)
    for instances in (1, 2)
    for batch in (4, 16)
    for delay in (0, 2000)
}
LANDSCAPE[(1, 4, 2000)] = 0.0


@pytest.mark.parametrize("strategy", ["coordinate", "grid"])
def test_search_finds_the_best_configuration_of_a_smooth_space(strategy: str, tmp_path: Path) -> None:
    sweeper = _Landscape(LANDSCAPE, strategy, tmp_path)
    configs, summary = search(sweeper, Path("repos/x"))
    best = max(configs, key=lambda c: c["capacity"]["throughput_rps"])
    assert best["name"] == Scheduling(instances=2, max_batch_size=16, max_queue_delay_us=2000).name
    assert summary["grid_size"] == 8
    if strategy == "grid":
        assert summary["configurations_measured"] == 8
    else:
        # The start, the other value of each axis (3), then the second pass's two new neighbours.
        assert summary["configurations_measured"] == 6
        assert summary["perf_analyzer_runs"] == 2 * summary["configurations_measured"]


def test_trb_admission_time_moves_from_network_into_the_servers_queue_and_compute(tmp_path: Path) -> None:
    import http.server
    import threading

    from model_repo_builder.perf.metrics import AdmissionTimes, admission_times

    scrape = "\n".join(
        [
            "# HELP trb_queue_duration_us time in trb's queue",
            'trb_queue_duration_us{instance="m_0_0",model="m"} 3000',
            'trb_queue_duration_us{instance="m_0_1",model="m"} 1000',
            'trb_compute_duration_us{instance="m_0_0",model="m"} 8000',
            'trb_answered_requests{instance="m_0_0",model="m"} 3',
            'trb_answered_requests{instance="m_0_1",model="m"} 1',
            'trb_queue_duration_us{instance="other_0_0",model="other"} 99999',
            'nv_inference_queue_duration_us{model="m",version="1"} 5',
        ]
    ).encode()

    class Metrics(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the handler's API)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(scrape)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        assert admission_times(url, "m") == AdmissionTimes(queue_us=4000, compute_us=8000, answered=4)
        assert admission_times(url, "not-an-admission-model") is None
    finally:
        server.shutdown()
        server.server_close()

    spent = AdmissionTimes(queue_us=4000, compute_us=8000, answered=4).since(
        AdmissionTimes(queue_us=0, compute_us=0, answered=0)
    )
    breakdown = {
        "client_send_ms": 0.1,
        "network_ms": 4.5,
        "server_queue_ms": 0.2,
        "server_compute_input_ms": 0.0,
        "server_compute_infer_ms": 0.1,
        "server_compute_output_ms": 0.0,
        "client_recv_ms": 0.1,
    }
    moved = spent.added_to(breakdown)
    assert moved["server_queue_ms"] == pytest.approx(0.2 + 1.0)  # 4000 us over 4 requests
    assert moved["server_compute_infer_ms"] == pytest.approx(0.1 + 2.0)
    assert moved["network_ms"] == pytest.approx(4.5 - 3.0)
    assert sum(moved.values()) == pytest.approx(sum(breakdown.values()))  # the client's total is kept
    short = spent.added_to({**breakdown, "network_ms": 1.5})  # counters a reporter tick behind: capped
    assert short["network_ms"] == 0.0 and sum(short.values()) == pytest.approx(sum(breakdown.values()) - 3.0)
    assert AdmissionTimes().added_to(breakdown) == breakdown
