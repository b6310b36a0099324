"""Load profiles over time: ramp-up/hold/ramp-down, fixed intervals, soak and stress.

Each profile is a timeline of steps. Ramp, interval and soak steps are perf_analyzer runs whose
measurement windows are sized to the step's duration; stress uses `stress.run_stress`, because
perf_analyzer stops at the first rejected request and stress is about rejections.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from model_repo_builder.errors import SpecError
from model_repo_builder.perf import metrics
from model_repo_builder.perf.stress import run_stress

if TYPE_CHECKING:
    from model_repo_builder.perf.sweep import Sweeper, Target


def _step(
    sweeper: Sweeper, target: Target, mode: str, load: float, seconds: float, label: str, started: float
) -> dict[str, Any]:
    # Three windows of a third of the step each; a huge stability bound makes perf_analyzer stop
    # after exactly three windows, so the step lasts about `seconds`.
    step_start = time.monotonic() - started
    level = sweeper.measure(
        target, mode, load, label, interval_ms=max(100, int(seconds * 1000 / 3)), stability=1000.0, trials=3
    )
    memory = (
        metrics.process_tree_rss_bytes(target.server.pid) if target.server and target.server.pid else None
    )
    return {
        "start_s": round(step_start, 2),
        "load": load,
        "throughput_rps": level["throughput_rps"],
        "p50_ms": level["p50_ms"],
        "p99_ms": level["p99_ms"],
        "errors": level["errors"],
        "server_rss_bytes": memory,
    }


def ramp(sweeper: Sweeper, target: Target, users: int, duration_s: float) -> dict[str, Any]:
    """Ramp up to `users` concurrent clients (30% of the time), hold (50%), ramp down (20%)."""
    up_steps = max(2, min(users, 4))
    plan = [
        (max(1, math.ceil(users * (i + 1) / up_steps)), 0.3 * duration_s / up_steps) for i in range(up_steps)
    ]
    plan.append((users, 0.5 * duration_s))
    plan += [(max(1, users // 2), 0.1 * duration_s), (1, 0.1 * duration_s)]
    started = time.monotonic()
    steps = [_step(sweeper, target, "concurrency", float(c), s, "ramp", started) for c, s in plan]
    hold = steps[up_steps]
    return {
        "name": f"ramp to {users} users, hold, ramp down ({duration_s:g} s)",
        "kind": "ramp",
        "steps": steps,
        "verdict": f"at {users} users: {hold['throughput_rps']:.1f} req/s, p50 {hold['p50_ms']:.1f} ms, "
        f"p99 {hold['p99_ms']:.1f} ms",
    }


def fixed_interval(sweeper: Sweeper, target: Target, interval_s: float, duration_s: float) -> dict[str, Any]:
    """One request every `interval_s` seconds (constant request rate) for `duration_s`."""
    started = time.monotonic()
    step = _step(sweeper, target, "request_rate", 1.0 / interval_s, duration_s, "interval", started)
    return {
        "name": f"one request every {interval_s:g} s",
        "kind": "interval",
        "steps": [step],
        "verdict": f"p50 {step['p50_ms']:.1f} ms, p99 {step['p99_ms']:.1f} ms at a fixed interval",
    }


def soak(sweeper: Sweeper, target: Target, users: int, duration_s: float, windows: int = 6) -> dict[str, Any]:
    """Constant load for `duration_s`, in windows; reports drift of p99 latency and server memory."""
    started = time.monotonic()
    steps = [
        _step(sweeper, target, "concurrency", float(users), duration_s / windows, "soak", started)
        for _ in range(windows)
    ]
    first, last = steps[0], steps[-1]
    drift = (last["p99_ms"] - first["p99_ms"]) / first["p99_ms"] * 100 if first["p99_ms"] else 0.0
    memory = ""
    if first["server_rss_bytes"] and last["server_rss_bytes"]:
        memory = (
            f"; server memory {first['server_rss_bytes'] / 2**20:.0f} → "
            f"{last['server_rss_bytes'] / 2**20:.0f} MiB"
        )
    return {
        "name": f"soak at {users} users for {duration_s:g} s",
        "kind": "soak",
        "steps": steps,
        "p99_drift_pct": round(drift, 1),
        "verdict": f"p99 drifted {drift:+.1f}% from the first to the last window{memory}",
    }


def stress(
    sweeper: Sweeper, target: Target, users: int, duration_s: float, windows: int = 5
) -> dict[str, Any]:
    """Far beyond capacity: does the server shed load (503/UNAVAILABLE) or let latency grow?"""
    url = target.server.grpc_url if target.server else target.url
    if target.server is None and sweeper.spec.protocol != "grpc":
        raise SpecError("the stress profile sends gRPC requests: use `--protocol grpc` with `--url`")
    if len(target.text_inputs) != 1:
        raise SpecError(
            f"the stress profile sends one text input; {target.model} takes {', '.join(target.text_inputs)} "
            "(not yet supported for reranking models)"
        )
    result = run_stress(target.model, url, target.text_inputs[0], sweeper.prompts, users, duration_s)
    steps = []
    width = duration_s / windows
    for index in range(windows):
        inside = [o for o in result.outcomes if index * width <= o.finished_s < (index + 1) * width]
        ok = sorted(o.latency_ms for o in inside if o.status == "ok")
        steps.append(
            {
                "start_s": round(index * width, 2),
                "load": float(users),
                "throughput_rps": len(ok) / width,
                "p50_ms": ok[len(ok) // 2] if ok else None,
                "p99_ms": ok[min(len(ok) - 1, int(len(ok) * 0.99))] if ok else None,
                "errors": len(inside) - len(ok),
            }
        )
    rejected, errors, ok_count = result.count("rejected"), result.count("error"), result.count("ok")
    # A queue that keeps filling moves the median; one scheduling hiccup only moves the tail.
    medians = [s["p50_ms"] for s in steps if s["p50_ms"] is not None]
    growing = len(medians) >= 2 and medians[-1] > 2 * medians[0]
    growth = f"median {medians[0]:.0f} → {medians[-1]:.0f} ms" if medians else ""
    if rejected:
        verdict = (
            f"sheds load: {rejected} of {len(result.outcomes)} requests rejected with 503/UNAVAILABLE "
            f"in a median {result.latency_ms(50, 'rejected'):.0f} ms; served requests p99 "
            f"{result.latency_ms(99):.0f} ms" + (f", and their latency grew ({growth})" if growing else "")
        )
    elif growing:
        verdict = f"latency grows under overload, nothing rejected: {growth}"
    else:
        verdict = f"no rejections and stable latency at {users} users: this was not beyond capacity"
    return {
        "name": f"stress at {users} users for {duration_s:g} s",
        "kind": "stress",
        "steps": steps,
        "ok": ok_count,
        "rejected": rejected,
        "errors": errors,
        "rejected_p50_ms": result.latency_ms(50, "rejected") if rejected else None,
        "verdict": verdict,
    }
