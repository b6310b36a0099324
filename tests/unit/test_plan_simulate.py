"""`trb plan simulate`: the simulator against closed-form queueing answers, the autoscaler against the
HPA's rules, traces, the service curve read from a run, the spec and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from model_repo_builder.cli import main
from model_repo_builder.deploy.autoscaling import IN_FLIGHT, POLLING_INTERVAL_S, autoscaling
from model_repo_builder.deploy.plan import read_run
from model_repo_builder.errors import SpecError
from model_repo_builder.plan.autoscaler import Autoscaler, ScalingRule
from model_repo_builder.plan.run import scaling_rule
from model_repo_builder.plan.service import ServiceCurve, ServiceLevel, read_curve
from model_repo_builder.plan.simulate import simulate
from model_repo_builder.plan.spec import SimulateSpec
from model_repo_builder.plan.trace import parse_trace, read_trace_file

MU = 10.0  # completions/s of the textbook servers below


def _level(concurrency: int, throughput: float, queue_depth: float = 0.0) -> ServiceLevel:
    mean_ms = concurrency / throughput * 1000
    return ServiceLevel(
        concurrency=concurrency,
        throughput_rps=throughput,
        queue_depth=queue_depth,
        mean_latency_ms=mean_ms,
        p99_ms=mean_ms,
        work=(1.0,),
    )


def _curve(*levels: ServiceLevel, generates: bool = False) -> ServiceCurve:
    return ServiceCurve(source="test", config="as-built", levels=levels, generates=generates)


SINGLE = _curve(_level(1, MU), _level(2, MU, queue_depth=1.0))  # one server of rate MU
DOUBLE = _curve(_level(1, MU), _level(2, 2 * MU, queue_depth=0.0))  # two servers of rate MU


def _fixed(replicas: int = 1) -> ScalingRule:
    return ScalingRule(
        min_replicas=replicas, max_replicas=replicas, scale_up_queue=5, scale_down_queue=1, window_s=60
    )


def _rule(**overrides: Any) -> ScalingRule:
    settings: dict[str, Any] = {
        "min_replicas": 1,
        "max_replicas": 4,
        "scale_up_queue": 5.0,
        "scale_down_queue": 1.0,
        "window_s": 60.0,
        "startup_s": 30.0,
    }
    return ScalingRule(**{**settings, **overrides})


# --- closed forms -------------------------------------------------------------------------------
# Tolerance: 140,000 requests at utilisation 0.7; the standard error of the mean sojourn over a run
# this long is about 1% (batch means over 20 batches); 5% leaves room without hiding a wrong model
# (M/M/1 and M/D/1-FCFS, for instance, differ by 54% here).
_LONG = "constant:rate=7,duration=20000,arrivals=poisson"


def test_processor_sharing_with_exponential_work_is_mm1() -> None:
    result = simulate(parse_trace([_LONG]), SINGLE, _fixed(), work="exponential", seed=1)
    assert result.latency is not None
    expected_ms = 1000 / (MU - 7)  # M/M/1: 1 / (μ - λ)
    assert result.latency.mean_ms == pytest.approx(expected_ms, rel=0.05)
    assert result.throughput_rps == pytest.approx(7, rel=0.02)


def test_processor_sharing_is_insensitive_to_the_work_distribution() -> None:
    """M/D/1 under processor sharing: E[T] = E[S] / (1 - ρ), as for any service distribution."""
    result = simulate(parse_trace([_LONG]), SINGLE, _fixed(), work="deterministic", seed=2)
    assert result.latency is not None
    assert result.latency.mean_ms == pytest.approx(1000 / MU / (1 - 0.7), rel=0.05)


def test_a_rate_that_doubles_from_two_requests_on_is_mm2() -> None:
    """The load-dependent rate X(1) = μ, X(n ≥ 2) = 2μ is the M/M/2 birth-death chain."""
    trace = parse_trace(["constant:rate=14,duration=20000,arrivals=poisson"])
    result = simulate(trace, DOUBLE, _fixed(), work="exponential", seed=3)
    assert result.latency is not None
    rho = 14 / (2 * MU)
    assert result.latency.mean_ms == pytest.approx(1000 / MU / (1 - rho**2), rel=0.05)


def test_even_arrivals_below_capacity_never_queue() -> None:
    result = simulate(parse_trace(["constant:rate=9,duration=100"]), SINGLE, _fixed(), work="deterministic")
    assert result.latency is not None and result.requests == 900
    assert result.latency.max_ms == pytest.approx(1000 / MU)
    assert result.max_queue_depth == 0
    assert max(point.in_system for point in result.timeline) <= 1


def test_round_robin_splits_the_load_evenly_over_replicas() -> None:
    # 18 req/s on two servers of 10: each sees 9 req/s, every 222 ms, and never queues.
    result = simulate(parse_trace(["constant:rate=18,duration=50"]), SINGLE, _fixed(2), work="deterministic")
    assert result.latency is not None
    assert result.latency.max_ms == pytest.approx(1000 / MU)


def test_closed_loop_users_reproduce_the_measured_level() -> None:
    """With n users and no think time a replica holds n requests: throughput X(n), latency n / X(n)."""
    curve = _curve(_level(1, 40.0), _level(4, 100.0, 1.0), _level(16, 160.0, 9.0))
    for users, throughput in ((1, 40.0), (4, 100.0), (16, 160.0)):
        trace = parse_trace([f"users:count={users},duration=200"])
        result = simulate(trace, curve, _fixed(), seed=users)
        assert result.latency is not None
        assert result.throughput_rps == pytest.approx(throughput, rel=0.02)
        assert result.latency.mean_ms == pytest.approx(users / throughput * 1000, rel=0.02)


def test_the_same_seed_gives_the_same_result_and_another_seed_another() -> None:
    trace = parse_trace(["constant:rate=8,duration=300,arrivals=poisson"])
    first, again = (simulate(trace, SINGLE, _fixed(), work="exponential", seed=5) for _ in range(2))
    other = simulate(trace, SINGLE, _fixed(), work="exponential", seed=6)
    assert np.array_equal(first.latencies_ms, again.latencies_ms)
    assert not np.array_equal(first.latencies_ms, other.latencies_ms)


# --- the service curve ----------------------------------------------------------------------------


def test_the_rate_is_interpolated_from_zero_and_flat_past_the_last_level() -> None:
    curve = _curve(_level(2, 40.0), _level(8, 100.0, 2.0))
    assert curve.rate(1) == pytest.approx(20.0)
    assert curve.rate(4) == pytest.approx(60.0)
    assert curve.rate(50) == pytest.approx(100.0)
    # Every request past the last level waits.
    assert curve.queue_depth(10) == pytest.approx(4.0)
    # A level measured below a lower one's throughput does not make more requests complete slower.
    dip = _curve(_level(1, 50.0), _level(2, 90.0), _level(4, 70.0), _level(8, 120.0), _level(16, 60.0))
    assert [dip.rate(n) for n in (2, 3, 4, 6, 8, 16, 64)] == pytest.approx([90, 90, 90, 105, 120, 120, 120])


def _run_folder(
    path: Path, loads: tuple[int, ...] = (1, 4, 8), replicas: int | None = 3, generation: bool = False
) -> Path:
    rng = np.random.default_rng(0)
    levels = []
    for load in loads:
        throughput = 50.0 * load / (1 + load / 4)
        latencies = list(rng.gamma(8.0, load / throughput * 1000 / 8, size=400))
        levels.append(
            {
                "mode": "concurrency",
                "load": float(load),
                "throughput_rps": throughput,
                "p50_ms": float(np.percentile(latencies, 50)),
                "p99_ms": float(np.percentile(latencies, 99)),
                "avg_ms": float(np.mean(latencies)),
                "breakdown": {"server_queue_ms": 2.0 * load},
                "latencies_ms": latencies,
            }
        )
    knee = levels[min(1, len(levels) - 1)]
    results = {
        "model": "minilm",
        "slo": None,
        "best_config": "as-built",
        "configs": [
            {
                "name": "as-built",
                "settings": {},
                "levels": levels,
                "knee": {"found": True, "load": knee["load"], "throughput_rps": knee["throughput_rps"]},
                "capacity": {"met": True, "throughput_rps": knee["throughput_rps"], "load": knee["load"]},
            }
        ],
        "plan": {"target_qps": 200.0, "replicas": replicas} if replicas else None,
        "summary": "",
    }
    if generation:  # what `trb sweep` adds for a text-generation model
        results["generation"] = {"tokens_per_request": 64.0}
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps(results), encoding="utf-8")
    return path


def test_a_run_gives_the_curve_its_queue_depths_and_latency_shapes(tmp_path: Path) -> None:
    curve = read_curve(_run_folder(tmp_path / "run"))
    assert [level.concurrency for level in curve.levels] == [1, 4, 8]
    four = curve.levels[1]
    assert four.throughput_rps == pytest.approx(100.0)
    assert four.queue_depth == pytest.approx(100.0 * 0.008)  # Little: X × server queue time
    assert np.mean(four.work) == pytest.approx(1.0)
    assert max(four.work) > 1.2  # the shape of the measured latencies, not a constant


def test_a_run_without_a_curve_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="needs a curve"):
        read_curve(_run_folder(tmp_path / "run", loads=(4,)))
    with pytest.raises(SpecError, match="no configuration 'other'"):
        read_curve(_run_folder(tmp_path / "run2"), config="other")


def test_autoscaling_comes_from_the_run_as_trb_deploy_k8s_takes_it(tmp_path: Path) -> None:
    run = _run_folder(tmp_path / "run")
    spec = SimulateSpec(run=run, traces=("constant:rate=10,duration=10",))
    rule, basis = scaling_rule(spec)
    rendered = autoscaling(spec, read_run(run))  # what `trb deploy k8s --plan` resolves
    # 100 req/s × 8 ms queue time = 0.8 waiting at the knee, raised above the scale-down depth 1.
    assert rule.scale_up_queue == rendered.scale_up_queue == 2
    assert rule.max_replicas == rendered.max_replicas == 3
    assert rule.min_replicas == 1 and rule.polling_s == POLLING_INTERVAL_S
    assert basis == rendered.basis


def test_a_generation_run_scales_on_requests_in_flight_at_its_knee_concurrency(tmp_path: Path) -> None:
    run = _run_folder(tmp_path / "run", generation=True)
    assert read_curve(run).generates and not read_curve(_run_folder(tmp_path / "encoder")).generates
    spec = SimulateSpec(run=run, traces=("constant:rate=10,duration=10",))
    rule, basis = scaling_rule(spec)
    rendered = autoscaling(spec, read_run(run), metric=IN_FLIGHT)  # what `trb deploy k8s --plan` resolves
    # The knee is at concurrency 4: a replica holding 4 requests still bought throughput.
    assert rule.metric == rendered.metric == IN_FLIGHT
    assert rule.scale_up_queue == rendered.scale_up_queue == 4
    assert basis == rendered.basis and "concurrency 4" in basis[0]
    assert "requests in flight 4 per replica" in rule.describe()
    given = scaling_rule(SimulateSpec(run=run, traces=spec.traces, scale_up_queue=6, max_replicas=5))[0]
    assert (given.metric, given.scale_up_queue) == (IN_FLIGHT, 6)  # the run still says what it measured


# A continuous-batching replica as bench/results/simulate.md measured it: throughput grows to 32
# requests in the replica and nothing ever waits in Triton's queue.
CONTINUOUS = _curve(_level(1, 1.7), _level(8, 6.4), _level(16, 7.4), _level(32, 8.9), generates=True)


def test_a_continuous_batching_replica_scales_on_requests_in_flight_where_queue_depth_never_moves() -> None:
    trace = parse_trace(["users:count=20,duration=600"])
    queue_rule = _rule(max_replicas=8, scale_up_queue=2.0)
    in_flight_rule = _rule(max_replicas=8, scale_up_queue=8.0, metric=IN_FLIGHT)
    by_queue = simulate(trace, CONTINUOUS, queue_rule, seed=4)
    by_in_flight = simulate(trace, CONTINUOUS, in_flight_rule, seed=4)
    assert by_queue.replicas_max == 1 and not by_queue.scaling
    # 20 users hold 20 requests from t = 0: ceil(20 / 8) = 3 replicas once the polls of a whole
    # window (-15 s, 45 s] agreed.
    first = by_in_flight.scaling[0]
    assert (first.t_s, first.replicas_from, first.replicas_to, first.metric) == (45.0, 1, 3, 20.0)
    assert first.queue_depth == 0.0
    assert by_in_flight.replicas_max == 3
    assert by_in_flight.throughput_rps > 1.5 * by_queue.throughput_rps
    assert by_in_flight.latency is not None and by_queue.latency is not None
    assert by_in_flight.latency.p50_ms < by_queue.latency.p50_ms


# --- the autoscaler -------------------------------------------------------------------------------


def _decisions(scaler: Autoscaler, depths: list[float], replicas: int) -> list[int]:
    """Poll every 15 s from t = 0, applying each decision at once."""
    out = []
    for index, depth in enumerate(depths):
        replicas = scaler.decide(index * 15.0, depth, replicas)
        out.append(replicas)
    return out


def test_scale_up_waits_until_every_poll_of_a_window_wanted_it_and_down_likewise() -> None:
    scaler = Autoscaler(_rule())
    high = _decisions(scaler, [12.0] * 4, 1)  # polls at 0, 15, 30, 45
    # Polls before t = 0 saw the idle minimum; at 45 s the window (-15 s, 45 s] holds only 12s.
    assert high == [1, 1, 1, 3]
    low = [scaler.decide(t, 0.0, 3) for t in (60.0, 75.0, 90.0, 105.0)]
    # The last high recommendation (45 s) leaves the window at 105 s.
    assert low == [3, 3, 3, 1]


def test_a_depth_within_the_tolerance_keeps_the_count() -> None:
    scaler = Autoscaler(_rule(window_s=0.0))
    assert scaler.decide(0.0, 10.9, 2) == 2  # 10.9 / (2 × 5) = 1.09, within 10%
    assert scaler.decide(15.0, 11.5, 2) == 3


def test_scale_up_is_limited_to_double_or_four_more_per_poll() -> None:
    scaler = Autoscaler(_rule(window_s=0.0, max_replicas=20))
    assert scaler.decide(0.0, 500.0, 1) == 5
    assert scaler.decide(15.0, 500.0, 5) == 10
    assert scaler.decide(30.0, 500.0, 10) == 20


def test_from_zero_the_activation_threshold_wakes_one_replica_and_inactivity_returns_to_zero() -> None:
    scaler = Autoscaler(_rule(min_replicas=0))
    assert scaler.decide(0.0, 0.5, 0) == 0
    assert scaler.decide(15.0, 2.0, 0) == 1
    assert [scaler.decide(t, 0.0, 1) for t in (30.0, 45.0, 60.0, 75.0)] == [1, 1, 1, 0]


def test_the_simulated_deployment_scales_up_a_window_after_the_queue_built_and_pays_for_startup() -> None:
    trace = parse_trace(["constant:rate=30,duration=240"])
    result = simulate(trace, SINGLE, _rule(), work="deterministic", cost_per_hour=3.6)
    first = result.scaling[0]
    # t = 0 sees one request; from 15 s every poll sees the backlog; 45 s later the window agrees.
    assert (first.t_s, first.replicas_from, first.replicas_to) == (60.0, 1, 4)
    ready_at = 60.0 + 30.0
    assert all(p.ready == 1 for p in result.timeline if p.t_s < ready_at)
    assert all(p.ready == 4 for p in result.timeline if ready_at <= p.t_s <= 240)
    # Replicas are paid from the moment they are asked for: 4 from 60 s, until they drain.
    assert result.replica_seconds >= 60 + 4 * (240 - 60)
    assert result.cost_usd == pytest.approx(3.6 * result.replica_seconds / 3600)
    assert result.completed == result.requests == 7200


# --- traces ---------------------------------------------------------------------------------------


def test_open_loop_segments_send_what_their_rate_says() -> None:
    rng = np.random.default_rng(0)
    constant = parse_trace(["constant:rate=50,duration=60"]).open_arrivals(rng)
    assert len(constant) == 3000 and np.allclose(np.diff(constant), 0.02)
    ramp = parse_trace(["ramp:from=0,to=100,duration=1m"]).open_arrivals(rng)
    assert len(ramp) == 3000
    assert np.sum(ramp < 30) == 750  # a linear ramp sends a quarter in its first half
    wallaroo = parse_trace(["interval:every=15s,duration=40m"]).open_arrivals(rng)
    assert len(wallaroo) == 160 and np.allclose(np.diff(wallaroo), 15)
    bursts = parse_trace(["interval:every=500ms,duration=2,requests=10"]).open_arrivals(rng)
    assert list(np.unique(bursts)) == [0.0, 0.5, 1.0, 1.5] and len(bursts) == 40
    poisson = parse_trace(["constant:rate=100,duration=100,arrivals=poisson"]).open_arrivals(rng)
    assert len(poisson) == pytest.approx(10000, rel=0.05)
    both = parse_trace(["constant:rate=10,duration=10", "constant:rate=20,duration=10"]).open_arrivals(rng)
    assert len(both) == 300 and np.sum(both >= 10) == 200


def test_the_seed_flan_t5_load_ramps_users_up_holds_and_down() -> None:
    trace = parse_trace(
        ["users:from=0,to=20,duration=3m", "users:count=20,duration=5m", "users:from=20,to=0,duration=2m"]
    )
    changes = trace.user_changes()
    ups = [c for c in changes if c.at_s <= 180]
    assert [c.users for c in ups] == list(range(1, 21))
    assert ups[0].at_s == 0 and ups[-1].at_s == pytest.approx(171)
    downs = [c for c in changes if c.at_s > 180]
    assert downs[0].at_s == pytest.approx(486) and downs[-1].at_s == pytest.approx(600)
    assert downs[-1].users == 0 and trace.duration_s == 600


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("poisson:rate=5,duration=10", "must start with one of constant:"),
        ("constant:rate=5", "constant needs duration"),
        ("constant:rate=5,duration=10,burst=3", "unknown key 'burst'; constant takes"),
        ("constant:rate=fast,duration=10", "`--trace constant rate` must be a number"),
        ("constant:rate=0,duration=10", "rate must be > 0"),
        ("constant:rate=5,duration=10min", "must be a duration such as"),
        ("constant:rate=5,duration=10,arrivals=bursty", "arrivals must be one of even, poisson"),
        ("ramp:from=0,to=0,duration=10", "nothing would be sent"),
        ("interval:every=0,duration=10", "every must be > 0"),
        ("users:count=3,from=1,to=4,duration=10", "not both"),
        ("users:from=2,duration=10", "needs count, or from and to"),
        ("users:count=2.5,duration=10", "whole number"),
        ("constant:rate=5,rate=6,duration=10", "rate given twice"),
        ("constant:rate=100000,duration=1h", "more than the 5,000,000"),
    ],
)
def test_bad_trace_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(SpecError, match=message.replace("(", r"\(")):
        parse_trace([spec])


def test_a_recorded_log_is_read_relative_to_its_first_request(tmp_path: Path) -> None:
    log = tmp_path / "requests.log"
    log.write_text("timestamp,path\n# comment\n1700000010.5,/a\n1700000010.0,/b\n\n1700000012.0 /c\n")
    assert read_trace_file(log).recorded == (0.0, 0.5, 2.0)
    iso = tmp_path / "iso.log"
    iso.write_text("2026-01-01T10:00:00Z\n2026-01-01T10:00:01.250+00:00\n")
    assert read_trace_file(iso).recorded == (0.0, 1.25)
    bad = tmp_path / "bad.log"
    bad.write_text("1.0\n2.0\nyesterday\n")
    with pytest.raises(SpecError, match="line 3: 'yesterday'"):
        read_trace_file(bad)
    empty = tmp_path / "empty.log"
    empty.write_text("# nothing\n")
    with pytest.raises(SpecError, match="holds no request times"):
        read_trace_file(empty)


# --- the spec and the command ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "as one or more `--trace` specs or as `--trace-file`"),
        ({"traces": ("constant:rate=1,duration=1",), "trace_file": Path("x")}, "not both"),
        ({"traces": ("constant:rate=1,duration=1",), "replicas": 0}, "`--replicas` must be an integer ≥ 1"),
        (
            {"traces": ("constant:rate=1,duration=1",), "replicas": 2, "max_replicas": 3},
            "takes no autoscaling",
        ),
        (
            {"traces": ("constant:rate=1,duration=1",), "min_replicas": 3, "max_replicas": 2},
            "`--max-replicas`",
        ),
        ({"traces": ("constant:rate=1,duration=1",), "scale_up_queue": 1, "scale_down_queue": 2}, "above"),
        ({"traces": ("constant:rate=1,duration=1",), "startup_s": -1}, "`--startup` must be ≥ 0"),
        ({"traces": ("constant:rate=1,duration=1",), "cost_per_hour": math.nan}, "`--cost-per-hour`"),
    ],
)
def test_bad_flags_fail_naming_the_flag(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message.replace("(", r"\(")):
        SimulateSpec(run=Path("run"), **fields)


def test_the_command_prints_the_plan_and_writes_json_and_png(tmp_path: Path) -> None:
    run = _run_folder(tmp_path / "run")
    output = tmp_path / "sim"
    answer = CliRunner().invoke(
        main,
        [
            "plan", "simulate", str(run), "--trace", "ramp:from=10,to=300,duration=2m",
            "--trace", "constant:rate=20,duration=2m", "--cost-per-hour", "2", "--startup", "10",
            "--output", str(output),
        ],
    )  # fmt: skip
    assert answer.exit_code == 0, answer.output
    assert "latency p99" in answer.output and "cost" in answer.output
    document = json.loads((output / "simulation.json").read_text())
    result = document["result"]
    assert result["replicas_max"] > 1  # 300 req/s is beyond one replica's 133
    assert [event["replicas_to"] for event in result["scaling"]][-1] == 1  # and back once it passed
    assert (output / "simulation.png").read_bytes()[:4] == b"\x89PNG"
    assert document["autoscaling"]["max_replicas"] == 3


def test_the_command_refuses_a_bad_trace_with_exit_2(tmp_path: Path) -> None:
    run = _run_folder(tmp_path / "run")
    answer = CliRunner().invoke(main, ["plan", "simulate", str(run), "--trace", "constant:rate=5"])
    assert answer.exit_code == 2
    assert "constant needs duration" in answer.output
