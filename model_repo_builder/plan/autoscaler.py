"""The autoscaling rule `trb deploy k8s` renders, as a decision the simulation takes at every poll.

The ScaledObject (`deploy/kubernetes.py`) gives KEDA one Prometheus trigger on the summed queue depth
(text-generation repositories: the summed requests in flight; the rule's `metric`, which the
"depths" below stand for), metric type AverageValue, so the HorizontalPodAutoscaler it creates
decides as Kubernetes' HPA does (pkg/controller/podautoscaler, defaults unchanged by trb):

- every poll (KEDA's `pollingInterval`, 15 s, which is also the HPA's sync period) the raw
  recommendation is `ceil(total queue depth / scale-up depth)` — unless the usage ratio
  `total / (replicas × scale-up depth)` is within the 10% tolerance of 1, which keeps the count;
- stabilisation: the HPA scales up only to the lowest recommendation of the last `window_s` seconds
  and down only to the highest, so a change must hold for the whole window (trb sets the same
  window both ways);
- the default scale-up policy adds at most max(100%, 4 pods) per 15 s; scale-down is unlimited;
- the result is clamped to [min, max] replicas; at or below the activation threshold (trb's
  scale-down depth) KEDA deactivates the trigger, which with `--min-replicas 0` returns the
  deployment to zero once inactive for the cooldown (trb sets it to the window), and a deployment at
  zero is woken to one replica by a depth above the threshold.

What is left out: Prometheus' scrape delay (trb's config scrapes every 5 s) and the HPA's special
handling of pods that are not ready yet (it counts them at the target while scaling up).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from model_repo_builder.deploy.autoscaling import METRIC_LABELS, POLLING_INTERVAL_S, QUEUE_DEPTH, Autoscaling
from model_repo_builder.errors import SpecError
from model_repo_builder.plan.spec import DEFAULT_STARTUP_S

HPA_TOLERANCE = 0.1
# The HPA's default scale-up policies (the larger wins): double, or add 4 pods, per 15 s.
_SCALE_UP_PERIOD_S = 15.0
_SCALE_UP_PODS = 4


@dataclass(frozen=True, kw_only=True)
class ScalingRule:
    """Bounds, thresholds and timings of the autoscaler; `min == max` fixes the replica count."""

    min_replicas: int
    max_replicas: int
    scale_up_queue: float  # KEDA's threshold: the metric per replica the HPA aims at
    scale_down_queue: float  # KEDA's activation threshold
    window_s: float
    polling_s: float = float(POLLING_INTERVAL_S)
    startup_s: float = DEFAULT_STARTUP_S
    metric: str = QUEUE_DEPTH  # what the autoscaler reads: queue depth or requests in flight

    def __post_init__(self) -> None:
        if self.min_replicas < 0 or self.max_replicas < max(1, self.min_replicas):
            raise SpecError(
                f"`--max-replicas` ({self.max_replicas}) must be ≥ 1 and ≥ "
                f"`--min-replicas` ({self.min_replicas})"
            )
        if not self.scale_up_queue > self.scale_down_queue >= 0:
            raise SpecError(
                f"`--scale-up-queue` ({self.scale_up_queue:g}) must be above `--scale-down-queue` "
                f"({self.scale_down_queue:g}) ≥ 0"
            )
        for flag, value in (("--window", self.window_s), ("--startup", self.startup_s)):
            if not (math.isfinite(value) and value >= 0):
                raise SpecError(f"`{flag}` must be ≥ 0 seconds, got {value!r}")
        if not self.polling_s > 0:
            raise SpecError(f"`--polling` must be > 0 seconds, got {self.polling_s!r}")
        if self.metric not in METRIC_LABELS:
            raise ValueError(f"unknown scaling metric {self.metric!r}")

    @property
    def fixed(self) -> bool:
        """Whether the replica count never changes."""
        return self.min_replicas == self.max_replicas

    @classmethod
    def from_autoscaling(cls, scaling: Autoscaling, startup_s: float, polling_s: float) -> ScalingRule:
        """The rule of a resolved `Autoscaling` (what `trb deploy k8s` renders)."""
        return cls(
            min_replicas=scaling.min_replicas,
            max_replicas=scaling.max_replicas,
            scale_up_queue=scaling.scale_up_queue,
            scale_down_queue=scaling.scale_down_queue,
            window_s=float(scaling.window_s),
            polling_s=polling_s,
            startup_s=startup_s,
            metric=scaling.metric,
        )

    def describe(self) -> str:
        """One line for people."""
        if self.fixed:
            return f"{self.min_replicas} replica(s), fixed"
        return (
            f"{self.min_replicas}–{self.max_replicas} replicas, scale up at {METRIC_LABELS[self.metric]} "
            f"{self.scale_up_queue:g} per replica, activation {self.scale_down_queue:g}, "
            f"{self.window_s:g} s window, {self.polling_s:g} s polling, {self.startup_s:g} s start-up"
        )


class Autoscaler:
    """Replays the HPA's decision at each poll; keeps the recommendations its windows need."""

    def __init__(self, rule: ScalingRule):
        self.rule = rule
        # The deployment ran steadily at its minimum before the trace: the polls of the last window
        # recommended that, so a change at t = 0 must hold a whole window like any other.
        polls_before = math.ceil(rule.window_s / rule.polling_s)
        self._recommendations = [(-k * rule.polling_s, rule.min_replicas) for k in range(polls_before, 0, -1)]
        self._last_active_s = 0.0

    def decide(self, now_s: float, value: float, replicas: int) -> int:
        """Replicas wanted after a poll at `now_s` that read the metric at `value` with `replicas` running."""
        rule = self.rule
        if rule.fixed:
            return rule.min_replicas
        active = value > rule.scale_down_queue
        if active:
            self._last_active_s = now_s
        if replicas == 0:
            return max(1, rule.min_replicas) if active else 0
        if not active and rule.min_replicas == 0:
            return 0 if now_s - self._last_active_s >= rule.window_s else replicas
        ratio = value / (replicas * rule.scale_up_queue)
        raw = replicas if abs(ratio - 1) <= HPA_TOLERANCE else math.ceil(value / rule.scale_up_queue)
        self._recommendations.append((now_s, raw))
        cutoff = now_s - rule.window_s
        self._recommendations = [(t, r) for t, r in self._recommendations if t > cutoff or t == now_s]
        window = [r for _, r in self._recommendations]
        up, down = min(window), max(window)
        wanted = up if replicas < up else down if replicas > down else replicas
        wanted = min(wanted, max(2 * replicas, replicas + _SCALE_UP_PODS))
        return min(max(wanted, max(1, rule.min_replicas)), rule.max_replicas)
