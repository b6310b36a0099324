"""Priority queues under a fixed overload: does the high level keep its solo latency?

One MiniLM fp32 repository built with `--priority-levels 2 --priority-queue 2=16` (level 1 unbounded,
level 2 at most 16 waiting, the rest rejected with 503), max batch 8, one instance. Three phases of
the same length on one server, all clients over gRPC:

    solo          the high client alone: one request (one text) every 100 ms at priority 1
    priority      the high client as above, plus LOW_CLIENTS closed-loop clients at the default
                  level 2 (far more than the instance serves: a fixed overload)
    no priority   the same overload, the high client sending at level 2 like everyone else

Reported per phase: the high client's p50 / p99 / max latency, the low clients' answered and
rejected requests per second and their p50 / p99. A rejected low client waits 20 ms before it sends
again (so rejections do not turn into a busy loop that takes the cores from the server).

Results: bench/results/priority.json and bench/results/priority.md; scratch under bench/work/priority/.

    python bench/bench_priority.py              # about 2 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import built_repository, launch, load_average, machine_info

from model_repo_builder.spec import BuildSpec

ROOT = Path(__file__).resolve().parent
TEXT = "The quick brown fox jumps over the lazy dog while the server answers many other requests."
HIGH_INTERVAL_S = 0.1
LOW_CLIENTS = 24
REJECT_BACKOFF_S = 0.02


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


class Client:
    """One connection sending single-text requests at a priority; records latencies and rejections."""

    def __init__(self, url: str, model: str, priority: int):
        import tritonclient.grpc as grpcclient

        self.client = grpcclient.InferenceServerClient(url)
        self.model = model
        self.priority = priority
        text = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
        text.set_data_from_numpy(np.array([[TEXT.encode()]], dtype=np.object_))
        self.inputs = [text]
        self.latencies_ms: list[float] = []
        self.rejected = 0

    def send(self) -> bool:
        """One request; False when the server rejected it (queue full)."""
        from tritonclient.utils import InferenceServerException

        started = time.perf_counter()
        try:
            self.client.infer(self.model, self.inputs, priority=self.priority)
        except InferenceServerException:
            self.rejected += 1
            return False
        self.latencies_ms.append((time.perf_counter() - started) * 1000)
        return True


def run_phase(
    url: str, model: str, duration_s: float, high_priority: int, low_clients: int
) -> dict[str, Any]:
    stop = threading.Event()
    high = Client(url, model, high_priority)
    lows = [Client(url, model, 0) for _ in range(low_clients)]

    def high_loop() -> None:
        next_at = time.monotonic()
        while not stop.is_set():
            high.send()
            next_at += HIGH_INTERVAL_S
            stop.wait(max(0.0, next_at - time.monotonic()))

    def low_loop(client: Client) -> None:
        while not stop.is_set():
            if not client.send():
                stop.wait(REJECT_BACKOFF_S)

    threads = [threading.Thread(target=low_loop, args=(c,)) for c in lows]
    for thread in threads:
        thread.start()
    if lows:
        time.sleep(2.0)  # let the overload build up before the high client starts measuring
    high_thread = threading.Thread(target=high_loop)
    started = time.monotonic()
    high_thread.start()
    time.sleep(duration_s)
    stop.set()
    for thread in [high_thread, *threads]:
        thread.join(timeout=120)
    elapsed = time.monotonic() - started
    low_latencies = [value for c in lows for value in c.latencies_ms]
    return {
        "high": {
            "priority": high_priority,
            "requests": len(high.latencies_ms),
            "rejected": high.rejected,
            "p50_ms": _percentile(high.latencies_ms, 50),
            "p99_ms": _percentile(high.latencies_ms, 99),
            "max_ms": round(max(high.latencies_ms), 1) if high.latencies_ms else None,
        },
        "low": {
            "clients": low_clients,
            "answered_per_s": round(len(low_latencies) / elapsed, 1),
            "rejected_per_s": round(sum(c.rejected for c in lows) / elapsed, 1),
            "p50_ms": _percentile(low_latencies, 50),
            "p99_ms": _percentile(low_latencies, 99),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=25.0, help="seconds per phase")
    parser.add_argument("--reuse", action="store_true", help="reuse an earlier build")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    work = ROOT / "work" / "priority"
    spec = BuildSpec(
        source="minilm",
        name="minilm-priority",
        output=work,
        max_batch_size=8,
        priority_levels=2,
        priority_queues=("2=16",),
    )
    repository = built_repository(spec, arguments.reuse)
    phases: dict[str, Any] = {}
    with launch(repository) as server:
        url, model = server.grpc_url, spec.name or ""
        for _ in range(20):  # warm the path (and the batcher) before measuring
            Client(url, model, 1).send()
        phases["solo"] = run_phase(url, model, arguments.duration, 1, 0)
        phases["priority"] = run_phase(url, model, arguments.duration, 1, LOW_CLIENTS)
        phases["no_priority"] = run_phase(url, model, arguments.duration, 2, LOW_CLIENTS)
    results = {
        "machine": machine_info(),
        "load_average_after": load_average(),
        "setup": {
            "model": "all-MiniLM-L6-v2 fp32, max batch 8, 1 instance",
            "priority_levels": 2,
            "level_2_max_queue_size": 16,
            "high_interval_s": HIGH_INTERVAL_S,
            "low_clients": LOW_CLIENTS,
            "duration_s": arguments.duration,
        },
        "phases": phases,
    }
    (ROOT / "results").mkdir(exist_ok=True)
    (ROOT / "results" / "priority.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (ROOT / "results" / "priority.md").write_text(_markdown(results), encoding="utf-8")
    print(_markdown(results))


def _markdown(results: dict[str, Any]) -> str:
    machine = results["machine"]
    lines = [
        "# Priority queues under a fixed overload",
        "",
        f"{machine['date']}, {machine['cores']} cores ({machine['cpu']}), load average after the run "
        f"{results['load_average_after']}. `python bench/bench_priority.py`; setup: "
        f"{results['setup']['model']}, `--priority-levels 2 --priority-queue 2=16`, the high client "
        f"sends one text every {int(results['setup']['high_interval_s'] * 1000)} ms, "
        f"{results['setup']['low_clients']} low clients send closed-loop at the default level 2, "
        f"{results['setup']['duration_s']:.0f} s per phase.",
        "",
        "| phase | high p50 ms | high p99 ms | high max ms | low answered/s | low rejected/s "
        "| low p50 ms | low p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, phase in results["phases"].items():
        high, low = phase["high"], phase["low"]
        lines.append(
            f"| {name} | {high['p50_ms']} | {high['p99_ms']} | {high['max_ms']} | {low['answered_per_s']} | "
            f"{low['rejected_per_s']} | {low['p50_ms'] or '–'} | {low['p99_ms'] or '–'} |"
        )
    solo = results["phases"]["solo"]["high"]["p99_ms"]
    shared = results["phases"]["priority"]["high"]["p99_ms"]
    flat = results["phases"]["no_priority"]["high"]["p99_ms"]
    lines += [
        "",
        f"High-priority p99: {solo} ms alone, {shared} ms under the overload with priorities "
        f"({shared / solo:.1f}×), {flat} ms under the same overload without them ({flat / solo:.1f}×).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
