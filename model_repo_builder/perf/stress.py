"""Closed-loop load beyond capacity with a plain client, counting rejections.

perf_analyzer stops at the first failed request, so it cannot show how a server sheds load. This
generator keeps `concurrency` requests in flight for a fixed time and records every outcome: a
response, a rejection (UNAVAILABLE because the bounded queue is full, in trb's words or Triton's), or
another error (a lost connection is UNAVAILABLE too: a server that crashed refuses nothing).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np

from model_repo_builder.perf.analysis import percentile
from model_repo_builder.templates.common.trb_runtime import QUEUE_FULL

# How Triton's own queue policy words a refusal (core r24.10, scheduler_utils.cc).
TRITON_QUEUE_FULL = "Exceeds maximum queue size"


def is_refusal(status: str, message: str) -> bool:
    """Whether an error is a bounded queue's refusal (trb's or Triton's), not a transport failure."""
    return "UNAVAILABLE" in status and (QUEUE_FULL in message or TRITON_QUEUE_FULL in message)


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """One request: when it finished (seconds from start), how long it took, and how it ended."""

    finished_s: float
    latency_ms: float
    status: str


@dataclass(frozen=True, kw_only=True)
class StressResult:
    """Outcomes of a stress run and the verdict on how the server behaved."""

    concurrency: int
    duration_s: float
    outcomes: tuple[Outcome, ...]

    def count(self, status: str) -> int:
        """Requests that ended with `status` ("ok", "rejected" or "error")."""
        return sum(1 for outcome in self.outcomes if outcome.status == status)

    def latency_ms(self, q: float, status: str = "ok") -> float:
        """Latency percentile of the requests that ended with `status`."""
        latencies = [o.latency_ms for o in self.outcomes if o.status == status]
        return percentile(latencies, q) if latencies else float("nan")


def run_stress(
    model: str, url: str, input_name: str, texts: list[str], concurrency: int, duration_s: float
) -> StressResult:
    """Keep `concurrency` gRPC requests in flight for `duration_s` seconds; bounded in count and time.

    One asyncio loop drives the users (a channel each): with a thread per user the client's own
    CPU time, on a machine it shares with the server, made refusals 5-6 ms slower (bench_queue).
    """
    return asyncio.run(_stress(model, url, input_name, texts, concurrency, duration_s))


async def _stress(
    model: str, url: str, input_name: str, texts: list[str], concurrency: int, duration_s: float
) -> StressResult:
    import tritonclient.grpc.aio as grpcclient
    from tritonclient.utils import InferenceServerException

    outcomes: list[Outcome] = []
    start = time.perf_counter()
    deadline = start + duration_s

    async def user(index: int) -> None:
        client = grpcclient.InferenceServerClient(url)
        request = grpcclient.InferInput(input_name, [1, 1], "BYTES")
        request.set_data_from_numpy(np.array([[texts[index % len(texts)].encode()]], dtype=np.object_))
        try:
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                try:
                    await client.infer(model, [request], client_timeout=30)
                    status = "ok"
                except InferenceServerException as error:
                    refused = is_refusal(str(error.status()), error.message() or "")
                    status = "rejected" if refused else "error"
                done = time.perf_counter()
                outcomes.append(
                    Outcome(finished_s=done - start, latency_ms=(done - sent) * 1000, status=status)
                )
                if status != "ok":
                    await asyncio.sleep(0.001)  # a rejected user retries at once; don't spin the CPU
        finally:
            await client.close()

    users = [asyncio.create_task(user(index)) for index in range(concurrency)]
    await asyncio.wait_for(asyncio.gather(*users), timeout=duration_s + 60)
    return StressResult(
        concurrency=concurrency,
        duration_s=duration_s,
        outcomes=tuple(sorted(outcomes, key=lambda o: o.finished_s)),
    )
