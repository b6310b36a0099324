"""perf_analyzer wrapper: spec validation, command line, and parsing of real perf_analyzer 2.50 output.

The files under data/perf_analyzer/ were written by perf_analyzer 2.50 measuring the int8 MiniLM
repository served by tritonserver 2.51 (the profile exports with `response_outputs` removed to keep
them small; timestamps untouched). perf_analyzer.log is its stdout for the same run, used to check
that the requests selected from the export are exactly the ones perf_analyzer measured.
"""

import json
import re
from pathlib import Path

import pytest

from model_repo_builder.errors import InferenceError, SpecError
from model_repo_builder.perf.perf_analyzer import (
    CSV_NAME,
    EXPORT_NAME,
    EmptyWindowError,
    PerfRun,
    UnstableMeasurementError,
    build_command,
    failure_error,
    failure_reason,
    parse_csv_report,
    parse_profile_export,
    read_results,
    write_text_input_data,
)

DATA = Path(__file__).parent / "data" / "perf_analyzer"
CONCURRENCY = DATA / "concurrency_grpc"
REQUEST_RATE = DATA / "request_rate_http"
REQUEST_COUNT = DATA / "request_count_grpc"


def run_spec(**overrides: object) -> PerfRun:
    values: dict[str, object] = {"model": "minilm-int8", "url": "127.0.0.1:8001", "concurrency": 2}
    values.update(overrides)
    return PerfRun(**values)  # type: ignore[arg-type]


def stdout_value(sample: Path, label: str) -> float:
    """A number perf_analyzer printed on its own line `label: <number> ...` for the sample run."""
    text = (sample / "perf_analyzer.log").read_text(encoding="utf-8")
    match = re.search(rf"^\s*{re.escape(label)}: ([\d.]+)", text, re.MULTILINE)
    assert match, f"{label!r} not in the sample log"
    return float(match.group(1))


def export(sample: Path) -> dict:
    return json.loads((sample / EXPORT_NAME).read_text(encoding="utf-8"))


# --- spec --------------------------------------------------------------------------------------


def test_run_needs_exactly_one_load_mode():
    with pytest.raises(SpecError, match="exactly one of `concurrency` and `request_rate`"):
        run_spec(concurrency=None)
    with pytest.raises(SpecError, match="exactly one"):
        run_spec(request_rate=10.0)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": None, "request_rate": -1.0}, "request_rate"),
        ({"protocol": "https"}, "protocol"),
        ({"url": "http://localhost:8000"}, "url"),
        ({"measurement_mode": "windows"}, "measurement_mode"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_trials": 2}, "max_trials"),
        ({"stability_percentage": 0}, "stability_percentage"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"request_count": 0}, "request_count"),
    ],
)
def test_invalid_run_names_the_field(overrides, field):
    with pytest.raises(SpecError, match=f"`{field}`"):
        run_spec(**overrides)


def test_load_and_description():
    assert run_spec(concurrency=8).load == 8.0
    assert run_spec(concurrency=8).describe() == "concurrency 8"
    rate = run_spec(concurrency=None, request_rate=12.5)
    assert rate.load == 12.5
    assert rate.describe() == "request rate 12.5/s"


# --- command line ------------------------------------------------------------------------------


def test_command_for_concurrency_in_count_windows(tmp_path):
    run = run_spec(
        concurrency=4,
        input_data=tmp_path / "texts.json",
        measurement_mode="count_windows",
        measurement_request_count=200,
        stability_percentage=15,
        max_trials=6,
    )
    command = build_command(run, Path("/bin/perf_analyzer"), tmp_path)
    assert command[0] == "/bin/perf_analyzer"
    text = " ".join(command)
    for part in (
        "-m minilm-int8",
        "-u 127.0.0.1:8001",
        "-i grpc",
        "-b 1",
        "--async",
        "--concurrency-range 4",
        "--measurement-mode count_windows",
        "--measurement-request-count 200",
        "--stability-percentage 15",
        "--max-trials 6",
        f"--input-data {tmp_path / 'texts.json'}",
        f"-f {tmp_path / CSV_NAME}",
        f"--profile-export-file {tmp_path / EXPORT_NAME}",
    ):
        assert part in text
    assert "--measurement-interval" not in text
    assert "--request-rate-range" not in text


def test_command_for_request_rate_in_time_windows(tmp_path):
    run = run_spec(
        concurrency=None,
        request_rate=40.0,
        protocol="http",
        asynchronous=False,
        measurement_interval_ms=1500,
    )
    command = build_command(run, Path("pa"), tmp_path)
    text = " ".join(command)
    assert "--request-rate-range 40 " in text
    assert "-i http" in text
    assert "--sync" in command and "--async" not in command
    assert "--measurement-mode time_windows --measurement-interval 1500" in text
    assert "--concurrency-range" not in text
    assert "--input-data" not in text


def test_command_with_a_fixed_request_count_skips_the_windows(tmp_path):
    run = run_spec(request_count=300, measurement_mode="count_windows")
    text = " ".join(build_command(run, Path("pa"), tmp_path))
    assert "--concurrency-range 2 --request-count 300 " in text
    for windowed in ("--measurement-mode", "--measurement-request-count", "--stability-", "--max-trials"):
        assert windowed not in text


# --- CSV report --------------------------------------------------------------------------------


def test_parse_csv_report_concurrency():
    (level,) = parse_csv_report((CONCURRENCY / CSV_NAME).read_text(encoding="utf-8"))
    measured = level.measurement
    assert measured.load == 2
    assert measured.throughput_rps == pytest.approx(142.981)
    assert (measured.p50_ms, measured.p90_ms, measured.p95_ms, measured.p99_ms) == pytest.approx(
        (12.864, 18.156, 19.543, 24.241)
    )
    assert level.breakdown.server_queue_ms == pytest.approx(1.978)
    assert level.breakdown.server_compute_infer_ms == pytest.approx(9.901)
    # The breakdown adds up to perf_analyzer's average latency (13690 us in its stdout).
    assert measured.avg_ms == pytest.approx(level.breakdown.total_ms)
    assert measured.avg_ms == pytest.approx(stdout_value(CONCURRENCY, "Avg latency") / 1000, abs=0.01)


def test_parse_csv_report_request_rate():
    (level,) = parse_csv_report((REQUEST_RATE / CSV_NAME).read_text(encoding="utf-8"))
    assert level.measurement.load == 40
    assert level.measurement.throughput_rps == pytest.approx(39.8628)
    assert level.measurement.p99_ms == pytest.approx(18.876)
    average_ms = stdout_value(REQUEST_RATE, "Avg latency") / 1000
    assert level.measurement.avg_ms == pytest.approx(average_ms, abs=0.01)


def test_parse_csv_report_rejects_empty_and_foreign_reports():
    with pytest.raises(InferenceError, match="no measurement"):
        parse_csv_report("Concurrency,Inferences/Second\n")
    with pytest.raises(InferenceError, match="none of the columns"):
        parse_csv_report("Batch,Inferences/Second\n1,2\n")
    with pytest.raises(InferenceError, match="'Client Send'"):
        parse_csv_report("Concurrency,Inferences/Second\n1,2\n")


# --- profile export ----------------------------------------------------------------------------


@pytest.mark.parametrize("sample", [CONCURRENCY, REQUEST_RATE], ids=["concurrency", "request_rate"])
def test_export_selects_exactly_the_requests_perf_analyzer_measured(sample):
    (level,) = parse_profile_export(export(sample))
    all_requests = len(export(sample)["experiments"][0]["requests"])
    assert len(level.latencies_us) == stdout_value(sample, "Request count")
    assert len(level.latencies_us) < all_requests  # warm-up windows are left out
    assert level.throughput_rps == pytest.approx(stdout_value(sample, "Throughput"), rel=1e-3)
    mean_us = sum(level.latencies_us) / len(level.latencies_us)
    assert mean_us == pytest.approx(stdout_value(sample, "Avg latency"), abs=1.0)


def test_export_percentiles_agree_with_the_report():
    for sample in (CONCURRENCY, REQUEST_RATE):
        result = read_results(run_spec(), sample)
        reported = result.reported
        # perf_analyzer uses nearest rank, we interpolate: the same requests give nearly the same numbers.
        assert result.requests.p50_ms == pytest.approx(reported.p50_ms, rel=0.01)
        assert result.requests.p99_ms == pytest.approx(reported.p99_ms, rel=0.05)
        assert result.measurement.throughput_rps == reported.throughput_rps
        assert result.measurement.p50_ms == result.requests.p50_ms


def test_export_window_selection_uses_response_time():
    start = 1_000_000_000
    experiment = {
        "experiment": {"mode": "concurrency", "value": 1},
        "window_boundaries": [start, start + 10**9, start + 2 * 10**9],
        "requests": [
            {"timestamp": start - 5_000_000, "response_timestamps": [start - 1_000_000]},  # before
            {"timestamp": start - 2_000_000, "response_timestamps": [start + 3_000_000]},  # straddles
            {"timestamp": start + 10**9, "response_timestamps": [start + 10**9 + 7_000_000]},
            {"timestamp": start + 2 * 10**9 - 1, "response_timestamps": [start + 2 * 10**9 + 5]},  # after
            {"timestamp": start + 5, "response_timestamps": []},  # never answered
        ],
    }
    (level,) = parse_profile_export({"experiments": [experiment]})
    assert level.latencies_us == (5_000.0, 7_000.0)
    assert level.window_s == 2.0
    assert level.span_s == (10**9 + 7_000_000 + 2_000_000) / 1e9  # first measured send to last response
    (last_window,) = parse_profile_export({"experiments": [experiment]}, windows=1)
    assert last_window.latencies_us == (7_000.0,)


def test_fixed_count_throughput_comes_from_the_timestamps():
    """perf_analyzer rounds a --request-count run up to whole seconds: 200 requests in 0.6 s read 200/s."""
    run = run_spec(concurrency=4, request_count=200)
    result = read_results(run, REQUEST_COUNT)
    assert result.reported.throughput_rps == pytest.approx(199.711)  # 200 requests / 1.0015 s window
    assert result.requests.count == 200
    # Little's law: 4 requests always in flight, each taking the mean latency.
    assert result.throughput_rps == pytest.approx(4 / (result.requests.mean_ms / 1000), rel=0.1)
    assert result.measurement.throughput_rps == result.throughput_rps > 1.5 * result.reported.throughput_rps
    windowed = read_results(run_spec(), CONCURRENCY)
    assert windowed.throughput_rps == windowed.reported.throughput_rps


def test_export_without_windows_is_an_error():
    with pytest.raises(InferenceError, match="no experiment"):
        parse_profile_export({"experiments": []})
    broken = {"experiments": [{"experiment": {"value": 1}, "window_boundaries": [1], "requests": []}]}
    with pytest.raises(InferenceError, match="no complete measurement window"):
        parse_profile_export(broken)


def test_read_results_reports_missing_files(tmp_path):
    with pytest.raises(InferenceError, match="did not write"):
        read_results(run_spec(), tmp_path)


# --- input data and failures -------------------------------------------------------------------


def test_write_text_input_data_format(tmp_path):
    path = write_text_input_data(tmp_path / "in" / "texts.json", "TEXT", ["first text", "Café «deux»"])
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data == {
        "data": [
            {"TEXT": {"content": ["first text"], "shape": [1]}},
            {"TEXT": {"content": ["Café «deux»"], "shape": [1]}},
        ]
    }


def test_write_text_input_data_adds_fixed_integer_inputs_to_every_request(tmp_path):
    path = write_text_input_data(tmp_path / "t.json", "PROMPT", ["a", "b"], {"MAX_NEW_TOKENS": 32})
    steps = json.loads(path.read_text(encoding="utf-8"))["data"]
    assert steps == [
        {"PROMPT": {"content": [text], "shape": [1]}, "MAX_NEW_TOKENS": {"content": [32], "shape": [1]}}
        for text in ("a", "b")
    ]


def test_write_text_input_data_rejects_empty_texts(tmp_path):
    with pytest.raises(SpecError, match="at least one text"):
        write_text_input_data(tmp_path / "a.json", "TEXT", [])
    with pytest.raises(SpecError, match=r"texts \[1\]"):
        write_text_input_data(tmp_path / "a.json", "TEXT", ["ok", "  "])


def test_failure_reason_drops_usage_text():
    stderr = (
        "Error: Cannot specify more then one inference load mode.\n"
        "Usage: perf_analyzer [options]\n==== SYNOPSIS ====\n\t-m <model name>\n"
    )
    assert failure_reason(stderr) == "Error: Cannot specify more then one inference load mode."


def test_failure_reason_joins_thread_errors_once():
    stderr = (
        "Failed to retrieve results from inference request.\n"
        "Thread [0] had error: TEXT[0] is empty\n\nThread [0] had error: TEXT[0] is empty\n"
    )
    assert failure_reason(stderr) == (
        "Failed to retrieve results from inference request. | Thread [0] had error: TEXT[0] is empty"
    )
    assert failure_reason("", "") == "no output"


def test_failure_error_types_follow_perf_analyzer_exit_and_reason():
    unstable = failure_error(
        run_spec(),
        2,
        "Failed to obtain stable measurement within 10 measurement windows for concurrency 2. "
        "Please try to increase the --measurement-interval.\nFailed to obtain stable measurement.\n",
    )
    assert isinstance(unstable, UnstableMeasurementError)
    assert "minilm-int8 at concurrency 2 (exit 2): Failed to obtain stable measurement" in str(unstable)
    empty = failure_error(
        run_spec(), 3, "No valid requests recorded within time interval. Please use a larger time window.\n"
    )
    assert isinstance(empty, EmptyWindowError)
    unreachable = failure_error(
        run_spec(),
        99,
        "error: failed to get model metadata: HTTP client failed: Couldn't connect to server\n",
    )
    assert type(unreachable) is InferenceError
    assert str(unreachable).endswith(
        "failed to get model metadata: HTTP client failed: Couldn't connect to server"
    )
