"""The bounded-queue benchmark: which dynamic-batching settings keep a bounded queue as fast as none?

In Triton 2.51 (core r24.10) a queue policy — `max_queue_size`, a default timeout, or
`allow_timeout_override` — turns off the dynamic batcher's prefetching
(`PriorityQueue::SupportPrefetching` in scheduler_utils.cc). Without it, the batcher thread forms a
batch only once an instance is already waiting for one (`RateLimiter::PayloadSlotAvailable` with
`WaitingConsumerCount`), and nothing wakes it when an instance becomes free: it is woken by the next
request that arrives (`DynamicBatchScheduler::Enqueue`), and only if the queue then holds the next
preferred batch size, else by its 500 ms timeout. With preferred sizes (trb rendered 4, 8, 16, 32
before this benchmark) most arrivals do not wake it, so batches wait.

An earlier run of this benchmark (the git history of bench/results/queue.md) showed that preferred
batch sizes make it worse and that no Triton setting avoids the stall under overload. So the
encoder templates now bound their own queue (templates/common/trb_runtime.py `TritonAdmission`):
Triton's queue gets no policy, execute() admits a request or answers UNAVAILABLE at once, and a
worker thread answers what is queued in batches.

One run, the int8 MiniLM repository (2 instances × 1 thread, the default layout on 2 cores), one
text per request over HTTP. First the unbounded repository's curve at concurrency 1…32 gives the
knee: the lowest concurrency that reaches 90% of the curve's best throughput. Then, in alternating
rounds, each variant is measured at the knee and at concurrency 32 (saturation, the workload of
bench/results/embedding.md), both in one server start:

    unbounded       no queue policy, no admission bound (execute() answers): the ceiling
    triton-bounded  the old default: Triton's queue policy, max_queue_size 256 (no prefetching)
    admission       the default, as `trb build` writes it: trb's own bound of 256 requests,
                    Triton's max_queue_delay_microseconds 1000; a batch with room for another
                    request is answered in place by execute(), a full one goes through trb's queue

(An earlier run also had max_queue_delay_microseconds 0 for trb's bound — the git history of
bench/results/queue.md: no better at saturation, slower refusals under overload.)

Then overload, in alternating rounds (3 by default): each bounded candidate with a bound of 8 at
concurrency 96 (gRPC, the closed-loop client of perf/stress.py: one asyncio loop, a user retries
1 ms after a 503), counting rejections and their latency, and the unbounded queue under the same
load. The client shares the 2 cores: the thread-per-user client it replaced made every variant's
refusals 5-6 ms slower (the git history of bench/results/queue.json).

Results: bench/results/queue.json and bench/results/queue.md; scratch under bench/work/queue/.

    python bench/bench_queue.py          # about 13 minutes on 2 cores (17 with --rounds 8)
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import statistics
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_embedding import INPUT_NAME, SENTENCES, SOURCE
from common import built_repository, launch, load_average, machine_info, rerendered_copy

from model_repo_builder.perf.perf_analyzer import PerfRun, run_perf_analyzer, write_text_input_data
from model_repo_builder.perf.stress import run_stress
from model_repo_builder.spec import BuildSpec

LOGGER = logging.getLogger("bench_queue")
ROOT = Path(__file__).resolve().parent
WORK = ROOT / "work" / "queue"
RESULTS = ROOT / "results"
MODEL = "minilm-int8"
SATURATION = 32
SATURATION_KEY = "saturation"
CURVE = (1, 2, 4, 8, 16, 32)
CURVE_PASSES = 3  # the curve's levels are medians over passes (rounds in queue.json differ up to 1.46x)
KNEE_SHARE = 0.9  # the knee: the lowest concurrency reaching this share of the curve's best
OVERLOAD_CONCURRENCY = 96
OVERLOAD_QUEUE = 8


def _triton_queue(config: dict[str, Any]) -> None:
    """No admission bound in the stub: execute() answers, Triton's queue holds the waiting requests."""
    config.get("parameters", {}).pop("max_queue_size", None)


def _unbounded(config: dict[str, Any]) -> None:
    _triton_queue(config)
    config["dynamic_batching"].pop("default_queue_policy", None)


def _triton_bounded(config: dict[str, Any]) -> None:
    bound = int(config["parameters"]["max_queue_size"]["string_value"])
    _triton_queue(config)
    config["dynamic_batching"]["default_queue_policy"] = {
        "timeout_action": "REJECT",
        "default_timeout_microseconds": 0,
        "allow_timeout_override": False,
        "max_queue_size": bound,
    }


def _as_built(config: dict[str, Any]) -> None:
    del config  # the config as trb renders it


VARIANTS: dict[str, Callable[[dict[str, Any]], None]] = {
    "unbounded": _unbounded,
    "triton-bounded": _triton_bounded,
    "admission": _as_built,
}
BOUNDED = ("triton-bounded", "admission")


def _small_queue(change: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def apply(config: dict[str, Any]) -> None:
        config["parameters"]["max_queue_size"] = {"string_value": str(OVERLOAD_QUEUE)}
        change(config)

    return apply


def _answered_by_instance(metrics_url: str) -> list[float]:
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        lines = response.read().decode().splitlines()
    return sorted(
        float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("trb_answered_requests{")
    )


def _level(server: Any, data: Path, label: str, concurrency: int, requests: int) -> dict[str, float]:
    run = PerfRun(
        model=MODEL,
        url=server.http_url,
        protocol="http",
        concurrency=concurrency,
        input_data=data,
        request_count=requests,
        timeout_s=300,
    )
    measured = run_perf_analyzer(run, WORK / "perf" / label).measurement
    LOGGER.info(
        "%s: %.0f req/s, p50 %.1f ms, p99 %.1f ms",
        label,
        measured.throughput_rps,
        measured.p50_ms,
        measured.p99_ms,
    )
    return {
        "throughput_rps": measured.throughput_rps,
        "p50_ms": measured.p50_ms,
        "p99_ms": measured.p99_ms,
        "load_average": load_average(),
    }


def knee(repository: Path, data: Path, args: argparse.Namespace) -> tuple[int, list[dict[str, float]]]:
    """The unbounded curve over CURVE (medians of passes) and its knee.

    The knee is the lowest concurrency with KNEE_SHARE of the curve's best throughput.
    """
    with launch(repository) as server:
        passes = [
            {c: _level(server, data, f"curve{index}-{c}", c, args.requests // 2) for c in CURVE}
            for index in range(CURVE_PASSES)
        ]
    curve = [
        {
            "concurrency": c,
            "throughput_rps": statistics.median(p[c]["throughput_rps"] for p in passes),
            "p99_ms": statistics.median(p[c]["p99_ms"] for p in passes),
        }
        for c in CURVE
    ]
    best = max(level["throughput_rps"] for level in curve)
    at_knee = next(level for level in curve if level["throughput_rps"] >= KNEE_SHARE * best)
    return int(at_knee["concurrency"]), curve


def measure(
    repository: Path, data: Path, label: str, loads: dict[str, int], args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    """Throughput and latency at each named concurrency over HTTP, a fixed number of requests each."""
    with launch(repository) as server:
        levels: dict[str, dict[str, Any]] = {
            name: _level(server, data, f"{label}-{name}", concurrency, args.requests)
            for name, concurrency in loads.items()
        }
        time.sleep(0.6)  # the stub reports its counters every 0.25 s
        # trb's admission only: requests each instance computed (warmup included): the spread
        levels[SATURATION_KEY]["answered_by_instance"] = _answered_by_instance(server.metrics_url)
    return levels


def overload(repository: Path, args: argparse.Namespace) -> dict[str, float]:
    """A closed loop far beyond capacity against a queue of OVERLOAD_QUEUE: how fast are rejections?"""
    with launch(repository) as server:
        result = run_stress(
            MODEL, server.grpc_url, INPUT_NAME, list(SENTENCES), OVERLOAD_CONCURRENCY, args.overload_s
        )
    return {
        "ok": result.count("ok"),
        "rejected": result.count("rejected"),
        "errors": result.count("error"),
        "ok_p50_ms": result.latency_ms(50),
        "ok_p99_ms": result.latency_ms(99),
        "rejected_p50_ms": result.latency_ms(50, "rejected"),
        "rejected_p99_ms": result.latency_ms(99, "rejected"),
    }


def overload_rounds(small: dict[str, Path], args: argparse.Namespace) -> list[dict[str, dict[str, float]]]:
    """Each variant under overload, in alternating order, `args.overload_rounds` times."""
    rounds = []
    for index in range(args.overload_rounds):
        order = list(small) if index % 2 == 0 else list(reversed(small))
        rounds.append({name: overload(small[name], args) for name in order})
    return rounds


def _medians(rounds: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Each variant's figures, the median over rounds of those that are numbers (NaN: none refused)."""

    def median(values: list[float]) -> float:
        numbers = [value for value in values if not math.isnan(value)]
        return statistics.median(numbers) if numbers else math.nan

    return {
        name: {field: median([r[name][field] for r in rounds]) for field in rounds[0][name]}
        for name in rounds[0]
    }


def _share(rounds: list[dict[str, Any]]) -> str:
    """The instance that computed fewer requests: its share of the two, median over rounds."""
    answered = [r[SATURATION_KEY]["answered_by_instance"] for r in rounds]
    shares = [min(a) / sum(a) for a in answered if len(a) == 2]
    return f"{statistics.median(shares):.2f}" if shares else "–"


def render_markdown(report: dict[str, Any]) -> str:
    machine, settings = report["machine"], report["settings"]
    loads = report["loads"]
    lines = [
        "# Bounded queue vs unbounded: Triton's queue policy and trb's admission bound (Triton 2.51)",
        "",
        f"{report['date']} · {machine['cpu']}, {machine['cores']} cores. Workload: MiniLM int8, "
        f"2 instances × 1 thread, one text per request, HTTP, {settings['requests']} requests per "
        f"measurement, {settings['rounds']} alternating rounds. Knee of the unbounded curve: "
        f"concurrency {loads['knee']} (the lowest with {KNEE_SHARE:.0%} of the best throughput).",
        "",
        "| concurrency | " + " | ".join(str(level["concurrency"]) for level in report["curve"]) + " |",
        "|---|" + "---:|" * len(report["curve"]),
        "| unbounded req/s | "
        + " | ".join(f"{level['throughput_rps']:.0f}" for level in report["curve"])
        + " |",
        "",
        "| variant | load | req/s (median) | ÷ unbounded (median of rounds) | p50 ms | p99 ms "
        "| p99 ÷ unbounded | smaller instance's share |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in VARIANTS:
        for load, concurrency in loads.items():
            levels = [r[name][load] for r in report["rounds"]]
            ratios = report["ratios"][name][load]
            share = _share([r[name] for r in report["rounds"]]) if load == SATURATION_KEY else ""
            lines.append(
                f"| {name} | {load} ({concurrency}) "
                f"| {statistics.median(r['throughput_rps'] for r in levels):.0f} "
                f"| {ratios['throughput']:.3f} "
                f"| {statistics.median(r['p50_ms'] for r in levels):.1f} "
                f"| {statistics.median(r['p99_ms'] for r in levels):.1f} "
                f"| {ratios['p99']:.2f} | {share} |"
            )
    lines += [
        "",
        f"Overload: a bound of {OVERLOAD_QUEUE} requests, {OVERLOAD_CONCURRENCY} clients (gRPC), "
        f"{settings['overload_s']:.0f} s each, {settings['overload_rounds']} alternating rounds "
        "(medians; the rounds' range of the rejected p50 beside it).",
        "",
        "| variant | answered/s | rejected (503)/s | rejected p50 ms | rejected p50 range "
        "| rejected p99 ms | answered p50 ms | answered p99 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    seconds = settings["overload_s"]
    for name, result in report["overload"].items():
        p50s = [r[name]["rejected_p50_ms"] for r in report["overload_rounds"]]
        spread = "–" if any(math.isnan(v) for v in p50s) else f"{min(p50s):.1f}–{max(p50s):.1f}"
        lines.append(
            f"| {name} | {result['ok'] / seconds:.0f} | {result['rejected'] / seconds:.0f} "
            f"| {result['rejected_p50_ms']:.1f} | {spread} | {result['rejected_p99_ms']:.1f} "
            f"| {result['ok_p50_ms']:.1f} | {result['ok_p99_ms']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--reuse", action="store_true", help="reuse the build of an earlier run")
    parser.add_argument("--requests", type=int, default=3000, help="requests per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    parser.add_argument("--overload-s", type=float, default=8.0, help="seconds of overload per variant")
    parser.add_argument("--overload-rounds", type=int, default=3, help="alternating overload rounds")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    started = time.monotonic()
    int8 = built_repository(
        BuildSpec(source=SOURCE, output=WORK / "repos", precision="int8", name=MODEL, instances=2), args.reuse
    )
    data = write_text_input_data(WORK / "sentences.json", INPUT_NAME, SENTENCES)
    variants = {
        name: rerendered_copy(int8, MODEL, WORK / "variants" / name, change)
        for name, change in VARIANTS.items()
    }
    knee_concurrency, curve = knee(variants["unbounded"], data, args)
    loads = {"knee": knee_concurrency, SATURATION_KEY: SATURATION}
    rounds = []
    for index in range(args.rounds):
        order = list(VARIANTS) if index % 2 == 0 else list(reversed(VARIANTS))
        rounds.append(
            {name: measure(variants[name], data, f"round{index}-{name}", loads, args) for name in order}
        )
    ratios = {
        name: {
            load: {
                "throughput": statistics.median(
                    r[name][load]["throughput_rps"] / r["unbounded"][load]["throughput_rps"] for r in rounds
                ),
                "p99": statistics.median(
                    r[name][load]["p99_ms"] / r["unbounded"][load]["p99_ms"] for r in rounds
                ),
            }
            for load in loads
        }
        for name in VARIANTS
    }
    small = {
        name: rerendered_copy(int8, MODEL, WORK / "overload" / name, _small_queue(VARIANTS[name]))
        for name in (*BOUNDED, "unbounded")
    }
    overloaded = overload_rounds(small, args)
    report = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "curve": curve,
        "loads": loads,
        "settings": {
            "requests": args.requests,
            "rounds": args.rounds,
            "overload_s": args.overload_s,
            "overload_rounds": args.overload_rounds,
        },
        "rounds": rounds,
        "ratios": ratios,
        "overload_rounds": overloaded,
        "overload": _medians(overloaded),
        "duration_s": time.monotonic() - started,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "queue.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    markdown = render_markdown(report)
    (RESULTS / "queue.md").write_text(markdown, encoding="utf-8")
    print(markdown)


if __name__ == "__main__":
    main()
