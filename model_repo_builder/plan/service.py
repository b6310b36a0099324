"""One replica's service behaviour, read from the concurrency curve a `trb sweep` run measured.

The model is a flow-equivalent server (Chandy, Herzog and Woo's Norton theorem for queueing
networks): a replica holding `n` requests completes them at the rate `X(n)` perf_analyzer measured
with `n` closed-loop clients, shared equally among the `n` (processor sharing). Everything inside
the replica — Triton's dynamic batcher, the instances, the network and client time perf_analyzer
counts — is folded into that one load-dependent rate, so batching shows as a rate that grows with
`n` and saturation as a rate that stops growing. Between measured levels `X` is interpolated
linearly (from 0 at `n` = 0), past the last level it stays at the last level's value. `X` never
falls as `n` grows: a level measured below a lower concurrency's throughput (noise on a shared
machine, or a client-side limit past the peak) takes that throughput instead, so the curve is flat
past saturation rather than collapsing into a queue that can never drain.

Each request carries a work requirement (mean 1): a draw from the latencies measured at the level
nearest its `n` on arrival, divided by that level's mean. In a closed loop of `n` users the
replica then gives each request `work × n / X(n)` — the measured latency distribution at `n`, so
the simulation reproduces the sweep at every measured level by construction. What it predicts is
the rest: open-loop and changing loads, several replicas, autoscaling. The approximation is
exact for product-form networks and is not for a FIFO batcher; bench/bench_simulate.py measures
how far it lands from real replays.

The queue depth the autoscaler reads (Triton's `nv_inference_pending_request_count`: requests not
yet executing) is, at `n` in the replica, the depth the sweep saw at concurrency `n` by Little's law
(throughput × the server's queue time, as `deploy/plan.py` computes it at the knee); past the last
level every extra request waits. A text-generation run (`generates`: the sweep counted tokens per
request) is autoscaled on the requests in the replica instead — continuous batching keeps its queue
empty — which the simulation counts directly.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model_repo_builder.errors import SpecError
from model_repo_builder.perf.compare import load_results

# Quantiles kept of each level's latencies: enough for p99.9 shapes, small enough for results JSON.
_WORK_QUANTILES = 1000


@dataclass(frozen=True, kw_only=True)
class ServiceLevel:
    """One measured concurrency level of a replica."""

    concurrency: int
    throughput_rps: float
    queue_depth: float
    mean_latency_ms: float
    p99_ms: float
    work: tuple[float, ...]  # each request's latency ÷ the level's mean, ascending (mean 1)


@dataclass(frozen=True, kw_only=True)
class ServiceCurve:
    """A replica's completion rate, queue depth and latency shape by requests in the replica."""

    source: str
    config: str
    levels: tuple[ServiceLevel, ...]  # ascending concurrency, at least one
    generates: bool = False  # a text-generation model: autoscaled on requests in flight

    def __post_init__(self) -> None:
        if not self.levels:
            raise SpecError(f"`RUN_DIR` {self.source}: no concurrency level to model the service from")
        concurrencies = [level.concurrency for level in self.levels]
        if concurrencies != sorted(set(concurrencies)) or concurrencies[0] < 1:
            raise SpecError(f"`RUN_DIR` {self.source}: concurrency levels must be distinct and ≥ 1")
        for level in self.levels:
            if not (level.throughput_rps > 0 and math.isfinite(level.throughput_rps)):
                raise SpecError(
                    f"`RUN_DIR` {self.source}: concurrency {level.concurrency} has throughput "
                    f"{level.throughput_rps!r}; every level must have answered requests"
                )

    @property
    def capacity_rps(self) -> float:
        """The highest throughput measured: what one replica completes at most."""
        return max(level.throughput_rps for level in self.levels)

    def rate(self, n: int) -> float:
        """Completions per second with `n` requests in the replica (never less than with fewer)."""
        rates = np.maximum.accumulate([level.throughput_rps for level in self.levels])
        return self._interpolate(n, [float(rate) for rate in rates])

    def queue_depth(self, n: int) -> float:
        """Requests waiting (not executing) with `n` in the replica."""
        last = self.levels[-1]
        if n > last.concurrency:
            return last.queue_depth + (n - last.concurrency)
        return self._interpolate(n, [level.queue_depth for level in self.levels])

    def level_for(self, n: int) -> ServiceLevel:
        """The measured level nearest `n` requests (on a log scale, as sweeps space their levels)."""
        concurrencies = [level.concurrency for level in self.levels]
        index = bisect.bisect_left(concurrencies, n)
        if index == 0:
            return self.levels[0]
        if index == len(self.levels):
            return self.levels[-1]
        low, high = self.levels[index - 1], self.levels[index]
        return low if math.log(n / low.concurrency) <= math.log(high.concurrency / n) else high

    def _interpolate(self, n: int, values: list[float]) -> float:
        if n <= 0:
            return 0.0
        concurrencies = [0.0] + [float(level.concurrency) for level in self.levels]
        return float(np.interp(float(n), concurrencies, [0.0, *values]))

    def as_dict(self) -> dict[str, Any]:
        """The curve as the simulation used it (without the latency shapes)."""
        return {
            "source": self.source,
            "config": self.config,
            "capacity_rps": self.capacity_rps,
            "generates": self.generates,
            "levels": [
                {
                    "concurrency": level.concurrency,
                    "throughput_rps": level.throughput_rps,
                    "queue_depth": level.queue_depth,
                    "mean_latency_ms": level.mean_latency_ms,
                    "p99_ms": level.p99_ms,
                }
                for level in self.levels
            ],
        }


def _work(latencies_ms: list[float]) -> tuple[tuple[float, ...], float]:
    samples = np.asarray(latencies_ms, dtype=float)
    mean = float(samples.mean())
    shape = np.quantile(samples / mean, (np.arange(_WORK_QUANTILES) + 0.5) / _WORK_QUANTILES)
    shape = shape / shape.mean()  # quantiles of a skewed sample lose a little of its mean; keep it 1
    return tuple(float(value) for value in shape), mean


def _level(level: dict[str, Any]) -> ServiceLevel:
    latencies = level.get("latencies_ms") or []
    if latencies:
        work, mean = _work(latencies)
    else:  # runs without per-request latencies: a constant work at the level's mean
        work, mean = (1.0,), float(level["avg_ms"])
    breakdown = level.get("breakdown") or {}
    queue_s = float(breakdown.get("server_queue_ms") or 0.0) / 1000
    return ServiceLevel(
        concurrency=int(level["load"]),
        throughput_rps=float(level["throughput_rps"]),
        queue_depth=float(level["throughput_rps"]) * queue_s,
        mean_latency_ms=mean,
        p99_ms=float(level["p99_ms"]),
        work=work,
    )


def read_curve(run: Path, config: str | None = None) -> ServiceCurve:
    """The concurrency curve of a run's best configuration (or of `config`).

    Raises:
        RepositoryError: The path holds no trb sweep results.
        SpecError: The configuration is missing or has fewer than two answered concurrency levels.
    """
    results = load_results(run)
    name = config or results.get("best_config")
    chosen = next((c for c in results["configs"] if c["name"] == name), None)
    if chosen is None:
        names = ", ".join(c["name"] for c in results["configs"]) or "none"
        raise SpecError(f"`RUN_DIR` {run} has no configuration {name!r} (it has: {names})")
    levels = [
        level
        for level in chosen.get("levels", [])
        if level.get("mode") == "concurrency" and "error" not in level and level.get("throughput_rps")
    ]
    by_load = {int(level["load"]): level for level in levels}  # a level measured twice: keep the last
    if len(by_load) < 2:
        raise SpecError(
            f"`RUN_DIR` {run} has {len(by_load)} answered concurrency level(s) for {name}; the simulation "
            "needs a curve: sweep with e.g. `--concurrency 1,2,4,8,16,32`"
        )
    return ServiceCurve(
        source=str(run),
        config=str(name),
        levels=tuple(_level(by_load[load]) for load in sorted(by_load)),
        generates="generation" in results,
    )
