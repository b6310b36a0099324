"""A seeded discrete-event simulation of a trace played through autoscaled replicas of a measured service.

Each replica is the flow-equivalent server of `service.py`: a processor-sharing queue whose total
completion rate with `n` requests is the sweep's throughput at concurrency `n`. It is simulated with
a virtual clock — the work every request in a replica has received so far, which grows at
`X(n) / n` per second — so an arrival or completion costs O(log n), not a pass over the replica.

A request goes to the ready replicas round-robin (as the validation's client does; a Kubernetes
Service spreads connections about evenly). While no replica is ready it waits at the ingress, and
its latency counts that wait. The autoscaler (`autoscaler.py`) polls the summed queue depth (for a
text-generation run the requests in the system: in the replicas or waiting at the ingress); a new
replica is ready after the start-up delay and is paid for from the moment it is asked for; a
removed one takes no new requests, finishes the ones it has, and is paid for until then.

Same inputs and seed, same result: every random draw (Poisson gaps, work requirements) comes from
one `numpy.random.Generator`.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model_repo_builder.deploy.autoscaling import IN_FLIGHT
from model_repo_builder.errors import SpecError
from model_repo_builder.perf.analysis import LatencySummary, latency_summary
from model_repo_builder.plan.autoscaler import Autoscaler, ScalingRule
from model_repo_builder.plan.service import ServiceCurve
from model_repo_builder.plan.trace import Trace, UserChange

LOGGER = logging.getLogger(__name__)

# How each request's work is drawn: from the measured latency shape (the model), or the textbook
# exponential / deterministic service the unit tests check against closed forms.
WORK_KINDS = ("measured", "exponential", "deterministic")
# Timeline resolution: one point a second, coarser for long traces so a result stays ~1000 points.
_TIMELINE_POINTS = 1000
# A simulation still running this long after its trace ended is an overload that never drains.
_DRAIN_LIMIT_S = 3600.0

# Event kinds, in the order they are handled when they fall on the same instant.
_READY, _COMPLETE, _USERS, _SEND, _POLL, _SAMPLE = range(6)


@dataclass(frozen=True, kw_only=True)
class TimelinePoint:
    """The deployment at one instant, and what completed in the step that ends there."""

    t_s: float
    replicas: int  # asked for (starting or ready), what is paid for besides draining ones
    ready: int
    in_system: int
    queue_depth: float
    completed_rps: float
    p99_ms: float | None


@dataclass(frozen=True, kw_only=True)
class ScalingEvent:
    """The autoscaler changed the replica count at a poll."""

    t_s: float
    replicas_from: int
    replicas_to: int
    queue_depth: float
    metric: float  # what the autoscaler read: the queue depth, or the requests in flight


@dataclass(frozen=True, kw_only=True)
class SimulationResult:
    """What the simulation predicts for a trace."""

    trace: str
    rule: str
    seed: int
    duration_s: float  # from the trace's start to the last completion (or the trace's end)
    requests: int
    completed: int
    offered_rps: float
    throughput_rps: float  # completed ÷ (last completion − first arrival)
    latency: LatencySummary | None
    max_queue_depth: float
    replicas_max: int
    replicas_mean: float
    replica_seconds: float
    cost_usd: float | None
    cost_per_million_usd: float | None
    timeline: tuple[TimelinePoint, ...]
    scaling: tuple[ScalingEvent, ...]
    latencies_ms: np.ndarray = field(repr=False)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, without the per-request latencies."""
        return {
            "trace": self.trace,
            "rule": self.rule,
            "seed": self.seed,
            "duration_s": self.duration_s,
            "requests": self.requests,
            "completed": self.completed,
            "offered_rps": self.offered_rps,
            "throughput_rps": self.throughput_rps,
            "latency_ms": None if self.latency is None else vars(self.latency),
            "max_queue_depth": self.max_queue_depth,
            "replicas_max": self.replicas_max,
            "replicas_mean": self.replicas_mean,
            "replica_seconds": self.replica_seconds,
            "replica_hours": self.replica_seconds / 3600,
            "cost_usd": self.cost_usd,
            "cost_per_million_usd": self.cost_per_million_usd,
            "scaling": [vars(event) for event in self.scaling],
            "timeline": [vars(point) for point in self.timeline],
        }


class _Replica:
    """One processor-sharing replica on a virtual clock."""

    def __init__(self, index: int, created_s: float, ready_s: float):
        self.index = index
        self.created_s = created_s
        self.ready_s = ready_s
        self.removed_s: float | None = None  # asked to go: takes nothing new
        self.gone_s: float | None = None  # drained after removal
        self.virtual = 0.0  # work each present request has received since the replica started
        self.updated_s = created_s
        self.jobs: list[tuple[float, int]] = []  # (virtual finish, request id)
        self.version = 0  # bumps whenever the next completion moves; stale events are skipped

    @property
    def n(self) -> int:
        return len(self.jobs)


class _Simulation:
    def __init__(self, trace: Trace, curve: ServiceCurve, rule: ScalingRule, seed: int, work: str):
        self.trace, self.curve, self.rule, self.work = trace, curve, rule, work
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.autoscaler = Autoscaler(rule)
        self.events: list[tuple[float, int, int, Any]] = []
        self.sequence = itertools.count()
        self.replicas: list[_Replica] = []
        self.ingress: list[int] = []
        self.turn = 0
        self.arrival: list[float] = []
        self.done: list[float] = []
        self.user_of: list[int] = []
        self.in_system = 0
        self.users_active = 0
        self.think_s = 0.0
        self.user_busy: list[bool] = []
        self.user_waiting: list[bool] = []  # a send is scheduled after think time
        self.pending_open = 0
        self.scaling: list[ScalingEvent] = []
        self.samples: list[tuple[float, int, int, int, float]] = []
        self._rates: dict[int, float] = {}
        self._works: dict[int, tuple[float, ...]] = {}
        self.step = 1.0
        self.end_s = 0.0

    # --- service -------------------------------------------------------------------------------
    def rate(self, n: int) -> float:
        rate = self._rates.get(n)
        if rate is None:
            rate = self._rates[n] = self.curve.rate(n) / n
        return rate

    def draw_work(self, n: int) -> float:
        if self.work == "exponential":
            return float(self.rng.exponential(1.0))
        if self.work == "deterministic":
            return 1.0
        shape = self._works.get(n)
        if shape is None:
            shape = self._works[n] = self.curve.level_for(n).work
        return shape[int(self.rng.integers(len(shape)))]

    def advance(self, replica: _Replica, now: float) -> None:
        if replica.jobs:
            replica.virtual += (now - replica.updated_s) * self.rate(replica.n)
        replica.updated_s = now

    def schedule_completion(self, replica: _Replica) -> None:
        replica.version += 1
        if replica.jobs:
            left = max(0.0, replica.jobs[0][0] - replica.virtual)
            self.push(replica.updated_s + left / self.rate(replica.n), _COMPLETE, (replica, replica.version))

    def push(self, at: float, kind: int, data: Any = None) -> None:
        heapq.heappush(self.events, (at, kind, next(self.sequence), data))

    # --- requests ------------------------------------------------------------------------------
    def ready_replicas(self, now: float) -> list[_Replica]:
        return [r for r in self.replicas if r.removed_s is None and r.ready_s <= now]

    def send(self, now: float, user: int) -> None:
        request = len(self.arrival)
        self.arrival.append(now)
        self.done.append(math.nan)
        self.user_of.append(user)
        self.in_system += 1
        ready = self.ready_replicas(now)
        if ready:
            self.assign(now, request, ready[self.turn % len(ready)])
            self.turn += 1
        else:
            self.ingress.append(request)

    def assign(self, now: float, request: int, replica: _Replica) -> None:
        self.advance(replica, now)
        heapq.heappush(replica.jobs, (replica.virtual + self.draw_work(replica.n + 1), request))
        self.schedule_completion(replica)

    def complete(self, now: float, replica: _Replica) -> None:
        self.advance(replica, now)
        _, request = heapq.heappop(replica.jobs)
        self.done[request] = now
        self.in_system -= 1
        self.schedule_completion(replica)
        if replica.removed_s is not None and not replica.jobs:
            replica.gone_s = now
        user = self.user_of[request]
        if user >= 0:
            self.user_busy[user] = False
            self.next_request(now, user)

    def next_request(self, now: float, user: int) -> None:
        if user >= self.users_active or self.user_busy[user] or self.user_waiting[user]:
            return
        if self.think_s > 0:
            self.user_waiting[user] = True
            self.push(now + self.think_s, _SEND, user)
        else:
            self.user_busy[user] = True
            self.send(now, user)

    def change_users(self, now: float, change: UserChange) -> None:
        self.think_s = change.think_s
        while len(self.user_busy) < change.users:
            self.user_busy.append(False)
            self.user_waiting.append(False)
        before, self.users_active = self.users_active, change.users
        for user in range(before, change.users):
            # A returning user may still have a request in flight; it sends again when that is answered.
            if not self.user_busy[user] and not self.user_waiting[user]:
                self.user_busy[user] = True
                self.send(now, user)

    # --- replicas ------------------------------------------------------------------------------
    def queue_depth(self, now: float) -> float:
        return sum(self.curve.queue_depth(r.n) for r in self.ready_replicas(now)) + len(self.ingress)

    def scaling_metric(self, now: float) -> float:
        """What the autoscaler reads: the queue depth, or every request in flight (draining replicas too)."""
        return float(self.in_system) if self.rule.metric == IN_FLIGHT else self.queue_depth(now)

    def scale(self, now: float) -> None:
        asked = [r for r in self.replicas if r.removed_s is None]
        value = self.scaling_metric(now)
        wanted = self.autoscaler.decide(now, value, len(asked))
        if wanted == len(asked):
            return
        self.scaling.append(
            ScalingEvent(
                t_s=now,
                replicas_from=len(asked),
                replicas_to=wanted,
                queue_depth=self.queue_depth(now),
                metric=value,
            )
        )
        for _ in range(wanted - len(asked)):
            self.add_replica(now, now + self.rule.startup_s)
        # Kubernetes removes pods that are not ready first, then the newest.
        surplus = max(0, len(asked) - wanted)
        for replica in sorted(asked, key=lambda r: (r.ready_s <= now, -r.created_s))[:surplus]:
            replica.removed_s = now
            if not replica.jobs:
                replica.gone_s = now

    def add_replica(self, now: float, ready_s: float) -> None:
        replica = _Replica(len(self.replicas), now, ready_s)
        self.replicas.append(replica)
        self.push(ready_s, _READY, replica)

    def replica_ready(self, now: float, replica: _Replica) -> None:
        if replica.removed_s is not None:
            return
        waiting, self.ingress = self.ingress, []
        ready = self.ready_replicas(now)
        for request in waiting:
            self.assign(now, request, ready[self.turn % len(ready)])
            self.turn += 1

    # --- the run -------------------------------------------------------------------------------
    def run(self) -> None:
        rule, trace = self.rule, self.trace
        initial = rule.min_replicas
        for _ in range(initial):
            self.add_replica(0.0, 0.0)
        opens = trace.open_arrivals(self.rng)
        self.pending_open = len(opens)
        for at in opens:
            self.push(float(at), _SEND, -1)
        for change in trace.user_changes():
            self.push(change.at_s, _USERS, change)
        end = trace.duration_s
        if not rule.fixed:
            self.push(0.0, _POLL)
        step = max(1.0, math.ceil(end / _TIMELINE_POINTS))
        self.step = step
        self.push(0.0, _SAMPLE)
        limit = end + max(_DRAIN_LIMIT_S, 10 * end)
        while self.events:
            now, kind, _, data = heapq.heappop(self.events)
            if now > limit:
                LOGGER.warning(
                    "%d requests still waiting %.0f s after the trace ended", self.in_system, now - end
                )
                break
            if kind == _COMPLETE:
                replica, version = data
                if version == replica.version:
                    self.complete(now, replica)
            elif kind == _SEND:
                if data < 0:
                    self.pending_open -= 1
                    self.send(now, -1)
                else:
                    self.user_waiting[data] = False
                    self.next_request(now, data)
            elif kind == _USERS:
                self.change_users(now, data)
            elif kind == _READY:
                self.replica_ready(now, data)
            elif kind == _POLL:
                self.scale(now)
            else:
                self.sample(now)
            if self.finished(now, end):
                self.end_s = max(now, end)
                self.sample(self.end_s)
                return
            if kind in (_POLL, _SAMPLE):
                self.push(now + (rule.polling_s if kind == _POLL else step), kind)
        self.end_s = max(end, max((t for t in self.done if not math.isnan(t)), default=end))

    def finished(self, now: float, end: float) -> bool:
        return now >= end and self.in_system == 0 and self.pending_open == 0 and self.users_active == 0

    def sample(self, now: float) -> None:
        asked = sum(1 for r in self.replicas if r.removed_s is None)
        ready = len(self.ready_replicas(now))
        self.samples.append((now, asked, ready, self.in_system, self.queue_depth(now)))


def simulate(
    trace: Trace,
    curve: ServiceCurve,
    rule: ScalingRule,
    *,
    seed: int = 0,
    cost_per_hour: float | None = None,
    work: str = "measured",
) -> SimulationResult:
    """Play `trace` through replicas of `curve` under `rule`; same inputs and seed, same result.

    Args:
        trace: The load.
        curve: One replica's measured service behaviour.
        rule: Replica bounds and the autoscaling rule (`min == max` for a fixed count).
        seed: Seed of every random draw.
        cost_per_hour: Price of one replica per hour, for the cost of the trace.
        work: How request work is drawn, one of WORK_KINDS ("measured" except in tests).

    Raises:
        SpecError: An unknown `work` or a negative price.
    """
    if work not in WORK_KINDS:
        raise SpecError(f"work must be one of {', '.join(WORK_KINDS)}, got {work!r}")
    if cost_per_hour is not None and not (math.isfinite(cost_per_hour) and cost_per_hour >= 0):
        raise SpecError(f"`--cost-per-hour` must be ≥ 0, got {cost_per_hour!r}")
    run = _Simulation(trace, curve, rule, seed, work)
    run.run()
    return _result(run, cost_per_hour)


def _result(run: _Simulation, cost_per_hour: float | None) -> SimulationResult:
    arrival, done = np.asarray(run.arrival), np.asarray(run.done)
    finished = ~np.isnan(done)
    latencies_ms = (done[finished] - arrival[finished]) * 1000
    end = run.end_s
    completed = int(finished.sum())
    span = float(done[finished].max() - arrival.min()) if completed else 0.0
    replica_seconds = sum(
        (r.gone_s if r.gone_s is not None else end) - r.created_s for r in run.replicas if r.created_s <= end
    )
    throughput = completed / span if span > 0 else 0.0
    cost = None if cost_per_hour is None else cost_per_hour * replica_seconds / 3600
    # Cost per million is the trace's cost over what it answered: idle and starting replicas count.
    per_million = None if cost is None or not completed else cost / completed * 1e6
    samples = run.samples
    weights = np.diff([s[0] for s in samples] + [end]) if samples else np.empty(0)
    asked = np.asarray([s[1] for s in samples], dtype=float)
    mean_replicas = (
        float((asked * weights).sum() / weights.sum()) if weights.sum() > 0 else float(asked.mean())
    )
    return SimulationResult(
        trace=run.trace.description,
        rule=run.rule.describe(),
        seed=run.seed,
        duration_s=end,
        requests=len(run.arrival),
        completed=completed,
        offered_rps=len(run.arrival) / run.trace.duration_s if run.trace.duration_s > 0 else 0.0,
        throughput_rps=throughput,
        latency=latency_summary(latencies_ms * 1000) if completed else None,
        max_queue_depth=max((s[4] for s in samples), default=0.0),
        replicas_max=int(max((s[1] for s in samples), default=0)),
        replicas_mean=mean_replicas,
        replica_seconds=replica_seconds,
        cost_usd=cost,
        cost_per_million_usd=per_million,
        timeline=_timeline(run, done, arrival, finished),
        scaling=tuple(run.scaling),
        latencies_ms=latencies_ms,
    )


def _timeline(
    run: _Simulation, done: np.ndarray, arrival: np.ndarray, finished: np.ndarray
) -> tuple[TimelinePoint, ...]:
    step = run.step
    buckets = np.floor(done[finished] / step).astype(int)
    latencies = (done[finished] - arrival[finished]) * 1000
    order = np.argsort(buckets, kind="stable")
    buckets, latencies = buckets[order], latencies[order]
    bounds = np.searchsorted(buckets, np.arange(len(run.samples) + 1))
    points = []
    for index, (t, asked, ready, in_system, depth) in enumerate(run.samples):
        # The sample at t reports what completed in [t - step, t).
        low, high = (bounds[index - 1], bounds[index]) if index else (0, 0)
        window = latencies[low:high]
        points.append(
            TimelinePoint(
                t_s=round(t, 3),
                replicas=asked,
                ready=ready,
                in_system=in_system,
                queue_depth=round(depth, 3),
                completed_rps=(high - low) / step,
                p99_ms=float(np.percentile(window, 99)) if len(window) else None,
            )
        )
    return tuple(points)
