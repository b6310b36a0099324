"""`trb plan simulate` against a real replay: sweep the int8 MiniLM server, replay short traces at it,
and check the simulation of the same traces lands within the stated error.

The repository is the int8 default built with an unbounded queue: with the default bounded queue,
Triton 2.51's batcher stalls up to 500 ms in a closed loop (not in an open one), so a closed-loop
curve describes the stall rather than the service (bench/bench_simulate.py's docstring).

The bounds are the error bench/bench_simulate.py states (bench/results/simulate.md) with room for
a shorter, unpinned run: here the client, perf_analyzer and the server share the cores unpinned,
and a p99 over ~1000 requests rests on its ~10 slowest. They are ratios, not times, so no figure of
this CPU is in them.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from conftest import DEFAULT_SOURCE, running_server

from model_repo_builder.build import build
from model_repo_builder.perf.sweep import DEFAULT_PROMPTS, run_sweep
from model_repo_builder.plan.autoscaler import ScalingRule
from model_repo_builder.plan.replay import replay
from model_repo_builder.plan.service import read_curve
from model_repo_builder.plan.simulate import simulate
from model_repo_builder.plan.trace import parse_trace
from model_repo_builder.spec import BuildSpec, SweepSpec

pytestmark = pytest.mark.integration

# bench/results/simulate.md (30 s traces, 1 and 2 pinned replicas): throughput off by at most 19%, mean
# latency by at most 37%, p99 by up to a factor 3.8 (the simulation below: rare stalls set the tail).
THROUGHPUT_TOLERANCE = 0.25  # relative
MEAN_FACTOR = 2.0  # simulated mean within [measured / 2, measured × 2]: a few-ms service time here
P99_FACTOR = 4.0  # simulated p99 within [measured / 4, measured × 4]
ONE_REPLICA = ScalingRule(min_replicas=1, max_replicas=1, scale_up_queue=5, scale_down_queue=1, window_s=60)


def test_the_simulation_matches_a_real_replay_within_the_stated_error(tmp_path: Path) -> None:
    name = "minilm-unbounded"
    spec = BuildSpec(
        source=DEFAULT_SOURCE, output=tmp_path / "repos", precision="int8", name=name, max_queue_size=0
    )
    repository = build(spec).repository
    run = tmp_path / "run"
    with running_server(repository) as server:
        run_sweep(
            SweepSpec(
                url=server.grpc_url,
                model=name,
                output=run,
                concurrency=(1, 2, 4, 8, 16),
                measurement_interval_ms=500,
            )
        )
        curve = read_curve(run)
        # 40% of what perf_analyzer measured: unpinned, the Python replay client takes a share of the
        # server's cores that the sweep's perf_analyzer did not, and the simulation does not charge it
        # (at 60% one run here measured a backlog: mean 595 ms against 7 ms simulated).
        rate = max(1, round(0.4 * curve.capacity_rps))
        traces = [
            parse_trace([text]) for text in (f"constant:rate={rate},duration=8", "users:count=8,duration=8")
        ]
        replays = [replay(trace, [server.grpc_url], name, "TEXT", DEFAULT_PROMPTS) for trace in traces]
    for trace, measured in zip(traces, replays, strict=True):
        text = trace.description
        predicted = simulate(trace, curve, ONE_REPLICA)
        assert measured.failed == 0, measured.failures
        assert predicted.latency is not None
        assert predicted.throughput_rps == pytest.approx(measured.throughput_rps, rel=THROUGHPUT_TOLERANCE), (
            text
        )
        mean_ratio = predicted.latency.mean_ms / measured.mean_ms
        assert abs(math.log(mean_ratio)) <= math.log(MEAN_FACTOR), (
            f"{text}: simulated mean {predicted.latency.mean_ms:.1f} ms, measured {measured.mean_ms:.1f} ms"
        )
        ratio = predicted.latency.p99_ms / measured.p99_ms
        assert abs(math.log(ratio)) <= math.log(P99_FACTOR), (
            f"{text}: simulated p99 {predicted.latency.p99_ms:.1f} ms, measured {measured.p99_ms:.1f} ms"
        )
