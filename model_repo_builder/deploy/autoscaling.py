"""Autoscaling bounds and thresholds per replica of a scaling metric, from flags, a sweep run, or defaults.

The metric is the queue depth (Triton's pending requests plus trb's own queue), except for
text-generation repositories, which scale on the requests in flight (trb's `trb_requests_in_flight`
plus Triton's pending requests): a continuous-batching model takes each request out of Triton's
queue into its running decode batch at once, so its queue stays below one request per replica at
any load and a queue-depth rule never scales it (bench/results/simulate.md). The flags keep their
names (`--scale-up-queue`, `--scale-down-queue`) and mean "per replica of the scaling metric".

Queue depth:

Defaults are the knobs of the Wallaroo autoscaling benchmarks (shared seed 001): scale up at a queue
depth of 5, down at 1, a 60 s window, 0 to 2 replicas — except the minimum, which is 1 here: Triton's
queue metric vanishes with the last replica, so a deployment at zero never sees the load that should
wake it (`--min-replicas 0` takes a `--wake-query` for that).

How KEDA reads them (one Prometheus trigger, metric type AverageValue): the HPA keeps
`ceil(total queue depth / scale-up depth)` replicas, so each replica holds at most that many waiting
requests; the scale-down depth is the activation threshold, at or below which KEDA deactivates the
deployment and returns it to its minimum; the window is the HPA's stabilisation window both ways
and KEDA's cooldown.

With a sweep run (`--plan`): the scale-up depth is the queue depth one replica had at the knee of its
curve, the maximum is the run's replica plan for its `--target-qps`. Flags given explicitly win.

Requests in flight (generation): the same KEDA rule on the summed in-flight count. Without a run,
scale up at the replica's decode width (instances × the prompts one instance decodes at once, 32 by
default: past it requests wait for a place in the batch) and activate above 1; with `--plan`, scale
up at the concurrency of the sweep's knee — in a closed-loop sweep of `n` clients a replica holds
`n` requests, so the knee's concurrency is the in-flight count per replica up to which more requests
still bought throughput.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from model_repo_builder.deploy.plan import MeasuredPlan
from model_repo_builder.errors import SpecError

DEFAULT_MIN_REPLICAS = 1
DEFAULT_MAX_REPLICAS = 2
DEFAULT_SCALE_UP_QUEUE = 5.0
DEFAULT_SCALE_DOWN_QUEUE = 1.0
# What the autoscaler reads: queue depth, or (generation) requests in flight.
QUEUE_DEPTH = "queue_depth"
IN_FLIGHT = "in_flight"
METRIC_LABELS = {QUEUE_DEPTH: "queue depth", IN_FLIGHT: "requests in flight"}
# A generation repository's default scale-up in-flight count when its decode width is unknown: trb's
# default --max-batch-size, the continuous batch of one instance.
DEFAULT_DECODE_WIDTH = 32
# How often KEDA reads the queue depth (the ScaledObject's pollingInterval; also the HPA's sync period).
POLLING_INTERVAL_S = 15


class AutoscalingFlags(Protocol):
    """The autoscaling options a spec carries (`DeploySpec`, `SimulateSpec`); None: not given."""

    @property
    def min_replicas(self) -> int | None: ...  # noqa: D102
    @property
    def max_replicas(self) -> int | None: ...  # noqa: D102
    @property
    def scale_up_queue(self) -> float | None: ...  # noqa: D102
    @property
    def scale_down_queue(self) -> float | None: ...  # noqa: D102
    @property
    def window_s(self) -> int: ...  # noqa: D102


@dataclass(frozen=True, kw_only=True)
class Autoscaling:
    """The replica bounds and thresholds a ScaledObject gets, and where each came from.

    The thresholds are per replica of `metric` (QUEUE_DEPTH or IN_FLIGHT), whatever their names.
    """

    min_replicas: int
    max_replicas: int
    scale_up_queue: float
    scale_down_queue: float
    window_s: int
    basis: tuple[str, ...]
    metric: str = QUEUE_DEPTH

    @property
    def metric_label(self) -> str:
        """What the thresholds count, for people."""
        return METRIC_LABELS[self.metric]


def _in_flight_scale_up(
    spec: AutoscalingFlags, plan: MeasuredPlan | None, down: float, decode_width: int | None
) -> tuple[float, str]:
    """The scale-up in-flight count per replica of a generation repository, and why."""
    if spec.scale_up_queue is not None:
        return spec.scale_up_queue, f"scale-up at {spec.scale_up_queue:g} in flight: `--scale-up-queue`"
    if plan is not None:
        knee = float(math.ceil(plan.knee_load))
        up = max(knee, down + 1)
        raised = f", raised to stay above the scale-down count {down:g}" if up > knee else ""
        return up, (
            f"scale-up at {up:g} requests in flight per replica: the knee of the sweep's curve is at "
            f"concurrency {plan.knee_load:g} ({plan.knee_rps:.1f} req/s) in {plan.run}; a closed-loop "
            f"client count is the requests a replica holds{raised}"
        )
    width = decode_width or DEFAULT_DECODE_WIDTH
    up = max(float(width), down + 1)
    return up, (
        f"scale-up at {up:g} requests in flight per replica: the replica's decode width "
        f"({'instances × prompts decoded at once' if decode_width else 'trb default max batch'}), past "
        "which requests wait for a place in the batch; `--plan RUN_DIR` takes the sweep's knee instead"
    )


def autoscaling(
    spec: AutoscalingFlags,
    plan: MeasuredPlan | None,
    *,
    metric: str = QUEUE_DEPTH,
    decode_width: int | None = None,
) -> Autoscaling:
    """Resolve the autoscaling settings; raise `SpecError` when they do not fit together.

    Args:
        spec: The flags (None: not given).
        plan: A sweep run's figures (`--plan`), or None.
        metric: QUEUE_DEPTH, or IN_FLIGHT for a text-generation repository.
        decode_width: A generation replica's decode width: the default scale-up count without a run.
    """
    if metric not in METRIC_LABELS:
        raise ValueError(f"unknown scaling metric {metric!r}")
    basis: list[str] = []
    down = spec.scale_down_queue if spec.scale_down_queue is not None else DEFAULT_SCALE_DOWN_QUEUE
    if metric == IN_FLIGHT:
        up, reason = _in_flight_scale_up(spec, plan, down, decode_width)
        basis.append(
            "scales on requests in flight (trb_requests_in_flight + Triton's pending), not on queue "
            "depth: a generation model takes each request out of Triton's queue into its decode batch at "
            f"once; {reason}"
        )
    elif spec.scale_up_queue is not None:
        up = spec.scale_up_queue
    elif plan is not None:
        up = max(float(math.ceil(plan.knee_queue_depth)), down + 1)
        basis.append(
            f"scale-up queue depth {up:g}: {plan.knee_queue_depth:.2f} requests waited on average at the "
            f"knee (concurrency {plan.knee_load:g}, {plan.knee_rps:.1f} req/s) in {plan.run}"
            + (
                f", raised to stay above the scale-down depth {down:g}"
                if up > math.ceil(plan.knee_queue_depth)
                else ""
            )
        )
    else:
        up = DEFAULT_SCALE_UP_QUEUE
    if not up > down:
        raise SpecError(f"`--scale-up-queue` ({up:g}) must be above `--scale-down-queue` ({down:g})")
    if spec.max_replicas is not None:
        maximum = spec.max_replicas
    elif plan is not None:
        if plan.replicas is None:
            raise SpecError(
                f"`--plan` {plan.run} has no replica plan (the sweep ran without --target-qps); "
                "rerun it with --target-qps or give --max-replicas"
            )
        maximum = plan.replicas
        basis.append(
            f"max replicas {maximum}: the run's plan for {plan.target_qps:g} req/s at "
            f"{plan.capacity_rps:.1f} req/s per replica" + (f" ({plan.slo})" if plan.slo else "")
        )
    else:
        maximum = DEFAULT_MAX_REPLICAS
    minimum = spec.min_replicas if spec.min_replicas is not None else min(DEFAULT_MIN_REPLICAS, maximum)
    if maximum < minimum:
        raise SpecError(f"`--max-replicas` ({maximum}) must be ≥ `--min-replicas` ({minimum})")
    return Autoscaling(
        min_replicas=minimum,
        max_replicas=maximum,
        scale_up_queue=up,
        scale_down_queue=down,
        window_s=spec.window_s,
        basis=tuple(basis),
        metric=metric,
    )
