"""Capacity analysis for `trb sweep`: pure math over perf_analyzer measurements.

Nothing here runs a process or touches the disk. Given the latency and throughput measured at each
load level, these functions find the knee of the curve, the capacity under a latency SLO, the
replicas a target rate needs, the cost per million inferences, and regressions between two runs.
All latencies are milliseconds (`*_ms`) and all rates requests per second (`*_rps`, `*_qps`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from model_repo_builder.errors import SpecError

SLO_PERCENTILES = (50, 90, 95, 99)
KNEE_METRICS = ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "avg_ms")
# Smallest Kneedle difference (in normalised units) that counts as a real bend rather than noise.
_MIN_KNEE_PROMINENCE = 0.1
_SLO_PATTERN = re.compile(r"^\s*p(\d{2})\s*=\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s)?\s*$", re.IGNORECASE)


def percentile(values: Sequence[float], q: float) -> float:
    """Return the q-th percentile of `values` by linear interpolation between closest ranks.

    This is numpy's default ("linear") method: the sorted values sit at ranks 0..n-1 and the
    percentile is read at rank `q / 100 * (n - 1)`, interpolating between its two neighbours.

    Args:
        values: Samples, at least one.
        q: Percentile in [0, 100].

    Raises:
        SpecError: If `values` is empty or `q` is out of range.
    """
    if not 0 <= q <= 100:
        raise SpecError(f"percentile must be between 0 and 100, got {q!r}")
    ordered = sorted(float(v) for v in values)
    if not ordered:
        raise SpecError("cannot take a percentile of no values")
    rank = q / 100 * (len(ordered) - 1)
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True, kw_only=True)
class LatencySummary:
    """Distribution of per-request latencies, in milliseconds."""

    count: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float


def latency_summary(latencies_us: Sequence[float]) -> LatencySummary:
    """Summarise per-request latencies given in microseconds (perf_analyzer's unit) as milliseconds.

    Raises:
        SpecError: If there are no latencies or any is negative or not finite.
    """
    samples = np.asarray(latencies_us, dtype=float)
    if samples.size == 0:
        raise SpecError("cannot summarise latencies: no requests were measured")
    if not np.all(np.isfinite(samples)) or np.any(samples < 0):
        raise SpecError("latencies must be finite and non-negative microseconds")
    ms = (samples / 1000.0).tolist()
    return LatencySummary(
        count=len(ms),
        mean_ms=float(np.mean(ms)),
        p50_ms=percentile(ms, 50),
        p90_ms=percentile(ms, 90),
        p95_ms=percentile(ms, 95),
        p99_ms=percentile(ms, 99),
        max_ms=max(ms),
    )


@dataclass(frozen=True, kw_only=True)
class Measurement:
    """One measured load level: a concurrency or request rate and what the server did under it."""

    load: float
    throughput_rps: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    avg_ms: float
    errors: int = 0

    def latency(self, metric: str) -> float:
        """Return the latency field named `metric`, e.g. "p99_ms"."""
        if metric not in KNEE_METRICS:
            raise SpecError(f"latency metric must be one of {', '.join(KNEE_METRICS)}; got {metric!r}")
        return float(getattr(self, metric))


@dataclass(frozen=True, kw_only=True)
class KneeResult:
    """The chosen operating point on the latency-vs-throughput curve."""

    point: Measurement
    found: bool
    metric: str
    reason: str


def find_knee(points: Sequence[Measurement], metric: str = "p99_ms") -> KneeResult:
    """Find the load level after which more load buys little throughput but costs much latency.

    Method: Kneedle (Satopää et al., 2011) on the latency-vs-throughput curve. Levels are sorted by
    load and cut at the throughput peak, since a level past the peak costs latency and loses
    throughput, so the knee is never after it. Throughput and latency are each scaled to [0, 1],
    and the knee is the level maximising `throughput - latency`, i.e. furthest below the straight
    line from the first level to the peak. Kneedle was chosen because it needs no tuning to the
    units or scale of either axis and, unlike a marginal-cost ratio, does not blow up when the
    first levels' latency is flat or noisy.

    When there is no clear bend (fewer than 3 levels up to the peak, latency that stays flat,
    or a curve no more than `_MIN_KNEE_PROMINENCE` below that line, e.g. a straight one), the
    result is the peak-throughput level with `found=False` and a reason saying why.

    Raises:
        SpecError: If `points` is empty or `metric` is not a latency field.
    """
    if not points:
        raise SpecError("cannot find a knee: no load levels were measured")
    ordered = sorted(points, key=lambda p: p.load)
    latencies = np.array([p.latency(metric) for p in ordered])
    throughputs = np.array([p.throughput_rps for p in ordered])
    peak = int(np.argmax(throughputs))
    curve_x, curve_y = throughputs[: peak + 1], latencies[: peak + 1]

    def at_peak(reason: str) -> KneeResult:
        return KneeResult(point=ordered[peak], found=False, metric=metric, reason=reason)

    if len(curve_x) < 3:
        return at_peak(f"only {len(curve_x)} level(s) up to the throughput peak; using the peak")
    y_span = curve_y.max() - curve_y.min()
    if y_span <= 0:
        return at_peak(f"{metric} stayed flat up to the throughput peak; using the peak")
    x_norm = (curve_x - curve_x.min()) / (curve_x.max() - curve_x.min())
    difference = x_norm - (curve_y - curve_y.min()) / y_span
    knee = int(np.argmax(difference))
    if difference[knee] < _MIN_KNEE_PROMINENCE:
        return at_peak(f"{metric} grows steadily with throughput, with no clear bend; using the peak")
    return KneeResult(
        point=ordered[knee],
        found=True,
        metric=metric,
        reason=f"beyond load {ordered[knee].load:g}, extra throughput costs disproportionate {metric}",
    )


@dataclass(frozen=True, kw_only=True)
class Slo:
    """A latency objective: the given percentile must stay at or below `latency_ms`."""

    percentile: int
    latency_ms: float

    def __post_init__(self) -> None:
        if self.percentile not in SLO_PERCENTILES:
            choices = ", ".join(f"p{p}" for p in SLO_PERCENTILES)
            raise SpecError(f"`--slo` percentile must be one of {choices}; got p{self.percentile}")
        if not (math.isfinite(self.latency_ms) and self.latency_ms > 0):
            raise SpecError(f"`--slo` latency must be a positive number, got {self.latency_ms!r}")

    @property
    def metric(self) -> str:
        """The `Measurement` field this SLO constrains, e.g. "p99_ms"."""
        return f"p{self.percentile}_ms"

    def describe(self) -> str:
        """Render as plain text, e.g. "p99 ≤ 500 ms"."""
        return f"p{self.percentile} ≤ {_fmt(self.latency_ms)} ms"


def parse_slo(text: str) -> Slo:
    """Parse an SLO such as "p99=500ms", "p95=0.5s" or "p90=250" (milliseconds when no unit).

    Raises:
        SpecError: If `text` is not of the form `pNN=<number>[ms|s]`, or names an unsupported
            percentile or a non-positive latency.
    """
    match = _SLO_PATTERN.match(text)
    if not match:
        raise SpecError(f"`--slo` must look like p99=500ms, p95=0.5s or p90=250 (ms); got {text!r}")
    number, unit = float(match.group(2)), (match.group(3) or "ms").lower()
    return Slo(percentile=int(match.group(1)), latency_ms=number * 1000 if unit == "s" else number)


@dataclass(frozen=True, kw_only=True)
class CapacityResult:
    """The highest throughput measured while meeting an SLO; `point` is None when none met it."""

    slo: Slo
    met: bool
    point: Measurement | None
    reason: str

    @property
    def throughput_rps(self) -> float:
        """Throughput at the chosen level, or 0.0 when no level met the SLO."""
        return self.point.throughput_rps if self.point else 0.0


def capacity_at_slo(points: Sequence[Measurement], slo: Slo) -> CapacityResult:
    """Pick the level with the highest throughput whose latency meets `slo` and had no errors.

    A level with failed requests never counts as meeting the SLO, however fast it was.

    Raises:
        SpecError: If `points` is empty.
    """
    if not points:
        raise SpecError("cannot compute capacity: no load levels were measured")
    meeting = [p for p in points if p.errors == 0 and p.latency(slo.metric) <= slo.latency_ms]
    if not meeting:
        lowest = min(p.latency(slo.metric) for p in points)
        reason = f"no load level met {slo.describe()}; the lowest p{slo.percentile} was {_fmt(lowest)} ms"
        return CapacityResult(slo=slo, met=False, point=None, reason=reason)
    best = max(meeting, key=lambda p: p.throughput_rps)
    reason = f"load {best.load:g} is the highest-throughput level meeting {slo.describe()}"
    return CapacityResult(slo=slo, met=True, point=best, reason=reason)


@dataclass(frozen=True, kw_only=True)
class ReplicaPlan:
    """How many replicas a target rate needs, with and without the headroom margin."""

    target_qps: float
    capacity_qps: float
    headroom: float
    usable_qps_per_replica: float
    replicas: int
    replicas_without_headroom: int


def replicas_needed(target_qps: float, capacity_qps: float, headroom: float = 0.2) -> ReplicaPlan:
    """Return `ceil(target / (capacity * (1 - headroom)))` replicas for a target request rate.

    The headroom is the fraction of each replica's measured capacity held back for bursts, noisy
    neighbours and one replica being down for a rollout; 0.2 plans each replica at 80% of capacity.

    Raises:
        SpecError: If a rate is not positive or `headroom` is outside [0, 1).
    """
    for name, value in (("target rate", target_qps), ("capacity", capacity_qps)):
        if not (math.isfinite(value) and value > 0):
            raise SpecError(f"{name} must be a positive number of requests per second, got {value!r}")
    if not 0 <= headroom < 1:
        raise SpecError(f"headroom must be a fraction in [0, 1), e.g. 0.2 for 20%; got {headroom!r}")
    usable = capacity_qps * (1 - headroom)
    return ReplicaPlan(
        target_qps=target_qps,
        capacity_qps=capacity_qps,
        headroom=headroom,
        usable_qps_per_replica=usable,
        replicas=_ceil(target_qps / usable),
        replicas_without_headroom=_ceil(target_qps / capacity_qps),
    )


def _ceil(ratio: float) -> int:
    """Ceil that ignores float noise, so 520 / (65 * 0.8) is 10 rather than 11."""
    nearest = round(ratio)
    return int(nearest) if math.isclose(ratio, nearest, rel_tol=1e-9) else math.ceil(ratio)


def cost_per_million(cost_per_hour: float, throughput_rps: float) -> float:
    """Return the cost of one million inferences: `cost_per_hour / (throughput_rps * 3600) * 1e6`.

    Raises:
        SpecError: If `cost_per_hour` is negative or `throughput_rps` is not positive.
    """
    if not (math.isfinite(cost_per_hour) and cost_per_hour >= 0):
        raise SpecError(f"cost per hour must be a non-negative amount, got {cost_per_hour!r}")
    if not (math.isfinite(throughput_rps) and throughput_rps > 0):
        raise SpecError(f"throughput must be positive to price inferences, got {throughput_rps!r}")
    return cost_per_hour / (throughput_rps * 3600) * 1e6


@dataclass(frozen=True, kw_only=True)
class MetricChange:
    """One metric compared between runs; a value is None when that run lacks the metric."""

    metric: str
    baseline: float | None
    candidate: float | None
    change_pct: float | None
    regressed: bool
    note: str


@dataclass(frozen=True, kw_only=True)
class RegressionReport:
    """Per-metric comparison of two runs and the overall verdict."""

    rows: tuple[MetricChange, ...]
    threshold_pct: float
    regressed: bool


def compare_runs(
    baseline: Mapping[str, float],
    candidate: Mapping[str, float],
    threshold_pct: float,
    higher_is_better: Mapping[str, bool],
) -> RegressionReport:
    """Compare two runs metric by metric; a metric regresses when it worsens by more than the threshold.

    Change is `(candidate - baseline) / |baseline| * 100`; from a zero baseline any change is
    ±infinity. Metrics present in only one run are reported with a note and never regress.

    Raises:
        SpecError: If `threshold_pct` is negative or a metric in both runs has no direction.
    """
    if not threshold_pct >= 0:
        raise SpecError(f"regression threshold must be a non-negative percentage, got {threshold_pct!r}")
    names = list(baseline) + [m for m in candidate if m not in baseline]
    undirected = [m for m in names if m in baseline and m in candidate and m not in higher_is_better]
    if undirected:
        raise SpecError(f"say whether higher is better for: {', '.join(undirected)}")
    rows = tuple(
        _compare_metric(m, baseline.get(m), candidate.get(m), threshold_pct, higher_is_better) for m in names
    )
    return RegressionReport(rows=rows, threshold_pct=threshold_pct, regressed=any(r.regressed for r in rows))


def _compare_metric(
    metric: str, old: float | None, new: float | None, threshold_pct: float, higher: Mapping[str, bool]
) -> MetricChange:
    change, regressed = None, False
    if old is None or new is None:
        note = "missing in baseline" if old is None else "missing in candidate"
    else:
        change = _change_pct(old, new)
        worsening = -change if higher[metric] else change
        regressed = worsening > threshold_pct
        note = "regressed" if regressed else ("improved" if worsening < 0 else "ok")
    return MetricChange(
        metric=metric, baseline=old, candidate=new, change_pct=change, regressed=regressed, note=note
    )


def _change_pct(old: float, new: float) -> float:
    """Percent change from `old` to `new`; from zero, any change is ±infinity."""
    if old == 0:
        return 0.0 if new == 0 else math.copysign(math.inf, new)
    return (new - old) / abs(old) * 100


def summary_sentence(
    capacity: CapacityResult, plan: ReplicaPlan | None = None, cost_per_million_usd: float | None = None
) -> str:
    """Render the sweep's verdict as one plain English sentence.

    For example: "One replica sustains 212 req/s with p99 ≤ 500 ms; 500 req/s needs 3 replicas
    (20% headroom), costing $0.52 per million inferences."
    """
    if not capacity.met:
        return f"{capacity.reason[:1].upper()}{capacity.reason[1:]}."
    parts = [f"One replica sustains {_fmt(capacity.throughput_rps)} req/s with {capacity.slo.describe()}"]
    if plan is not None:
        noun = "replica" if plan.replicas == 1 else "replicas"
        margin = f"{plan.headroom * 100:.0f}% headroom" if plan.headroom else "no headroom"
        parts.append(f"; {_fmt(plan.target_qps)} req/s needs {plan.replicas} {noun} ({margin})")
    if cost_per_million_usd is not None:
        parts.append(f", costing {_fmt_usd(cost_per_million_usd)} per million inferences")
    return "".join(parts) + "."


def _fmt(value: float) -> str:
    """Format a rate or latency for people: whole numbers from 100 up, three significant digits below."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _fmt_usd(amount: float) -> str:
    return f"${amount:,.2f}" if amount >= 0.01 or amount == 0 else f"${amount:.2g}"
