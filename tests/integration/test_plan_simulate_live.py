"""`trb plan simulate` against a real replay: sweep the int8 MiniLM server, replay short traces at it,
and check the simulation of the same traces lands within the stated error.

The bounds are the error bench/bench_simulate.py states (bench/results/simulate.md) with room for
a shorter, unpinned run: here the client, perf_analyzer and the server share the cores unpinned,
and a p99 over ~1000 requests rests on its ~10 slowest. They are ratios, not times, so no figure of
this CPU is in them.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from model_repo_builder.perf.sweep import DEFAULT_PROMPTS, run_sweep
from model_repo_builder.plan.autoscaler import ScalingRule
from model_repo_builder.plan.replay import replay
from model_repo_builder.plan.service import read_curve
from model_repo_builder.plan.simulate import simulate
from model_repo_builder.plan.trace import parse_trace
from model_repo_builder.spec import SweepSpec

pytestmark = pytest.mark.integration

THROUGHPUT_TOLERANCE = 0.25  # relative
P99_FACTOR = 2.5  # simulated p99 within [measured / 2.5, measured × 2.5]
ONE_REPLICA = ScalingRule(min_replicas=1, max_replicas=1, scale_up_queue=5, scale_down_queue=1, window_s=60)


def test_the_simulation_matches_a_real_replay_within_the_stated_error(int8_server, int8_repo, tmp_path: Path):
    run = tmp_path / "run"
    spec = SweepSpec(
        url=int8_server.grpc_url,
        model=int8_repo.name,
        output=run,
        concurrency=(1, 2, 4, 8, 16),
        measurement_interval_ms=500,
    )
    run_sweep(spec)
    curve = read_curve(run)
    rate = max(1, round(0.6 * curve.capacity_rps))
    for text in (f"constant:rate={rate},duration=8", "users:count=8,duration=8"):
        trace = parse_trace([text])
        measured = replay(trace, [int8_server.grpc_url], int8_repo.name, "TEXT", DEFAULT_PROMPTS)
        predicted = simulate(trace, curve, ONE_REPLICA)
        assert measured.failed == 0, measured.failures
        assert predicted.latency is not None
        assert predicted.throughput_rps == pytest.approx(measured.throughput_rps, rel=THROUGHPUT_TOLERANCE), text
        ratio = predicted.latency.p99_ms / measured.p99_ms
        assert abs(math.log(ratio)) <= math.log(P99_FACTOR), (
            f"{text}: simulated p99 {predicted.latency.p99_ms:.1f} ms, measured {measured.p99_ms:.1f} ms"
        )
