"""The seq2seq benchmark: flan-t5-small's architecture (random weights) generating 32 tokens per request.

One script, one run. Every request is one ~24-token prompt and produces exactly 32 new tokens; 20
clients keep a request each in flight:

    (a) hf          transformers `generate` in process (min_new_tokens = max_new_tokens = 32), fp32,
                    at batch sizes 1, 8 and 20; the best one counts
    (a8) hf int8    the same with PyTorch dynamic int8 (`quantize_dynamic` of every nn.Linear): the
                    like-for-like baseline of (f)
    (g) ct2         CTranslate2 in process (its own converter on the same checkpoint), fp32 and
                    int8, at batch sizes 1, 8 and 20: the engine people pick for fast T5 on CPU
    (b) naive       trb's fp32 `--batching request` repository re-rendered the way a newcomer serves a
                    model: one instance, max_batch_size 1, no dynamic batching
    (c)+(d) trb     the repository `trb build` makes by default: fp32, `--batching continuous`
                    (requests join the running batch at every decode step)
    (e) request     fp32, `--batching request`: each dynamic batch is generated to completion
    (f) trb int8    `--precision int8`, continuous batching

Served cases are driven by perf_analyzer (gRPC, concurrency 20, a fixed request count; its
--input-data carries PROMPT and MAX_NEW_TOKENS=32). Exactly 32 tokens: the served loop stops at EOS,
so the random model's output-projection row of EOS is zeroed (its logit is always 0 while the best
of 32k random logits is far above), and the script checks that every prompt yields 32 ids.

int8 changes the numbers, so both int8 systems are also scored by the share of generated positions
equal to fp32 greedy decoding of the same prompts (random weights make next-token scores close
together: a harder case for quantization than a trained model).

Results: bench/results/seq2seq.json and bench/results/seq2seq.md; scratch under bench/work/seq2seq/.

    pip install -e ".[bench]"                # CTranslate2, a benchmark dependency only
    python bench/bench_seq2seq.py            # about 12 minutes on 2 cores
    python bench/bench_seq2seq.py --reuse    # reuse the builds of an earlier run
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
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
from model_repo_builder.perf.perf_analyzer import PerfRun, run_perf_analyzer
from model_repo_builder.repository.manifest import read_manifest
from model_repo_builder.runtime.server import TritonServer
from model_repo_builder.spec import BuildSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from seq2seq_fixtures import FLAN_T5_SMALL, SENTENCES, generate, write_t5  # noqa: E402

LOGGER = logging.getLogger("bench_seq2seq")

BENCH_DIR = Path(__file__).resolve().parent
WORK = BENCH_DIR / "work" / "seq2seq"
RESULTS = BENCH_DIR / "results"
NEW_TOKENS = 32
CLIENTS = 20
HF_BATCH_SIZES = (1, 8, 20)
PROMPT_TOKENS = 24
EOS_ID = 1
TARGET_VS_HF = 2.0
TARGET_VS_NAIVE = 4.0
TARGET_VS_CT2 = 1.1


def make_model(directory: Path) -> Path:
    """flan-t5-small's architecture with random weights, EOS made unreachable for greedy decoding."""
    import torch
    from transformers import T5ForConditionalGeneration

    if (directory / "model.safetensors").is_file():
        return directory
    write_t5(directory, FLAN_T5_SMALL)
    model = T5ForConditionalGeneration.from_pretrained(str(directory)).eval()
    with torch.no_grad():
        model.lm_head.weight[EOS_ID] = 0.0
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def make_prompts(model_dir: Path, count: int) -> list[str]:
    """`count` different prompts of about PROMPT_TOKENS tokens (with EOS), from the fixture sentences."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    prompts = []
    for start in range(count):
        words: list[str] = []
        index = start * 7
        while len(tokenizer(" ".join(words)).input_ids) < PROMPT_TOKENS:
            words.append(SENTENCES[index % len(SENTENCES)])
            index += 1
        prompts.append(" ".join(words))
    return prompts


class HuggingFace:
    """transformers `generate` in process, fp32 or with PyTorch dynamic int8 linear layers."""

    def __init__(self, model_dir: Path, int8: bool):
        import torch
        from transformers import AutoTokenizer, T5ForConditionalGeneration

        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model = T5ForConditionalGeneration.from_pretrained(str(model_dir)).eval()
        if int8:
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        self.model = model

    def generate(self, prompts: list[str]) -> list[list[int]]:
        """Exactly NEW_TOKENS greedy ids per prompt (min_new_tokens = max_new_tokens)."""
        import torch

        inputs = self.tokenizer(prompts, return_tensors="pt", padding=True)
        with torch.inference_mode():
            output = self.model.generate(
                **inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False, num_beams=1
            )
        # Every row holds exactly NEW_TOKENS ids after the start token (a random model may well
        # emit the pad id, so ids are not counted by value).
        if output.shape[1] - 1 != NEW_TOKENS:
            raise RuntimeError(f"generate made {output.shape[1] - 1} tokens, not {NEW_TOKENS}")
        return [row[1:] for row in output.tolist()]


class CTranslate2:
    """CTranslate2's Translator in process on the checkpoint converted by its own converter."""

    def __init__(self, model_dir: Path, int8: bool, output: Path):
        import ctranslate2
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        quantization = "int8" if int8 else None
        if not (output / "model.bin").is_file():
            converter = ctranslate2.converters.TransformersConverter(str(model_dir))
            converter.convert(str(output), quantization=quantization, force=True)
        # Ids by CTranslate2's own vocabulary: it names the ids the tokenizer has no token for.
        vocabulary = json.loads((output / "shared_vocabulary.json").read_text(encoding="utf-8"))
        self.ids = {token: index for index, token in enumerate(vocabulary)}
        self.translator = ctranslate2.Translator(
            str(output),
            device="cpu",
            compute_type="int8" if int8 else "float32",
            inter_threads=1,
            intra_threads=CORES,
        )

    def generate(self, prompts: list[str]) -> list[list[int]]:
        """Exactly NEW_TOKENS greedy ids per prompt (min = max decoding length)."""
        batch = [self.tokenizer.convert_ids_to_tokens(self.tokenizer(prompt).input_ids) for prompt in prompts]
        results = self.translator.translate_batch(
            batch, beam_size=1, max_decoding_length=NEW_TOKENS, min_decoding_length=NEW_TOKENS
        )
        ids = [[self.ids[token] for token in result.hypotheses[0]] for result in results]
        if any(len(row) != NEW_TOKENS for row in ids):
            raise RuntimeError(f"CTranslate2 made {[len(row) for row in ids]} tokens, not {NEW_TOKENS}")
        return ids


def measure_in_process(
    generate: Callable[[list[str]], list[list[int]]], prompts: list[str], seconds: float, label: str
) -> list[dict[str, Any]]:
    """Tokens/s and per-request latency (its batch's time) of `generate` at each batch size."""
    levels = []
    for batch_size in HF_BATCH_SIZES:
        generate(prompts[:batch_size])  # untimed: the first call at a shape pays one-off costs
        latencies: list[float] = []
        tokens, index, start = 0, 0, time.perf_counter()
        while time.perf_counter() - start < seconds or not latencies:
            batch = [prompts[(index + i) % len(prompts)] for i in range(batch_size)]
            index += batch_size
            began = time.perf_counter()
            generate(batch)
            latencies += [(time.perf_counter() - began) * 1000] * batch_size
            tokens += batch_size * NEW_TOKENS
        level = {
            "batch_size": batch_size,
            "tokens_per_s": tokens / (time.perf_counter() - start),
            "requests": len(latencies),
            "p50_ms": percentile(latencies, 50),
            "p90_ms": percentile(latencies, 90),
            "p99_ms": percentile(latencies, 99),
            "load_average": load_average(),
        }
        LOGGER.info("(%s) batch %d: %.0f tokens/s", label, batch_size, level["tokens_per_s"])
        levels.append(level)
    return levels


def measure_engine(
    engine: str, precision: str, model_dir: Path, prompts: list[str], seconds: float
) -> tuple[list[list[int]], list[dict[str, Any]]]:
    """In a worker process: the engine's ids for `prompts` and its levels by batch size."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    quantized = precision == "int8"
    runner = (
        HuggingFace(model_dir, quantized)
        if engine == "hf"
        else CTranslate2(model_dir, quantized, WORK / f"ct2-{precision}")
    )
    generated = runner.generate(prompts)
    return generated, measure_in_process(runner.generate, prompts, seconds, f"{engine} {precision}")


def write_input_data(path: Path, prompts: list[str]) -> Path:
    """perf_analyzer --input-data with PROMPT and MAX_NEW_TOKENS in every request."""
    steps = [
        {
            "PROMPT": {"content": [prompt], "shape": [1]},
            "MAX_NEW_TOKENS": {"content": [NEW_TOKENS], "shape": [1]},
        }
        for prompt in prompts
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"data": steps}, indent=1), encoding="utf-8")
    return path


def served_ids(server: TritonServer, model: str, prompts: list[str]) -> list[list[int]]:
    """The ids served for each prompt; each must hold exactly NEW_TOKENS (tokens/s = requests/s × 32)."""
    generated = []
    for prompt in prompts:
        _, (row,) = generate(server, model, [prompt], "grpc", MAX_NEW_TOKENS=("INT32", [NEW_TOKENS]))
        if len(row) != NEW_TOKENS:
            raise RuntimeError(f"{model}: a prompt produced {len(row)} tokens, not {NEW_TOKENS}")
        generated.append(row)
    return generated


def equal_positions(generated: list[list[int]], reference: list[list[int]]) -> float:
    """Share of generated positions holding the same id as `reference` (fp32 greedy)."""
    return float(np.mean(np.array(generated) == np.array(reference)))


def measure_served(
    repository: Path,
    model: str,
    prompts: list[str],
    data: Path,
    label: str,
    requests: int,
    reference: list[list[int]] | None = None,
) -> dict[str, Any]:
    """Drive `model` with CLIENTS concurrent perf_analyzer clients; score its ids against `reference`."""
    with launch(repository) as server:
        generated = served_ids(server, model, prompts if reference else prompts[:3])
        run = PerfRun(
            model=model,
            url=server.grpc_url,
            concurrency=CLIENTS,
            input_data=data,
            request_count=requests,
            timeout_s=400,
        )
        result = run_perf_analyzer(run, WORK / "perf" / label)
    measured = result.measurement
    level = {
        "concurrency": CLIENTS,
        "requests": result.requests.count,
        "tokens_per_s": measured.throughput_rps * NEW_TOKENS,
        "requests_per_s": measured.throughput_rps,
        "p50_ms": measured.p50_ms,
        "p90_ms": measured.p90_ms,
        "p99_ms": measured.p99_ms,
        "server_queue_ms": result.breakdown.server_queue_ms,
        "server_compute_ms": result.breakdown.server_compute_infer_ms,
        "load_average": load_average(),
    }
    if reference is not None:
        level["fp32_equal_positions"] = equal_positions(generated, reference)
    LOGGER.info(
        "(%s) %.0f tokens/s, p50 %.0f ms, p99 %.0f ms",
        label,
        level["tokens_per_s"],
        level["p50_ms"],
        level["p99_ms"],
    )
    return level


def render_markdown(report: dict[str, Any]) -> str:
    machine, systems, ratios = report["machine"], report["systems"], report["ratios"]
    lines = [
        "# seq2seq benchmark: flan-t5-small architecture (random weights), 32 new tokens per request",
        "",
        f"{machine['date']} · {machine['cores']} cores ({machine['cpu']}) · {machine['platform']}",
        "",
        f"{CLIENTS} concurrent clients (perf_analyzer, gRPC, fixed request count) for the served cases; "
        f"~{PROMPT_TOKENS}-token prompts; every request yields exactly {NEW_TOKENS} tokens (checked). "
        f"Cores {report['busy_at_start']:.0%} busy with other work at the start.",
        "",
        "| system | config | output tokens/s | p50 ms | p90 ms | p99 ms | requests | = fp32 greedy |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for system in systems.values():
        equal = system.get("fp32_equal_positions")
        lines.append(
            f"| {system['label']} | {system['config']} | {system['tokens_per_s']:.0f} | "
            f"{system['p50_ms']:.0f} | {system['p90_ms']:.0f} | {system['p99_ms']:.0f} | "
            f"{system['requests']} | {'' if equal is None else f'{equal:.0%}'} |"
        )
    lines += [
        "",
        "= fp32 greedy: share of the generated positions (20 prompts × 32) holding the id that (a), "
        "fp32 greedy decoding, produces (once a sequence differs, its later positions usually differ "
        "too). int8 verification in the build (trb.yaml, teacher-forced): "
        f"{report['int8_verification']['summary']}.",
        "",
        "1-minute load average after each measurement (2 cores; other work may share the machine): "
        + ", ".join(f"{key} {system['load_average']:.1f}" for key, system in systems.items()),
    ]
    lines += ["", "In process by batch size (per-request latency = its batch's time):", ""]
    lines += ["| engine, precision | batch | tokens/s | p50 ms |", "|---|---:|---:|---:|"]
    for precision, levels in report["hf_levels"].items():
        lines += [
            f"| {precision} | {lv['batch_size']} | {lv['tokens_per_s']:.0f} | {lv['p50_ms']:.0f} |"
            for lv in levels
        ]
    lines += ["", "## Ratios", ""]
    lines += [f"- {name}: {value}" for name, value in ratios.items()]
    lines += ["", "## Versions", ""]
    lines += [f"- {package}: {version}" for package, version in machine["versions"].items()]
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reuse", action="store_true", help="reuse the model and builds of an earlier run")
    parser.add_argument("--hf-seconds", type=float, default=12.0, help="time per HF batch size")
    parser.add_argument("--requests", type=int, default=100, help="requests measured per batched server")
    parser.add_argument(
        "--naive-requests", type=int, default=40, help="requests measured on the naive server"
    )
    parser.add_argument(
        "--wait-idle", type=float, default=0.0, help="seconds to wait for other work on the cores to finish"
    )
    return parser.parse_args()


def verdict(value: float, target: float) -> str:
    return f"{value:.2f} (target ≥ {target:g}: {'met' if value >= target else 'NOT met'})"


def ratio(systems: dict[str, dict[str, Any]], top: str, bottom: str, key: str = "tokens_per_s") -> float:
    return float(systems[top][key] / systems[bottom][key])


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args()
    began = time.perf_counter()
    if not args.reuse:
        shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True, exist_ok=True)
    model_dir = make_model(WORK / "flan-t5-small-random")
    prompts = make_prompts(model_dir, CLIENTS)
    data = write_input_data(WORK / "input_data.json", prompts)
    repos = WORK / "repos"
    source = str(model_dir)
    default_spec = BuildSpec(source=source, output=repos / "default", name="flan")
    default = built_repository(default_spec, args.reuse)
    request = built_repository(
        BuildSpec(source=source, output=repos / "request", name="flan", batching="request"), args.reuse
    )
    int8 = built_repository(
        BuildSpec(source=source, output=repos / "int8", name="flan", precision="int8"), args.reuse
    )
    naive = rerendered_copy(request, "flan", WORK / "naive", make_naive)
    busy_at_start = wait_until_idle(args.wait_idle)

    hf_levels: dict[str, list[dict[str, Any]]] = {}
    best_hf: dict[str, dict[str, Any]] = {}
    reference: list[list[int]] = []
    for engine in ("hf", "ct2"):
        for precision in ("fp32", "int8"):
            key = f"{engine} {precision}"
            # Each engine in a fresh process: PyTorch's and CTranslate2's OpenMP threads keep
            # spinning after a call and would slow whichever engine runs next in the same process.
            with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
                generated, hf_levels[key] = pool.submit(
                    measure_engine, engine, precision, model_dir, prompts, args.hf_seconds
                ).result()
            reference = reference or generated  # HF fp32 runs first
            best_hf[key] = {
                **max(hf_levels[key], key=lambda level: level["tokens_per_s"]),
                "fp32_equal_positions": equal_positions(generated, reference),
                "batch_20_p50_ms": hf_levels[key][-1]["p50_ms"],
            }
    systems: dict[str, dict[str, Any]] = {
        "hf": {
            "label": "(a) HF generate, in process",
            "config": f"fp32, best batch size {best_hf['hf fp32']['batch_size']}",
            **best_hf["hf fp32"],
        },
        "hf_int8": {
            "label": "(a8) HF generate, in process",
            "config": f"PyTorch dynamic int8, best batch size {best_hf['hf int8']['batch_size']}",
            **best_hf["hf int8"],
        },
        "ct2": {
            "label": "(g) CTranslate2, in process",
            "config": f"fp32, {CORES} threads, best batch size {best_hf['ct2 fp32']['batch_size']}",
            **best_hf["ct2 fp32"],
        },
        "ct2_int8": {
            "label": "(g8) CTranslate2, in process",
            "config": f"int8, {CORES} threads, best batch size {best_hf['ct2 int8']['batch_size']}",
            **best_hf["ct2 int8"],
        },
        "naive": {
            "label": "(b) naive repository",
            "config": "fp32, 1 instance, max_batch_size 1, no dynamic batching",
            **measure_served(naive, "flan", prompts, data, "naive", args.naive_requests),
        },
        "continuous": {
            "label": "(c)+(d) trb default build",
            "config": f"fp32, 1 instance, dynamic batching, --batching {default_spec.batching}",
            **measure_served(default, "flan", prompts, data, "continuous", args.requests, reference),
        },
        "request": {
            "label": "(e) trb --batching request",
            "config": "fp32, 1 instance, dynamic batching, a batch runs to completion",
            **measure_served(request, "flan", prompts, data, "request", args.requests),
        },
        "int8": {
            "label": "(f) trb --precision int8",
            "config": "int8, 1 instance, dynamic batching, --batching continuous",
            **measure_served(int8, "flan", prompts, data, "int8", args.requests, reference),
        },
    }
    best_fp32 = max(("continuous", "request"), key=lambda key: systems[key]["tokens_per_s"])
    ratios = {
        f"trb fp32 ({best_fp32}) tokens/s ÷ HF fp32 (like for like)": verdict(
            ratio(systems, best_fp32, "hf"), TARGET_VS_HF
        ),
        "trb int8 tokens/s ÷ HF fp32": verdict(ratio(systems, "int8", "hf"), TARGET_VS_HF),
        "trb int8 tokens/s ÷ HF int8 (like for like)": f"{ratio(systems, 'int8', 'hf_int8'):.2f}",
        f"trb fp32 ({best_fp32}) tokens/s ÷ naive": verdict(
            ratio(systems, best_fp32, "naive"), TARGET_VS_NAIVE
        ),
        f"trb fp32 ({best_fp32}) p50 ÷ naive p50 (lower is better)": (
            f"{ratio(systems, best_fp32, 'naive', 'p50_ms'):.2f}"
        ),
        "trb fp32 (continuous) tokens/s ÷ CTranslate2 fp32": verdict(
            ratio(systems, "continuous", "ct2"), TARGET_VS_CT2
        ),
        "trb int8 tokens/s ÷ CTranslate2 int8": verdict(ratio(systems, "int8", "ct2_int8"), TARGET_VS_CT2),
        "trb fp32 p50 ÷ CTranslate2 fp32 p50 at batch 20 (lower is better)": (
            f"{systems['continuous']['p50_ms'] / systems['ct2']['batch_20_p50_ms']:.2f}"
        ),
        "trb int8 p50 ÷ CTranslate2 int8 p50 at batch 20 (lower is better)": (
            f"{systems['int8']['p50_ms'] / systems['ct2_int8']['batch_20_p50_ms']:.2f}"
        ),
        "continuous ÷ request tokens/s": f"{ratio(systems, 'continuous', 'request'):.2f}",
        "continuous ÷ request p50": f"{ratio(systems, 'continuous', 'request', 'p50_ms'):.2f}",
        "continuous ÷ request p99": f"{ratio(systems, 'continuous', 'request', 'p99_ms'):.2f}",
    }
    report = {
        "machine": machine_info(),
        "busy_at_start": busy_at_start,
        "workload": {
            "new_tokens": NEW_TOKENS,
            "clients": CLIENTS,
            "prompt_tokens": PROMPT_TOKENS,
            "prompts": prompts,
        },
        "systems": systems,
        "hf_levels": hf_levels,
        "int8_verification": read_manifest(int8).verification,
        "ratios": ratios,
        "duration_s": round(time.perf_counter() - began, 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "seq2seq.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (RESULTS / "seq2seq.md").write_text(render_markdown(report), encoding="utf-8")
    LOGGER.info("done in %.0f s; results in %s", report["duration_s"], RESULTS)


if __name__ == "__main__":
    main()
