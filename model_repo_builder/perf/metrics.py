"""Triton's Prometheus endpoint and the server's own memory, sampled during a sweep."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from model_repo_builder.templates.common.trb_runtime import (
    ANSWERED_METRIC,
    COMPUTE_DURATION_METRIC,
    QUEUE_DURATION_METRIC,
)

PENDING_METRIC = "nv_inference_pending_request_count"  # requests in Triton's queue, per model
# Cumulative counters (a sweep reports their increase); the other tracked metrics are gauges.
COUNTERS = frozenset(
    {
        "nv_inference_request_success",
        "nv_inference_request_failure",
        "nv_inference_count",
        "nv_inference_exec_count",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_input_duration_us",
        "nv_inference_compute_infer_duration_us",
        "nv_inference_compute_output_duration_us",
    }
)
# Counters and gauges worth keeping: queue and compute time, request outcomes, CPU/GPU use and memory.
TRACKED = (
    *sorted(COUNTERS),
    "nv_cpu_utilization",
    "nv_cpu_memory_used_bytes",
    "nv_gpu_utilization",
    "nv_gpu_memory_used_bytes",
)


def parse_prometheus(text: str) -> dict[str, float]:
    """Sum each tracked metric over its label sets (models, GPUs) from Prometheus text format."""
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in TRACKED:
            try:
                totals[name] = totals.get(name, 0.0) + float(line.rsplit(" ", 1)[-1])
            except ValueError:
                continue
    return totals


def fetch(metrics_url: str) -> str | None:
    """The endpoint's Prometheus text now; None when it cannot be reached (metrics are optional)."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=5) as response:
            return response.read().decode("utf-8", errors="replace")
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def sum_by_model(text: str, names: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Each of `names`' values per model (summed over its other labels, e.g. instances) in a scrape."""
    found: dict[str, dict[str, float]] = {name: {} for name in names}
    for line in text.splitlines():
        name, _, rest = line.partition("{")
        if name in found and 'model="' in rest:
            model = rest.split('model="', 1)[1].split('"', 1)[0]
            found[name][model] = found[name].get(model, 0.0) + float(line.rsplit(" ", 1)[-1])
    return found


def scrape(metrics_url: str) -> dict[str, float]:
    """Current tracked metrics; empty when the endpoint cannot be reached."""
    text = fetch(metrics_url)
    return {} if text is None else parse_prometheus(text)


# trb's own queue in the encoder templates (templates/common/trb_runtime.py): a request that goes
# through it waits there, not in Triton's queue, and is computed by a worker after execute() returned,
# so Triton's queue and compute durations miss both. Per instance, cumulative.


@dataclass(frozen=True, kw_only=True)
class AdmissionTimes:
    """A model's trb admission counters, summed over its instances."""

    queue_us: float = 0.0
    compute_us: float = 0.0
    answered: float = 0.0

    def since(self, before: AdmissionTimes) -> AdmissionTimes:
        """The increase from `before` to these counts."""
        return AdmissionTimes(
            queue_us=self.queue_us - before.queue_us,
            compute_us=self.compute_us - before.compute_us,
            answered=self.answered - before.answered,
        )

    def added_to(self, breakdown: dict[str, float]) -> dict[str, float]:
        """perf_analyzer's breakdown with trb's queue and compute time per request moved into the server.

        perf_analyzer counts the time between execute() admitting a request and its response as
        network and server-send time; it was trb's queue and trb's compute.
        """
        if self.answered <= 0:
            return breakdown
        queue_ms = self.queue_us / self.answered / 1000
        compute_ms = self.compute_us / self.answered / 1000
        moved = min(queue_ms + compute_ms, breakdown["network_ms"])
        scale = moved / (queue_ms + compute_ms) if queue_ms + compute_ms > 0 else 0.0
        return {
            **breakdown,
            "network_ms": breakdown["network_ms"] - moved,
            "server_queue_ms": breakdown["server_queue_ms"] + queue_ms * scale,
            "server_compute_infer_ms": breakdown["server_compute_infer_ms"] + compute_ms * scale,
        }


def admission_times(metrics_url: str, model: str) -> AdmissionTimes | None:
    """`model`'s trb admission counters now; None when it has none (not an admission model, no metrics)."""
    text = fetch(metrics_url)
    if text is None:
        return None
    found = sum_by_model(text, (QUEUE_DURATION_METRIC, COMPUTE_DURATION_METRIC, ANSWERED_METRIC))
    if not any(model in values for values in found.values()):
        return None
    return AdmissionTimes(
        queue_us=found[QUEUE_DURATION_METRIC].get(model, 0.0),
        compute_us=found[COMPUTE_DURATION_METRIC].get(model, 0.0),
        answered=found[ANSWERED_METRIC].get(model, 0.0),
    )


def process_tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants (tritonserver plus its backend stubs)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            status = (entry / "status").read_text()
        except OSError:
            continue
        child = int(entry.name)
        children.setdefault(int(fields[1]), []).append(child)
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss[child] = int(line.split()[1]) * 1024
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        total += rss.get(current, 0)
        stack.extend(children.get(current, []))
    return total if os.path.exists(f"/proc/{pid}") else 0
