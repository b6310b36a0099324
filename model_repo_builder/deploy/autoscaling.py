"""Autoscaling bounds and thresholds on Triton's queue depth, from flags, a sweep run, or defaults.

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
    """The replica bounds and queue-depth thresholds a ScaledObject gets, and where each came from."""

    min_replicas: int
    max_replicas: int
    scale_up_queue: float
    scale_down_queue: float
    window_s: int
    basis: tuple[str, ...]


def autoscaling(spec: AutoscalingFlags, plan: MeasuredPlan | None) -> Autoscaling:
    """Resolve the autoscaling settings; raise `SpecError` when they do not fit together."""
    basis: list[str] = []
    down = spec.scale_down_queue if spec.scale_down_queue is not None else DEFAULT_SCALE_DOWN_QUEUE
    if spec.scale_up_queue is not None:
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
    )
