"""Closed-loop load beyond capacity with a plain client, counting rejections.

perf_analyzer stops at the first failed request, so it cannot show how a server sheds load. This
generator keeps `concurrency` requests in flight for a fixed time and records every outcome: a
response, a rejection (UNAVAILABLE: the bounded queue is full), or another error.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from model_repo_builder.perf.analysis import percentile


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
    """Keep `concurrency` gRPC requests in flight for `duration_s` seconds; bounded in count and time."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    outcomes: list[Outcome] = []
    lock = threading.Lock()
    start = time.perf_counter()
    deadline = start + duration_s

    def worker(index: int) -> None:
        client = grpcclient.InferenceServerClient(url)
        data = np.array([[texts[index % len(texts)].encode()]], dtype=np.object_)
        request = grpcclient.InferInput(input_name, [1, 1], "BYTES")
        request.set_data_from_numpy(data)
        try:
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                try:
                    client.infer(model, [request], client_timeout=30)
                    status = "ok"
                except InferenceServerException as error:
                    status = "rejected" if "UNAVAILABLE" in str(error.status()) else "error"
                done = time.perf_counter()
                with lock:
                    outcomes.append(
                        Outcome(finished_s=done - start, latency_ms=(done - sent) * 1000, status=status)
                    )
                if status != "ok":
                    time.sleep(0.001)  # a rejected client retries at once; don't spin the CPU
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=duration_s + 60)
    return StressResult(
        concurrency=concurrency,
        duration_s=duration_s,
        outcomes=tuple(sorted(outcomes, key=lambda o: o.finished_s)),
    )
