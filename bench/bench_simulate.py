"""Validate `trb plan simulate` against real replays: simulated vs measured p99 and throughput.

One run, on the int8 MiniLM repository (`trb build all-minilm-l6-v2 --precision int8`, built with
`--threads-per-instance 1 --max-queue-size 0`):

Why the unbounded queue: with trb's default bounded queue, Triton 2.51's dynamic batcher does not
prefetch and, once every closed-loop client waits in its queue, nothing wakes it before its 500 ms
timeout (`repository/config.py`, bench/results/queue.md). A first run of this benchmark on the
default build measured p99 ≈ 520-610 ms at concurrency 4-16 against 12-26 ms at 1-2, and a
throughput that fell from 157 to 60 req/s at 32: the closed-loop curve then describes that stall,
which open-loop traffic (arrivals keep waking the batcher) does not meet — it measured p99 26 ms at
110 req/s where a simulation of that curve predicted a collapse. A service curve for the
simulation must come from a server whose closed loop behaves as its open loop does.

1. One replica is one core: tritonserver (and its python-backend stubs) pinned to core 0 by CPU
   affinity, as a Kubernetes pod with a 1-CPU limit. `trb sweep --url` measures its concurrency curve
   with perf_analyzer pinned to core 1, giving the run folder the simulation reads.
2. Each trace is replayed against that replica with a client that sends at the trace's timestamps
   (open loop: gRPC async requests from one scheduling thread; users: one thread per user), then
   against two replicas side by side — core 0 and core 1 — with the client sending round-robin.
   On this 2-core machine two replicas of one core each are what the machine really has; the
   simulation is given exactly that: the one-core curve, twice. The client then shares the cores
   with the replicas (with one replica it has core 1 to itself): its cost is part of the error.
3. The simulation plays the same traces (same arrival times) with 1 and 2 fixed replicas.
4. Part two: the shared seed's flan-t5 load (3 min ramp to 20 users, 5 min hold, 2 min down) on the
   measured curve of the flan-t5-small architecture (random weights, fp32, trb's default build; one
   replica = this 2-core machine), through the autoscaling `trb deploy k8s --plan` renders — on
   requests in flight, as it does for generation repositories — and, beside it, the same run's
   queue-depth rule, which continuous batching keeps from ever scaling.

Results: bench/results/simulate.json and bench/results/simulate.md; scratch under bench/work/simulate/.

    python bench/bench_simulate.py            # about 9 minutes on 2 cores
    python bench/bench_simulate.py --reuse    # reuse the builds and the sweep runs of an earlier run
    python bench/bench_simulate.py --part flan   # part two only (about 5 minutes)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from common import built_repository, launch, load_average, machine_info

from model_repo_builder.deploy.autoscaling import QUEUE_DEPTH, autoscaling
from model_repo_builder.deploy.plan import read_run
from model_repo_builder.perf.sweep import DEFAULT_PROMPTS, run_sweep
from model_repo_builder.plan.autoscaler import ScalingRule
from model_repo_builder.plan.replay import replay
from model_repo_builder.plan.run import scaling_rule
from model_repo_builder.plan.service import read_curve
from model_repo_builder.plan.simulate import simulate
from model_repo_builder.plan.spec import SimulateSpec
from model_repo_builder.plan.trace import Trace, parse_trace
from model_repo_builder.runtime.server import TritonServer
from model_repo_builder.spec import BuildSpec, SweepSpec

LOGGER = logging.getLogger("bench_simulate")
ROOT = Path(__file__).resolve().parent
WORK = ROOT / "work" / "simulate"
RESULTS = ROOT / "results"
MODEL = "minilm-int8"
INPUT = "TEXT"
SEED = 0
CONCURRENCY = (1, 2, 4, 8, 16, 32)
FLAN_CONCURRENCY = (1, 2, 4, 8, 16, 24, 32)
FLAN_LOAD = ("users:from=0,to=20,duration=3m", "users:count=20,duration=5m", "users:from=20,to=0,duration=2m")
# An illustrative price for one 2-vCPU replica (about an on-demand c7i.large); say which when quoting.
COST_PER_HOUR = 0.09


@contextlib.contextmanager
def affinity(cores: set[int]) -> Iterator[None]:
    """Run the block (and every process it starts) on `cores` only."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def pinned_server(repository: Path, core: int) -> TritonServer:
    server = launch(repository)
    with affinity({core}):
        server.start()
        server.wait_ready()
    return server


def traces(capacity: float) -> dict[str, Trace]:
    """The replayed loads, sized to one replica's measured capacity."""
    rate = round(0.7 * capacity)
    burst = round(0.5 * capacity)
    return {
        "constant": parse_trace([f"constant:rate={rate},duration=30"]),
        "bursts": parse_trace([f"interval:every=1s,requests={burst},duration=30"]),
        "users": parse_trace(["users:from=1,to=16,duration=15", "users:count=16,duration=15"]),
    }


def simulated(run: Path, trace: Trace, replicas: int) -> dict[str, Any]:
    rule, _ = scaling_rule(SimulateSpec(run=run, traces=("constant:rate=1,duration=1",), replicas=replicas))
    result = simulate(trace, read_curve(run), rule, seed=SEED)
    latency = result.latency
    assert latency is not None
    return {
        "requests": result.requests,
        "throughput_rps": result.throughput_rps,
        "p50_ms": latency.p50_ms,
        "p90_ms": latency.p90_ms,
        "p99_ms": latency.p99_ms,
        "mean_ms": latency.mean_ms,
    }


def error_pct(simulated_value: float, measured_value: float) -> float:
    return (simulated_value - measured_value) / measured_value * 100


def validate(args: argparse.Namespace) -> dict[str, Any]:
    repository = built_repository(
        BuildSpec(
            source="all-minilm-l6-v2",
            precision="int8",
            name=MODEL,
            output=WORK / "repos-1thread-unbounded",
            threads_per_instance=1,
            max_queue_size=0,
        ),
        args.reuse,
    )
    run = WORK / "runs" / "minilm-int8-core0-unbounded"
    servers = [pinned_server(repository, 0)]
    try:
        if not (args.reuse and (run / "results.json").is_file()):
            with affinity({1}):
                run_sweep(
                    SweepSpec(
                        url=servers[0].grpc_url,
                        model=MODEL,
                        output=run,
                        concurrency=CONCURRENCY,
                        protocol="grpc",
                    )
                )
        curve = read_curve(run)
        LOGGER.info("one replica (one core): %.0f req/s at most", curve.capacity_rps)
        loads = traces(curve.capacity_rps)
        rows = []
        for replicas in (1, 2):
            if replicas == 2:
                servers.append(pinned_server(repository, 1))
            for name, trace in loads.items():
                urls = [server.grpc_url for server in servers]
                with affinity({1}) if replicas == 1 else contextlib.nullcontext():
                    measured = vars(replay(trace, urls, MODEL, INPUT, DEFAULT_PROMPTS, seed=SEED))
                predicted = simulated(run, trace, replicas)
                row = {
                    "trace": name,
                    "spec": trace.description,
                    "replicas": replicas,
                    "measured": measured,
                    "simulated": predicted,
                    "error_pct": {
                        key: error_pct(predicted[key], measured[key])
                        for key in ("throughput_rps", "p50_ms", "p99_ms", "mean_ms")
                    },
                    "load_average": load_average(),
                }
                LOGGER.info(
                    "%s × %d: throughput %.1f vs %.1f req/s, p99 %.1f vs %.1f ms (simulated vs measured)",
                    name,
                    replicas,
                    predicted["throughput_rps"],
                    measured["throughput_rps"],
                    predicted["p99_ms"],
                    measured["p99_ms"],
                )
                rows.append(row)
    finally:
        for server in servers:
            server.stop()
    return {"run": str(run.relative_to(ROOT.parent)), "service": curve.as_dict(), "rows": rows}


def flan(args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT.parent / "tests"))
    from seq2seq_fixtures import FLAN_T5_SMALL, write_t5

    source = WORK / "flan-t5-small-arch"
    if not (source / "model.safetensors").is_file():
        write_t5(source, FLAN_T5_SMALL)
    repository = built_repository(
        BuildSpec(source=str(source), name="flan", output=WORK / "repos"), args.reuse
    )
    run = WORK / "runs" / "flan"
    if not (args.reuse and (run / "results.json").is_file()):
        run_sweep(
            SweepSpec(
                repository=repository,
                output=run,
                concurrency=FLAN_CONCURRENCY,
                measurement_interval_ms=3000,
                target_qps=None,
            )
        )
    curve = read_curve(run)
    trace = parse_trace(FLAN_LOAD)
    outcomes = {}
    for label, options, metric in (
        ("1 replica", {"replicas": 1}, None),
        ("4 replicas (the seed's split)", {"replicas": 4}, None),
        (
            "autoscaled 1-8 on queue depth (the rule before; --plan, --max-replicas 8)",
            {"max_replicas": 8},
            QUEUE_DEPTH,
        ),
        (
            "autoscaled 1-8 on requests in flight, no --plan (the default: decode width 32)",
            {"max_replicas": 8, "scale_up_queue": 32.0},
            None,
        ),
        (
            "autoscaled 1-8 on requests in flight (trb deploy k8s --plan, --max-replicas 8)",
            {"max_replicas": 8},
            None,
        ),
    ):
        spec = SimulateSpec(run=run, traces=FLAN_LOAD, cost_per_hour=COST_PER_HOUR, **options)  # type: ignore[arg-type]
        if metric is None:
            rule, basis = scaling_rule(spec)  # what `trb plan simulate` and `trb deploy k8s` use
        else:  # the queue-depth rule trb rendered for every repository before
            scaling = autoscaling(spec, read_run(run), metric=metric)
            rule, basis = ScalingRule.from_autoscaling(scaling, spec.startup_s, spec.polling_s), scaling.basis
        result = simulate(trace, curve, rule, seed=SEED, cost_per_hour=COST_PER_HOUR)
        latency = result.latency
        assert latency is not None
        hold = [p for p in result.timeline if 240 <= p.t_s <= 480]
        outcomes[label] = {
            "rule": rule.describe(),
            "metric": rule.metric,
            "scale_up": rule.scale_up_queue,
            "basis": list(basis),
            "requests": result.requests,
            "throughput_rps": result.throughput_rps,
            "hold_rps": float(np.mean([p.completed_rps for p in hold])),
            "p50_ms": latency.p50_ms,
            "p99_ms": latency.p99_ms,
            "replicas_max": result.replicas_max,
            "replicas_mean": result.replicas_mean,
            "replica_hours": result.replica_seconds / 3600,
            "cost_usd": result.cost_usd,
            "cost_per_million_usd": result.cost_per_million_usd,
            "scaling": [vars(event) for event in result.scaling],
        }
        LOGGER.info("flan %s: %s", label, outcomes[label])
    generation = json.loads((run / "results.json").read_text(encoding="utf-8")).get("generation") or {}
    return {
        "run": str(run.relative_to(ROOT.parent)),
        "service": curve.as_dict(),
        "tokens_per_request": generation.get("tokens_per_request"),
        "load": list(FLAN_LOAD),
        "knee_load": read_run(run).knee_load,
        "cost_per_hour": COST_PER_HOUR,
        "outcomes": outcomes,
    }


def markdown(results: dict[str, Any]) -> str:
    machine = results["machine"]
    lines = [
        "# trb plan simulate against real replays",
        "",
        f"{machine['date']} · {machine['cores']} cores ({machine['cpu']}) · {machine['platform']}",
        "",
    ]
    validation = results.get("validation")
    if validation:
        service = validation["service"]
        lines += [
            "int8 MiniLM, one text per request over gRPC; one replica = tritonserver pinned to one core "
            "(1 instance, 1 intra-op thread, unbounded queue: see the script's docstring); "
            "two replicas = core 0 and core 1 side by side, the client "
            "sending round-robin. The simulation reads the `trb sweep --url` run of one replica "
            f"({', '.join(str(level['concurrency']) for level in service['levels'])} concurrency; "
            f"{service['capacity_rps']:.0f} req/s at most) and plays the same arrival times with 1 or 2 "
            "fixed replicas.",
            "",
            "| trace | replicas | measured req/s | simulated req/s | error | measured p99 ms | "
            "simulated p99 ms | error | measured p50 ms | simulated p50 ms | client late p99 ms |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in validation["rows"]:
            m, s, e = row["measured"], row["simulated"], row["error_pct"]
            lines.append(
                f"| {row['spec']} | {row['replicas']} | {m['throughput_rps']:.1f} | "
                f"{s['throughput_rps']:.1f} | {e['throughput_rps']:+.0f}% | {m['p99_ms']:.1f} | "
                f"{s['p99_ms']:.1f} | {e['p99_ms']:+.0f}% | "
                f"{m['p50_ms']:.1f} | {s['p50_ms']:.1f} | {m['client_late_p99_ms']:.1f} |"
            )
        rows = validation["rows"]
        worst = {
            key: max(abs(row["error_pct"][key]) for row in rows)
            for key in ("throughput_rps", "mean_ms", "p50_ms", "p99_ms")
        }
        lines += [
            "",
            f"Largest error over these runs: throughput {worst['throughput_rps']:.0f}%, mean latency "
            f"{worst['mean_ms']:.0f}%, p50 {worst['p50_ms']:.0f}%, p99 {worst['p99_ms']:.0f}%. "
            f"Failed requests in the replays: {sum(row['measured']['failed'] for row in rows)}. "
            "Error = (simulated − measured) ÷ measured. Client late: how far behind the trace's "
            "timestamps the replay client sent (p99).",
            "",
            "Measured curve of one replica (one core):",
            "",
            "| concurrency | req/s | mean ms | p99 ms | queue depth |",
            "|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {lv['concurrency']} | {lv['throughput_rps']:.1f} | {lv['mean_latency_ms']:.1f} | "
            f"{lv['p99_ms']:.1f} | {lv['queue_depth']:.2f} |"
            for lv in service["levels"]
        ]
    flan_part = results.get("flan")
    if flan_part:
        service = flan_part["service"]
        lines += [
            "",
            "## The shared seed's flan-t5 load on this machine's curve",
            "",
            f"Load: {' then '.join(flan_part['load'])}. Service: flan-t5-small architecture (random "
            "weights), fp32, trb's default build, one replica = this 2-core machine, measured by "
            f"`trb sweep` ({service['capacity_rps']:.1f} req/s at most, "
            f"{flan_part.get('tokens_per_request') or 0:.0f} new tokens per request, the model's default). "
            "Cost at an illustrative "
            f"${flan_part['cost_per_hour']:.2f} per replica-hour.",
            "",
            "| deployment | req/s (hold) | p50 ms | p99 ms | replicas max | replicas mean | replica-hours | "
            "cost | $ / 1M |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for label, o in flan_part["outcomes"].items():
            lines.append(
                f"| {label} | {o['hold_rps']:.1f} | {o['p50_ms']:.0f} | {o['p99_ms']:.0f} | "
                f"{o['replicas_max']} | "
                f"{o['replicas_mean']:.2f} | {o['replica_hours']:.3f} | ${o['cost_usd']:.4f} | "
                f"${o['cost_per_million_usd']:.2f} |"
            )
        deepest = max(level["queue_depth"] for level in service["levels"])
        for label, auto in flan_part["outcomes"].items():
            if not label.startswith("autoscaled"):
                continue
            lines += ["", f"{label}: {auto['rule']}."]
            in_flight = auto.get("metric") == "in_flight"
            if auto["replicas_max"] == 1 and in_flight:
                lines += [
                    f"- It never scales: the load's 20 users hold at most 20 requests, below the "
                    f"{auto['scale_up']:g} in flight per replica it scales up at; a replica of this machine "
                    f"stops gaining throughput from concurrency {flan_part['knee_load']:g} (the sweep's "
                    "knee), which is where `--plan` scales up."
                ]
            elif auto["replicas_max"] == 1:
                lines += [
                    f"- It never scales: the sweep measured at most {deepest:.2f} requests waiting in "
                    "Triton's queue per replica at any concurrency (continuous batching takes each request "
                    "out of the queue into its running decode batch at once), so the summed "
                    "`nv_inference_pending_request_count` stays below the activation threshold however "
                    "long the answers take. Queue depth is the wrong autoscaling signal for this model."
                ]
            lines += [f"- {line}" for line in auto["basis"]]
            lines += [
                f"- t = {event['t_s']:.0f} s: {event['replicas_from']} → {event['replicas_to']} replicas "
                + (
                    f"({event['metric']:.0f} requests in flight)"
                    if in_flight
                    else f"(queue depth {event['queue_depth']:.1f})"
                )
                for event in auto["scaling"]
            ]
    lines += ["", "## Versions", ""]
    lines += [f"- {name}: {version}" for name, version in machine["versions"].items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reuse", action="store_true", help="Reuse builds and sweep runs of an earlier run.")
    parser.add_argument("--part", choices=("all", "validate", "flan"), default="all")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    path = RESULTS / "simulate.json"
    results: dict[str, Any] = json.loads(path.read_text()) if path.is_file() and args.part != "all" else {}
    results["machine"] = machine_info()
    started = time.monotonic()
    if args.part in ("all", "validate"):
        results["validation"] = validate(args)
        rows = results["validation"]["rows"]
        results["validation"]["summary"] = {
            f"max_abs_{name}_error_pct": max(abs(row["error_pct"][key]) for row in rows)
            for name, key in (("throughput", "throughput_rps"), ("p99", "p99_ms"), ("p50", "p50_ms"))
        }
    if args.part in ("all", "flan"):
        results["flan"] = flan(args)
    results["duration_s"] = round(time.monotonic() - started, 1)
    write(results)


def write(results: dict[str, Any]) -> None:
    """simulate.json and simulate.md, with paths relative to the project (no machine paths)."""
    results = json.loads(json.dumps(results).replace(str(ROOT.parent) + "/", ""))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "simulate.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (RESULTS / "simulate.md").write_text(markdown(results), encoding="utf-8")
    LOGGER.info("wrote %s and simulate.md", RESULTS / "simulate.json")


if __name__ == "__main__":
    main()
