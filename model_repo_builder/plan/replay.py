"""Replay a trace against real servers, to measure what a simulation of it predicts.

Open-loop requests leave one scheduling thread at the trace's timestamps as gRPC async calls, so a
slow answer never delays the next send; each closed-loop user is a thread that sends its next
request when the previous one is answered. With several servers the requests go round-robin, as
the simulation routes them. Every request is one text (a batch of one) to a model's text input.

Throughput and latency are taken as the simulation takes them: answered requests over the time from
the first send to the last answer, and each request's time from its send to its answer. How late
the client sent (its own scheduling delay) is reported beside them: a replay is only a fair
reference while that stays small against the latencies.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from model_repo_builder.errors import InferenceError
from model_repo_builder.perf.analysis import percentile
from model_repo_builder.plan.trace import Trace, UsersSegment


@dataclass(frozen=True, kw_only=True)
class ReplayResult:
    """What the servers did with a replayed trace."""

    requests: int
    failed: int
    failures: tuple[str, ...]  # up to three distinct messages
    throughput_rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    client_late_p99_ms: float


def user_windows(trace: Trace) -> list[tuple[float, float]]:
    """(start, stop) seconds of each closed-loop user of `trace`.

    Raises:
        InferenceError: The trace brings a user back after it left, or has think time (the replay
            supports neither).
    """
    if any(isinstance(s, UsersSegment) and s.think_s for s in trace.segments):
        raise InferenceError("the replay sends without think time; give users segments without think=")
    begins: dict[int, float] = {}
    ends: dict[int, float] = {}
    active = 0
    for change in trace.user_changes():
        for user in range(active, change.users):
            if user in begins:
                raise InferenceError("the replay starts each user once; this trace brings a user back")
            begins[user] = change.at_s
        for user in range(change.users, active):
            ends[user] = change.at_s
        active = change.users
    return [(begins[user], ends.get(user, trace.duration_s)) for user in sorted(begins)]


class _Replay:
    def __init__(self, urls: Sequence[str], model: str, input_name: str, texts: Sequence[str]):
        import tritonclient.grpc as grpcclient

        self.grpc = grpcclient
        self.model, self.input_name, self.texts = model, input_name, texts
        self.clients = [grpcclient.InferenceServerClient(url) for url in urls]
        self.lock = threading.Condition()
        self.turn = 0
        self.late: list[float] = []
        self.answered: list[tuple[float, float]] = []
        self.failed: list[str] = []
        self.outstanding = 0

    def inputs(self, index: int) -> list[Any]:
        request = self.grpc.InferInput(self.input_name, [1, 1], "BYTES")
        text = self.texts[index % len(self.texts)].encode()
        request.set_data_from_numpy(np.array([[text]], dtype=np.object_))
        return [request]

    def client(self) -> Any:
        with self.lock:
            client = self.clients[self.turn % len(self.clients)]
            self.turn += 1
            self.outstanding += 1
        return client

    def record(self, sent: float, error: Any) -> None:
        answered = time.perf_counter()
        with self.lock:
            if error is None:
                self.answered.append((sent, answered))
            else:
                self.failed.append(str(error))
            self.outstanding -= 1
            self.lock.notify_all()

    def open_loop(self, start: float, offsets: np.ndarray) -> None:
        for index, offset in enumerate(offsets):
            due = start + float(offset)
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            client, inputs = self.client(), self.inputs(index)
            sent = time.perf_counter()
            self.late.append(sent - due)
            client.async_infer(
                self.model, inputs, callback=lambda result, error, sent=sent: self.record(sent, error)
            )

    def user(self, start: float, begin_s: float, end_s: float, index: int) -> None:
        pause = start + begin_s - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        count = 0
        while time.perf_counter() < start + end_s:
            client, inputs = self.client(), self.inputs(index * 7919 + count)
            sent = time.perf_counter()
            try:
                client.infer(self.model, inputs, client_timeout=120)
                self.record(sent, None)
            except self.grpc.InferenceServerException as error:
                self.record(sent, error)
            count += 1

    def summary(self) -> ReplayResult:
        if not self.answered:
            raise InferenceError(f"no request of the replay was answered: {sorted(set(self.failed))[:3]}")
        latencies = [(answered - sent) * 1000 for sent, answered in self.answered]
        first = min(sent for sent, _ in self.answered)
        last = max(answered for _, answered in self.answered)
        return ReplayResult(
            requests=len(self.answered) + len(self.failed),
            failed=len(self.failed),
            failures=tuple(sorted(set(self.failed))[:3]),
            throughput_rps=len(self.answered) / (last - first) if last > first else 0.0,
            p50_ms=percentile(latencies, 50),
            p90_ms=percentile(latencies, 90),
            p99_ms=percentile(latencies, 99),
            mean_ms=float(np.mean(latencies)),
            client_late_p99_ms=percentile(self.late, 99) * 1000 if self.late else 0.0,
        )


def replay(
    trace: Trace, urls: Sequence[str], model: str, input_name: str, texts: Sequence[str], seed: int = 0
) -> ReplayResult:
    """Send `trace` to the gRPC servers at `urls` round-robin; wait for every answer (at most 2 min after).

    `seed` draws Poisson arrivals exactly as a simulation with that seed does.

    Raises:
        InferenceError: Nothing was answered, or the trace cannot be replayed.
    """
    if not texts:
        raise InferenceError("the replay needs at least one text to send")
    windows = user_windows(trace)
    offsets = trace.open_arrivals(np.random.default_rng(seed))
    run = _Replay(urls, model, input_name, texts)
    start = time.perf_counter() + 0.2
    threads = [
        threading.Thread(target=run.user, args=(start, begin, end, index), daemon=True)
        for index, (begin, end) in enumerate(windows)
    ]
    try:
        for thread in threads:
            thread.start()
        if len(offsets):
            run.open_loop(start, offsets)
        for thread in threads:
            thread.join()
        with run.lock:
            run.lock.wait_for(lambda: run.outstanding == 0, timeout=120)
    finally:
        for client in run.clients:
            client.close()
    return run.summary()
