"""Triton's Prometheus endpoint and the server's own memory, sampled during a sweep."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

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


def scrape(metrics_url: str) -> dict[str, float]:
    """Current tracked metrics; empty when the endpoint cannot be reached (metrics are optional)."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=5) as response:
            return parse_prometheus(response.read().decode("utf-8", errors="replace"))
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return {}


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
