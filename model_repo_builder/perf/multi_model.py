"""`trb sweep --models a,b`: several models of one server, each alone and all together: the cost of sharing.

At each load level every model is first driven alone (the other models loaded and idle in the same
server, so the thread split is the same), then all of them at once: one perf_analyzer process per
model, started together, each with that load. Every run measures the same fixed number of windows
of the same length, without perf_analyzer's stability search, which would let one process stop early
and leave the others measuring alone.

Whether the windows really overlapped is read from their timestamps (perf_analyzer's profile export,
one clock for all processes on a machine): a model's shared figures come only from its requests that
completed while every model was inside its measured windows (the common span), and the results say
which share of each model's windows that span was. Solo figures are computed the same way from a
solo run's own windows, so solo and shared compare like with like. The cost of sharing is
shared ÷ solo: the share of its throughput a model keeps, and how much its latency grows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_repo_builder import __version__
from model_repo_builder.errors import InferenceError, SpecError, TrbError
from model_repo_builder.perf.analysis import latency_summary
from model_repo_builder.perf.cache import CacheCounts, cache_counts
from model_repo_builder.perf.perf_analyzer import (
    EXPORT_NAME,
    EmptyWindowError,
    PerfRun,
    completed_between,
    measured_span,
    run_perf_analyzers,
    write_text_input_data,
)
from model_repo_builder.perf.report import write_models_report
from model_repo_builder.perf.sweep import (
    Progress,
    SweepError,
    SweepOutcome,
    Target,
    generation_inputs,
    load_prompts,
    local_inputs,
    probe_generation,
    remote_inputs,
)
from model_repo_builder.repository.manifest import read_manifest
from model_repo_builder.runtime.ports import free_ports
from model_repo_builder.runtime.server import TritonServer, served_models
from model_repo_builder.spec import LaunchSpec, MultiModelSweepSpec

LOGGER = logging.getLogger(__name__)

# Windows every run measures (perf_analyzer's own count for a stable result).
WINDOWS = 3
# The common span must cover at least this share of every model's windows to count as overlapped.
MIN_OVERLAP = 0.8
# A stability band no measurement misses: perf_analyzer stops after exactly `max_trials` windows.
_NO_STABILITY_CHECK = 1e6


@dataclass(frozen=True, kw_only=True)
class Span:
    """From the start of a run's first measured window to the end of its last (perf_analyzer's clock, ns)."""

    start_ns: int
    end_ns: int

    @property
    def seconds(self) -> float:
        """Length in seconds (0 when empty)."""
        return max(0, self.end_ns - self.start_ns) / 1e9


@dataclass(frozen=True, kw_only=True)
class Overlap:
    """When the measured windows of several concurrent runs were all open at once.

    Attributes:
        start_ns: Start of the common span (the latest first-window start).
        end_ns: End of the common span (the earliest last-window end); ≤ start_ns: no overlap.
        common_s: Length of the common span in seconds.
        fractions: Per model, the common span's share of its own measured windows.
        overlapped: Whether that share is at least `MIN_OVERLAP` for every model.
    """

    start_ns: int
    end_ns: int
    common_s: float
    fractions: dict[str, float]
    overlapped: bool


def overlap(spans: Mapping[str, Span]) -> Overlap:
    """The common span of several runs' measured windows and its share of each run's windows."""
    if not spans:
        raise ValueError("overlap needs at least one span")
    start = max(span.start_ns for span in spans.values())
    end = min(span.end_ns for span in spans.values())
    common_s = max(0, end - start) / 1e9
    fractions = {
        model: round(common_s / span.seconds, 4) if span.seconds > 0 else 0.0 for model, span in spans.items()
    }
    return Overlap(
        start_ns=start,
        end_ns=end,
        common_s=common_s,
        fractions=fractions,
        overlapped=common_s > 0 and min(fractions.values()) >= MIN_OVERLAP,
    )


@dataclass(frozen=True, kw_only=True)
class ModelLevel:
    """One model's figures over one measured span.

    Attributes:
        throughput_rps: Requests completed inside the span, per second of span.
        p50_ms, p99_ms: Latency percentiles of those requests (None: no request completed).
        requests: How many requests completed inside the span.
        window_s: Length of the span.
        tokens_per_s: Text-generation models: throughput × tokens per request.
        cache_hits, cache_misses: Models with the response cache: lookups during the whole run.
    """

    throughput_rps: float
    p50_ms: float | None
    p99_ms: float | None
    requests: int
    window_s: float
    tokens_per_s: float | None = None
    cache_hits: int | None = None
    cache_misses: int | None = None


def model_level(
    completed: Sequence[tuple[int, int]],
    span_s: float,
    tokens_per_request: float | None = None,
    cache: CacheCounts | None = None,
) -> ModelLevel:
    """Figures from the (send, response) timestamps, in ns, of the requests completed in a span."""
    throughput = len(completed) / span_s if span_s > 0 else 0.0
    summary = latency_summary([(done - sent) / 1000 for sent, done in completed]) if completed else None
    return ModelLevel(
        throughput_rps=throughput,
        p50_ms=summary.p50_ms if summary else None,
        p99_ms=summary.p99_ms if summary else None,
        requests=len(completed),
        window_s=span_s,
        tokens_per_s=None if tokens_per_request is None else throughput * tokens_per_request,
        cache_hits=None if cache is None else cache.hits,
        cache_misses=None if cache is None else cache.misses,
    )


def _ratio(shared: float | None, solo: float | None) -> float | None:
    if shared is None or not solo:
        return None
    return round(shared / solo, 4)


@dataclass(frozen=True, kw_only=True)
class SharingCost:
    """One model at one load level: alone, shared with the others, and shared ÷ solo."""

    model: str
    solo: ModelLevel
    shared: ModelLevel | None  # None: the shared run failed or its windows did not overlap at all
    throughput_ratio: float | None  # the share of its solo throughput the model keeps
    p50_ratio: float | None  # how many times its solo p50 the model's p50 becomes
    p99_ratio: float | None


def sharing_cost(model: str, solo: ModelLevel, shared: ModelLevel | None) -> SharingCost:
    """Compare a model's shared figures with its solo ones at the same load."""
    return SharingCost(
        model=model,
        solo=solo,
        shared=shared,
        throughput_ratio=_ratio(shared.throughput_rps, solo.throughput_rps) if shared else None,
        p50_ratio=_ratio(shared.p50_ms, solo.p50_ms) if shared else None,
        p99_ratio=_ratio(shared.p99_ms, solo.p99_ms) if shared else None,
    )


@dataclass(frozen=True, kw_only=True)
class SharedLevel:
    """One load level, applied to each model alone and then to all together."""

    mode: str  # "concurrency" or "request_rate"
    load: float  # per model
    costs: tuple[SharingCost, ...]
    overlap: Overlap | None
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class MeasuredModel:
    """A model the multi-model sweep drove."""

    name: str
    task: str | None
    repository: str | None
    response_cache: bool
    tokens_per_request: float | None  # text-generation models, probed before measuring


@dataclass(frozen=True, kw_only=True)
class MultiModelResults:
    """Everything a multi-model sweep measured: results.json's `models` section."""

    models: tuple[MeasuredModel, ...]
    windows: int
    measurement_interval_ms: int
    min_overlap: float
    levels: tuple[SharedLevel, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for results.json (lists where the dataclasses hold tuples)."""
        return _plain(dataclasses.asdict(self))  # type: ignore[no-any-return]


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def summary_sentence(results: MultiModelResults) -> str:
    """The headline: what each model keeps at the highest level measured together."""
    measured = [level for level in results.levels if level.overlap is not None and level.error is None]
    if not measured:
        failed = next((level.error for level in results.levels if level.error), None)
        return "No level was measured with the models together" + (f": {failed}." if failed else ".")
    level = measured[-1]
    unit = "concurrency" if level.mode == "concurrency" else "request rate"
    parts = []
    for cost in level.costs:
        if cost.throughput_ratio is None:
            parts.append(f"{cost.model} has no shared figure")
            continue
        latency = f", p99 ×{cost.p99_ratio:.2f}" if cost.p99_ratio is not None else ""
        parts.append(f"{cost.model} keeps {cost.throughput_ratio:.0%} of its solo throughput{latency}")
    assert level.overlap is not None
    least = min(level.overlap.fractions.values())
    overlap_note = (
        f"the measured windows overlapped for {least:.0%} of each model's time"
        if level.overlap.overlapped
        else f"the windows overlapped only {least:.0%}: the shared figures cover just the common part"
    )
    return f"Driven together at {unit} {level.load:g} each: {'; '.join(parts)} ({overlap_note})."


class MultiModelSweeper:
    """Measures the models of one server alone and together, level by level."""

    def __init__(
        self,
        spec: MultiModelSweepSpec,
        folder: Path,
        targets: Mapping[str, Target],
        progress: Progress | None = None,
    ):
        self.spec = spec
        self.folder = folder
        self.targets = dict(targets)
        self.progress = progress or (lambda message, fraction: None)
        self.prompts = load_prompts(spec.prompts)
        self.measurements = 0
        self.tokens_per_request: dict[str, float] = {}
        generating = [name for name, target in self.targets.items() if target.generates]
        if spec.max_new_tokens is not None and not generating:
            raise SpecError(
                "`--max-new-tokens` applies to text-generation models; none of "
                f"{', '.join(self.targets)} generates text"
            )

    def probe(self) -> None:
        """Count the tokens each text-generation model generates per request."""
        for name, target in self.targets.items():
            if target.generates and target.input_name is not None:
                probed = probe_generation(target, self.prompts, self.spec.protocol, self.spec.max_new_tokens)
                self.tokens_per_request[name] = probed["tokens_per_request"]

    def _input_file(self, target: Target) -> Path | None:
        if not target.text_inputs:
            return None
        suffix = "_generate" if target.generates else ""
        path = self.folder / "raw" / f"input_data_{'_'.join(target.text_inputs)}{suffix}.json"
        if not path.is_file():
            extra = generation_inputs(self.spec.max_new_tokens) if target.generates else None
            write_text_input_data(path, target.text_inputs, self.prompts, extra)
        return path

    def _run(self, target: Target, mode: str, load: float, interval_ms: int) -> PerfRun:
        settings = {"concurrency": int(load)} if mode == "concurrency" else {"request_rate": load}
        return PerfRun(
            model=target.model,
            url=target.url,
            protocol=self.spec.protocol,
            input_data=self._input_file(target),
            measurement_interval_ms=interval_ms,
            stability_percentage=_NO_STABILITY_CHECK,
            max_trials=WINDOWS,
            **settings,  # type: ignore[arg-type]
        )

    def _measure(
        self, models: Sequence[str], mode: str, load: float, label: str
    ) -> tuple[dict[str, Span], dict[str, list[tuple[int, int]]], dict[str, CacheCounts]]:
        """Run one perf_analyzer per model at once; each one's span, completed requests and cache counts.

        When a window ends before any request completes in it (slow requests), the level is run once
        more with 4× longer windows.
        """
        interval = self.spec.measurement_interval_ms
        for attempt in range(2):
            runs = [
                (
                    self._run(self.targets[name], mode, load, interval),
                    self.folder / "raw" / f"{label}-{mode}-{load:g}" / name,
                )
                for name in models
            ]
            before = self._cache_counts(models)
            self.measurements += len(runs)
            try:
                run_perf_analyzers(runs)
                break
            except EmptyWindowError:
                if attempt:
                    raise
                LOGGER.warning(
                    "%s %s %g: a window ended before any request; 4x longer windows", label, mode, load
                )
                interval *= 4
        after = self._cache_counts(models)
        spans, completed = {}, {}
        for name, (_, workdir) in zip(models, runs, strict=True):
            experiment = json.loads((workdir / EXPORT_NAME).read_text(encoding="utf-8"))["experiments"][0]
            start, end = measured_span(experiment, WINDOWS)
            spans[name] = Span(start_ns=start, end_ns=end)
            completed[name] = completed_between(experiment, start, end)
        cache = {name: after[name].since(before[name]) for name in after}
        return spans, completed, cache

    def _cache_counts(self, models: Sequence[str]) -> dict[str, CacheCounts]:
        return {
            name: cache_counts(self.targets[name].url, self.spec.protocol, name)
            for name in models
            if self.targets[name].response_cache
        }

    def _level(
        self, name: str, completed: list[tuple[int, int]], span: Span, cache: Mapping[str, CacheCounts]
    ) -> ModelLevel:
        inside = [(sent, done) for sent, done in completed if span.start_ns <= done <= span.end_ns]
        return model_level(inside, span.seconds, self.tokens_per_request.get(name), cache.get(name))

    def level(self, mode: str, load: float, index: int, total: int) -> SharedLevel:
        """Each model alone at `load`, then all together at `load` each."""
        names = list(self.targets)
        solo: dict[str, ModelLevel] = {}
        try:
            for name in names:
                self.progress(f"{name} alone: {mode} {load:g} (level {index}/{total})", 0.0)
                spans, completed, cache = self._measure([name], mode, load, "solo")
                solo[name] = self._level(name, completed[name], spans[name], cache)
            self.progress(f"{', '.join(names)} together: {mode} {load:g} (level {index}/{total})", 0.0)
            spans, completed, cache = self._measure(names, mode, load, "shared")
        except InferenceError as error:
            LOGGER.warning("%s", error)
            costs = tuple(sharing_cost(name, solo[name], None) for name in names if name in solo)
            return SharedLevel(mode=mode, load=load, costs=costs, overlap=None, error=str(error))
        common = overlap(spans)
        if not common.overlapped:
            LOGGER.warning(
                "%s %g: the models' measured windows overlapped only %.0f%%",
                mode,
                load,
                100 * min(common.fractions.values()),
            )
        span = Span(start_ns=common.start_ns, end_ns=common.end_ns)
        costs = tuple(
            sharing_cost(
                name,
                solo[name],
                self._level(name, completed[name], span, cache) if common.common_s > 0 else None,
            )
            for name in names
        )
        return SharedLevel(mode=mode, load=load, costs=costs, overlap=common)


@contextlib.contextmanager
def serve_models(spec: MultiModelSweepSpec) -> Iterator[dict[str, Target]]:
    """Launch every repository in one server on free loopback ports (or use `spec.url`); yield the targets.

    Raises:
        SpecError: If a model of `--models` is not among the repositories' models.
        RepositoryError: If two repositories hold a model of the same name.
        InferenceError: If the server at `--url` has no config for a model of `--models`.
    """
    if spec.url is not None:
        targets = {}
        for name in spec.models:
            try:
                found = remote_inputs(spec.url, spec.protocol, name)
            except InferenceError as error:
                raise InferenceError(f"`--models`: {error}") from None
            targets[name] = Target.of(name, spec.url, found)
        yield targets
        return
    owners = served_models(spec.repositories)
    names = spec.models or tuple(read_manifest(repository).name for repository in spec.repositories)
    unknown = [name for name in names if name not in owners]
    if unknown:
        raise SpecError(
            f"`--models`: no model named {', '.join(unknown)} in {', '.join(map(str, spec.repositories))}; "
            f"they hold {', '.join(owners)}"
        )
    http_port, grpc_port, metrics_port = free_ports(3)
    launch = LaunchSpec(
        repositories=spec.repositories, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port
    )
    with TritonServer(launch) as server:
        url = server.grpc_url if spec.protocol == "grpc" else server.http_url
        yield {name: Target.of(name, url, local_inputs(owners[name], name), server) for name in names}


def _levels(spec: MultiModelSweepSpec) -> list[tuple[str, float]]:
    return [("concurrency", float(c)) for c in sorted(spec.concurrency)] + [
        ("request_rate", float(r)) for r in sorted(spec.request_rates)
    ]


def run_multi_model_sweep(spec: MultiModelSweepSpec, progress: Progress | None = None) -> SweepOutcome:
    """Measure each model alone and all together at every level; write results.json and report.html.

    Whatever was measured before a failure is written all the same.

    Raises:
        SweepError: If a level failed (its error is in the results), after writing them.
    """
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    label = "+".join(spec.models) if spec.models else "models"
    folder = spec.output or Path("runs") / f"{stamp}-{label}"
    folder.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "trb_version": __version__,
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": label,
        "target": {
            "repositories": [str(repository) for repository in spec.repositories],
            "url": spec.url,
            "protocol": spec.protocol,
        },
        "options": {
            key: [str(v) for v in value]
            if key == "repositories"
            else str(value)
            if isinstance(value, Path)
            else value
            for key, value in dataclasses.asdict(spec).items()
        },
        "errors": [],
    }
    measured: list[SharedLevel] = []
    models: tuple[MeasuredModel, ...] = ()
    sweeper: MultiModelSweeper | None = None
    try:
        with serve_models(spec) as targets:
            results["model"] = "+".join(targets)
            sweeper = MultiModelSweeper(spec, folder, targets, progress)
            sweeper.probe()
            models = tuple(
                MeasuredModel(
                    name=name,
                    task=target.task.name if target.task else None,
                    repository=str(target.server.model_repositories.get(name)) if target.server else None,
                    response_cache=target.response_cache,
                    tokens_per_request=sweeper.tokens_per_request.get(name),
                )
                for name, target in targets.items()
            )
            levels = _levels(spec)
            for index, (mode, load) in enumerate(levels, start=1):
                level = sweeper.level(mode, load, index, len(levels))
                measured.append(level)
                if level.error:
                    results["errors"].append(level.error)
                    break
    except TrbError as error:
        results["errors"].append(str(error))
        raise
    finally:
        section = MultiModelResults(
            models=models,
            windows=WINDOWS,
            measurement_interval_ms=spec.measurement_interval_ms,
            min_overlap=MIN_OVERLAP,
            levels=tuple(measured),
        )
        results["models"] = section.to_dict()
        results["summary"] = summary_sentence(section)
        results["measurements"] = sweeper.measurements if sweeper else 0
        write_models_report(results, folder)
    if results["errors"]:
        raise SweepError(f"{results['summary']} Results are in {folder}.")
    return SweepOutcome(folder=folder, results=results)
