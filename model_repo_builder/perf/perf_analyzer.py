"""Run the real perf_analyzer against a served model and read back what it measured.

One `PerfRun` is one load level: a fixed concurrency or a fixed request rate. perf_analyzer writes
two files that are parsed here: its CSV report (throughput, client latency percentiles and the
server's queue / compute breakdown) and its profile export (send and receive timestamps of every
request), from which the exact latency distribution of the requests it measured is computed.

perf_analyzer measures in windows and, once the last three agree within the stability percentage,
reports those three merged. Its percentiles are nearest-rank; the ones computed here interpolate
(`analysis.percentile`) over the same requests: those whose response arrived inside the last
three windows, which is how perf_analyzer selects them. A `request_count` run is one window with
no stability check, whose length perf_analyzer rounds up to whole seconds; its throughput is
therefore computed from the requests' own timestamps.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_repo_builder.errors import InferenceError, SpecError, ToolNotFoundError
from model_repo_builder.perf.analysis import LatencySummary, Measurement, latency_summary
from model_repo_builder.runtime.tools import find_perf_analyzer

LOGGER = logging.getLogger(__name__)

PROTOCOLS = ("grpc", "http")
MEASUREMENT_MODES = ("time_windows", "count_windows")
CSV_NAME = "perf_analyzer.csv"
EXPORT_NAME = "profile_export.json"
# perf_analyzer's fixed stability window: it reports the last three measurement windows merged.
STABILITY_WINDOWS = 3
# perf_analyzer's exit status when no three consecutive windows agreed (pa::STABILITY_ERROR).
_EXIT_UNSTABLE = 2
# What perf_analyzer says when a window ended before any request completed in it.
_EMPTY_WINDOW = "No valid requests recorded within time interval"
_LOAD_COLUMNS = ("Concurrency", "Request Rate")
_BREAKDOWN_COLUMNS = {
    "client_send_ms": "Client Send",
    "network_ms": "Network+Server Send/Recv",
    "server_queue_ms": "Server Queue",
    "server_compute_input_ms": "Server Compute Input",
    "server_compute_infer_ms": "Server Compute Infer",
    "server_compute_output_ms": "Server Compute Output",
    "client_recv_ms": "Client Recv",
}
_MAX_REASON_LINES = 6


class UnstableMeasurementError(InferenceError):
    """perf_analyzer ran, but its measurement windows never agreed within the stability percentage."""


class EmptyWindowError(InferenceError):
    """perf_analyzer ran, but not one request completed inside a measurement window."""


@dataclass(frozen=True, kw_only=True)
class PerfRun:
    """One perf_analyzer measurement of one model at one load level.

    Attributes:
        model: Name of the served model.
        url: host:port of the server's endpoint for `protocol`.
        protocol: "grpc" or "http".
        concurrency: Requests kept in flight; give this or `request_rate`, not both.
        request_rate: Requests sent per second; give this or `concurrency`, not both.
        input_data: perf_analyzer --input-data JSON file (see `write_text_input_data`); None lets
            perf_analyzer send random data.
        batch_size: Batch size of each request.
        asynchronous: Use the asynchronous client API (fewer client threads for the same load).
        measurement_mode: "time_windows" (windows of `measurement_interval_ms`) or
            "count_windows" (windows of at least `measurement_request_count` requests).
        measurement_interval_ms: Window length in time_windows mode.
        measurement_request_count: Minimum requests per window in count_windows mode.
        request_count: Send exactly this many requests and measure them all as one window,
            without waiting for stability (overrides the window settings). Gives a result
            on a busy machine where windows never agree.
        stability_percentage: How far apart (max / min, in %) three windows' throughput and
            latency may be for the measurement to count as stable.
        max_trials: Windows perf_analyzer tries before giving up on stability.
        timeout_s: Wall-clock limit for the perf_analyzer process.
    """

    model: str
    url: str
    protocol: str = "grpc"
    concurrency: int | None = None
    request_rate: float | None = None
    input_data: Path | None = None
    batch_size: int = 1
    asynchronous: bool = True
    measurement_mode: str = "time_windows"
    measurement_interval_ms: int = 5000
    measurement_request_count: int = 50
    request_count: int | None = None
    stability_percentage: float = 10.0
    max_trials: int = 10
    timeout_s: float = 300.0

    def __post_init__(self) -> None:
        if not self.model:
            raise SpecError("`model` must name the served model")
        if not self.url or "://" in self.url:
            raise SpecError(f"`url` must be host:port, without a scheme; got {self.url!r}")
        if self.protocol not in PROTOCOLS:
            raise SpecError(f"`protocol` must be one of {', '.join(PROTOCOLS)}; got {self.protocol!r}")
        if (self.concurrency is None) == (self.request_rate is None):
            raise SpecError("give exactly one of `concurrency` and `request_rate`")
        if self.concurrency is not None:
            _require_int_at_least("concurrency", self.concurrency, 1)
        if self.request_rate is not None and not (math.isfinite(self.request_rate) and self.request_rate > 0):
            raise SpecError(
                f"`request_rate` must be a positive number of requests/s, got {self.request_rate!r}"
            )
        if self.measurement_mode not in MEASUREMENT_MODES:
            raise SpecError(
                f"`measurement_mode` must be one of {', '.join(MEASUREMENT_MODES)}; "
                f"got {self.measurement_mode!r}"
            )
        _require_int_at_least("batch_size", self.batch_size, 1)
        _require_int_at_least("measurement_interval_ms", self.measurement_interval_ms, 1)
        _require_int_at_least("measurement_request_count", self.measurement_request_count, 1)
        if self.request_count is not None:
            _require_int_at_least("request_count", self.request_count, 1)
        _require_int_at_least("max_trials", self.max_trials, STABILITY_WINDOWS)
        if not (math.isfinite(self.stability_percentage) and self.stability_percentage > 0):
            raise SpecError(f"`stability_percentage` must be > 0, got {self.stability_percentage!r}")
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise SpecError(f"`timeout_s` must be > 0 seconds, got {self.timeout_s!r}")
        if self.input_data is not None:
            object.__setattr__(self, "input_data", Path(self.input_data))

    @property
    def load(self) -> float:
        """The load level: the concurrency, or the request rate in requests/s."""
        return float(self.concurrency if self.concurrency is not None else self.request_rate or 0.0)

    def describe(self) -> str:
        """The load level in words, e.g. "concurrency 4" or "request rate 50/s"."""
        if self.concurrency is not None:
            return f"concurrency {self.concurrency}"
        return f"request rate {self.request_rate:g}/s"


def _require_int_at_least(field: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"`{field}` must be an integer ≥ {minimum}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class LatencyBreakdown:
    """Where an average request's time went, in milliseconds, as perf_analyzer attributes it."""

    client_send_ms: float
    network_ms: float
    server_queue_ms: float
    server_compute_input_ms: float
    server_compute_infer_ms: float
    server_compute_output_ms: float
    client_recv_ms: float

    @property
    def total_ms(self) -> float:
        """The average client-side latency: the parts add up to it."""
        return sum(getattr(self, name) for name in _BREAKDOWN_COLUMNS)


@dataclass(frozen=True, kw_only=True)
class ReportedLevel:
    """One row of perf_analyzer's CSV report: its own numbers for one load level."""

    measurement: Measurement
    breakdown: LatencyBreakdown


@dataclass(frozen=True, kw_only=True)
class RequestLatencies:
    """Per-request latencies of the requests perf_analyzer measured at one load level.

    Attributes:
        load: The concurrency or request rate.
        latencies_us: Send-to-last-response time of each measured request.
        window_s: Length of the measured windows.
        span_s: From the first measured request's send to the last one's response.
    """

    load: float
    latencies_us: tuple[float, ...]
    window_s: float
    span_s: float

    @property
    def throughput_rps(self) -> float:
        """Requests answered per second inside the measured windows."""
        return len(self.latencies_us) / self.window_s if self.window_s > 0 else 0.0

    @property
    def busy_throughput_rps(self) -> float:
        """Requests answered per second from the first send to the last response."""
        return len(self.latencies_us) / self.span_s if self.span_s > 0 else 0.0


@dataclass(frozen=True, kw_only=True)
class PerfResult:
    """What one perf_analyzer run measured.

    Attributes:
        run: The run that produced this result.
        reported: perf_analyzer's own figures from its CSV report (nearest-rank percentiles).
        breakdown: The average request's time split into client, network, queue and compute.
        requests: Exact latency distribution of the measured requests, from their timestamps.
        throughput_rps: Requests per second. perf_analyzer's figure for windowed runs; for a
            `request_count` run it is computed from the requests' timestamps, because
            perf_analyzer rounds that run's duration up to whole seconds.
        command: The perf_analyzer command line that ran.
        latencies_us: Each measured request's latency, for histograms and exact percentiles.
    """

    run: PerfRun
    reported: Measurement
    breakdown: LatencyBreakdown
    requests: LatencySummary
    throughput_rps: float
    command: tuple[str, ...]
    latencies_us: tuple[float, ...] = ()

    @property
    def measurement(self) -> Measurement:
        """The level's throughput with latencies from the per-request timestamps."""
        return Measurement(
            load=self.reported.load,
            throughput_rps=self.throughput_rps,
            p50_ms=self.requests.p50_ms,
            p90_ms=self.requests.p90_ms,
            p95_ms=self.requests.p95_ms,
            p99_ms=self.requests.p99_ms,
            avg_ms=self.requests.mean_ms,
        )


def write_text_input_data(
    path: Path,
    input_names: str | Sequence[str],
    texts: Sequence[str],
    int_inputs: Mapping[str, int] | None = None,
) -> Path:
    """Write perf_analyzer --input-data JSON: one text per input and request, cycling through `texts`.

    The format is one stream of steps, each a TYPE_STRING tensor of shape [1] per input (the batch
    dimension is added by perf_analyzer): `{"data": [{"TEXT": {"content": ["..."], "shape": [1]}}, ...]}`.
    With several inputs (a reranker's QUERY and TEXT) the k-th input of step i takes text i + k.
    `int_inputs` adds the same integer inputs to every step (e.g. `{"MAX_NEW_TOKENS": 32}`).

    Raises:
        SpecError: If there are no texts or one of them is empty.
    """
    if not texts:
        raise SpecError("input data needs at least one text")
    empty = [index for index, text in enumerate(texts) if not isinstance(text, str) or not text.strip()]
    if empty:
        raise SpecError(f"input texts must be non-empty strings; texts {empty[:5]} are not")
    names = [input_names] if isinstance(input_names, str) else list(input_names)
    fixed = {name: {"content": [int(value)], "shape": [1]} for name, value in (int_inputs or {}).items()}
    steps = [
        {
            **{
                name: {"content": [texts[(index + k) % len(texts)]], "shape": [1]}
                for k, name in enumerate(names)
            },
            **fixed,
        }
        for index in range(len(texts))
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"data": steps}, indent=1), encoding="utf-8")
    return path


def build_command(run: PerfRun, binary: Path, workdir: Path) -> list[str]:
    """The perf_analyzer command line for `run`, writing its reports into `workdir`."""
    command = [str(binary), "-m", run.model, "-u", run.url, "-i", run.protocol, "-b", str(run.batch_size)]
    command.append("--async" if run.asynchronous else "--sync")
    if run.concurrency is not None:
        command += ["--concurrency-range", str(run.concurrency)]
    else:
        command += ["--request-rate-range", f"{run.request_rate:g}"]
    if run.request_count is not None:
        command += ["--request-count", str(run.request_count)]
    else:
        command += ["--measurement-mode", run.measurement_mode]
        if run.measurement_mode == "count_windows":
            command += ["--measurement-request-count", str(run.measurement_request_count)]
        else:
            command += ["--measurement-interval", str(run.measurement_interval_ms)]
        command += [
            "--stability-percentage",
            f"{run.stability_percentage:g}",
            "--max-trials",
            str(run.max_trials),
        ]
    if run.input_data is not None:
        command += ["--input-data", str(run.input_data)]
    command += ["-f", str(workdir / CSV_NAME), "--profile-export-file", str(workdir / EXPORT_NAME)]
    return command


def _column(row: Mapping[str, str], name: str) -> float:
    value = row.get(name)
    if value is None or value == "":
        raise InferenceError(f"perf_analyzer's CSV report has no {name!r} column")
    return float(value)


def parse_csv_report(text: str) -> list[ReportedLevel]:
    """Parse perf_analyzer's `-f` CSV report: one row per load level, latencies in microseconds.

    Raises:
        InferenceError: If the report is empty or lacks an expected column.
    """
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        raise InferenceError("perf_analyzer's CSV report holds no measurement")
    levels = []
    for row in rows:
        load_column = next((c for c in _LOAD_COLUMNS if c in row), None)
        if load_column is None:
            raise InferenceError(f"perf_analyzer's CSV report has none of the columns {_LOAD_COLUMNS}")
        breakdown = LatencyBreakdown(
            **{field: _column(row, column) / 1000 for field, column in _BREAKDOWN_COLUMNS.items()}
        )
        measurement = Measurement(
            load=_column(row, load_column),
            throughput_rps=_column(row, "Inferences/Second"),
            p50_ms=_column(row, "p50 latency") / 1000,
            p90_ms=_column(row, "p90 latency") / 1000,
            p95_ms=_column(row, "p95 latency") / 1000,
            p99_ms=_column(row, "p99 latency") / 1000,
            avg_ms=breakdown.total_ms,
        )
        levels.append(ReportedLevel(measurement=measurement, breakdown=breakdown))
    return levels


def parse_profile_export(
    export: Mapping[str, Any], windows: int = STABILITY_WINDOWS
) -> list[RequestLatencies]:
    """Latencies of the requests perf_analyzer measured, per load level, from its profile export.

    A request counts when its last response arrived within the last `windows` measurement
    windows, the requests perf_analyzer's own report is computed from. Its latency is the time
    from sending the request to that response.

    Raises:
        InferenceError: If the export has no experiments or an experiment no window boundaries.
    """
    experiments = export.get("experiments") or []
    if not experiments:
        raise InferenceError("perf_analyzer's profile export holds no experiment")
    levels = []
    for experiment in experiments:
        start, end = measured_span(experiment, windows)
        measured = completed_between(experiment, start, end)
        span_ns = max(done for _, done in measured) - min(sent for sent, _ in measured) if measured else 0
        levels.append(
            RequestLatencies(
                load=float(experiment["experiment"]["value"]),
                latencies_us=tuple((done - sent) / 1000 for sent, done in measured),
                window_s=(end - start) / 1e9,
                span_s=span_ns / 1e9,
            )
        )
    return levels


def measured_span(experiment: Mapping[str, Any], windows: int = STABILITY_WINDOWS) -> tuple[int, int]:
    """Start and end (perf_analyzer's clock, ns) of an experiment's last `windows` measurement windows.

    Raises:
        InferenceError: If the experiment has no complete window.
    """
    boundaries = experiment.get("window_boundaries") or []
    if len(boundaries) < 2:
        raise InferenceError("perf_analyzer's profile export has no complete measurement window")
    return int(boundaries[-min(windows, len(boundaries) - 1) - 1]), int(boundaries[-1])


def completed_between(experiment: Mapping[str, Any], start: int, end: int) -> list[tuple[int, int]]:
    """(send, last response) timestamps of the requests whose last response arrived in [start, end]."""
    return [
        (request["timestamp"], request["response_timestamps"][-1])
        for request in experiment.get("requests", [])
        if request.get("response_timestamps") and start <= request["response_timestamps"][-1] <= end
    ]


def failure_reason(stderr: str, stdout: str = "") -> str:
    """perf_analyzer's own explanation of a failure, without its usage text."""
    text = stderr if stderr.strip() else stdout
    lines = []
    for line in text.splitlines():
        if line.startswith("Usage:"):
            break
        if line.strip():
            lines.append(line.strip())
    if not lines:
        return "no output"
    return " | ".join(dict.fromkeys(lines[:_MAX_REASON_LINES]))


def run_perf_analyzer(run: PerfRun, workdir: Path) -> PerfResult:
    """Run perf_analyzer for `run`, keep its reports in `workdir`, and return what it measured.

    Raises:
        ToolNotFoundError: If perf_analyzer is missing or cannot start.
        UnstableMeasurementError: If its measurement windows never agreed within
            `run.stability_percentage`.
        EmptyWindowError: If a measurement window ended before any request completed in it
            (requests slower than `run.measurement_interval_ms`).
        InferenceError: If it failed (server unreachable, unknown model, failed requests, bad
            input data) or ran past `run.timeout_s`; the message carries perf_analyzer's reason.
    """
    return run_perf_analyzers([(run, workdir)])[0]


def run_perf_analyzers(runs: Sequence[tuple[PerfRun, Path]]) -> list[PerfResult]:
    """Start one perf_analyzer per (run, workdir) at once, wait for all, and return what each measured.

    The processes run concurrently (several models driven together); whether their measurement
    windows really overlapped is for the caller to check from the windows' timestamps. When any
    fails, the others are still waited for (or stopped at their timeout) before the first failure,
    in the order given, is raised.

    Raises:
        ToolNotFoundError, UnstableMeasurementError, EmptyWindowError, InferenceError: As
            `run_perf_analyzer`, for the first run that failed.
    """
    installation = find_perf_analyzer()
    started: list[tuple[PerfRun, Path, list[str], subprocess.Popen[bytes], float]] = []
    try:
        for run, workdir in runs:
            workdir.mkdir(parents=True, exist_ok=True)
            for name in (CSV_NAME, EXPORT_NAME):
                (workdir / name).unlink(missing_ok=True)
            command = build_command(run, installation.binary, workdir)
            LOGGER.info("perf_analyzer: %s at %s (%s)", run.model, run.describe(), run.url)
            LOGGER.debug("command: %s", " ".join(command))
            # Output goes to files, not pipes: concurrent processes never block on a full pipe.
            with (workdir / _STDOUT).open("wb") as stdout, (workdir / _STDERR).open("wb") as stderr:
                try:
                    process = subprocess.Popen(
                        command, env=installation.environment(), stdout=stdout, stderr=stderr
                    )
                except OSError as error:
                    raise ToolNotFoundError(
                        f"perf_analyzer could not be started ({installation.binary}): {error}"
                    ) from None
            started.append((run, workdir, command, process, time.monotonic() + run.timeout_s))
        outcomes = [_finish(*entry) for entry in started]
    finally:
        for _, _, _, process, _ in started:
            if process.poll() is None:
                process.kill()
                process.wait()
    failed = next((outcome for outcome in outcomes if isinstance(outcome, InferenceError)), None)
    if failed is not None:
        raise failed
    return [outcome for outcome in outcomes if isinstance(outcome, PerfResult)]


_STDOUT, _STDERR = "perf_analyzer.stdout", "perf_analyzer.stderr"


def _finish(
    run: PerfRun, workdir: Path, command: list[str], process: subprocess.Popen[bytes], deadline: float
) -> PerfResult | InferenceError:
    """Wait for one started perf_analyzer until `deadline` and read its results, or its error."""
    try:
        process.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return InferenceError(
            f"perf_analyzer did not finish {run.describe()} on {run.model} within {run.timeout_s:g} s; "
            "shorten the measurement or raise the timeout"
        )
    stdout = (workdir / _STDOUT).read_text(encoding="utf-8", errors="replace")
    stderr = (workdir / _STDERR).read_text(encoding="utf-8", errors="replace")
    (workdir / "perf_analyzer.log").write_text(stdout + stderr, encoding="utf-8")
    for name in (_STDOUT, _STDERR):
        (workdir / name).unlink(missing_ok=True)
    if process.returncode != 0:
        return failure_error(run, process.returncode, stderr, stdout)
    try:
        return read_results(run, workdir, tuple(command))
    except InferenceError as error:
        return error


def failure_error(run: PerfRun, returncode: int, stderr: str, stdout: str = "") -> InferenceError:
    """The error for a failed perf_analyzer run, typed by what went wrong, with its own reason."""
    reason = failure_reason(stderr, stdout)
    error_type = InferenceError
    if returncode == _EXIT_UNSTABLE:
        error_type = UnstableMeasurementError
    elif _EMPTY_WINDOW in reason:
        error_type = EmptyWindowError
    return error_type(
        f"perf_analyzer failed on {run.model} at {run.describe()} (exit {returncode}): {reason}"
    )


def read_results(run: PerfRun, workdir: Path, command: tuple[str, ...] = ()) -> PerfResult:
    """Parse the CSV report and profile export a finished single-level run left in `workdir`.

    Raises:
        InferenceError: If a report is missing or malformed, or not exactly one level was measured.
    """
    csv_path, export_path = workdir / CSV_NAME, workdir / EXPORT_NAME
    for path in (csv_path, export_path):
        if not path.is_file():
            raise InferenceError(f"perf_analyzer finished but did not write {path}")
    reported = parse_csv_report(csv_path.read_text(encoding="utf-8"))
    try:
        export = json.loads(export_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise InferenceError(
            f"perf_analyzer's profile export {export_path} is not valid JSON: {error}"
        ) from None
    exported = parse_profile_export(export)
    if len(reported) != 1 or len(exported) != 1:
        raise InferenceError(
            f"expected one measured load level, perf_analyzer reported {len(reported)} "
            f"and exported {len(exported)}"
        )
    level, exported_level = reported[0], exported[0]
    if not exported_level.latencies_us:
        raise InferenceError(f"no request to {run.model} completed inside perf_analyzer's measured windows")
    throughput = level.measurement.throughput_rps
    if run.request_count is not None:
        throughput = exported_level.busy_throughput_rps
    return PerfResult(
        run=run,
        reported=level.measurement,
        breakdown=level.breakdown,
        requests=latency_summary(exported_level.latencies_us),
        throughput_rps=throughput,
        command=command,
        latencies_us=exported_level.latencies_us,
    )
