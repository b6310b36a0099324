"""The seq2seq benchmark: flan-t5-small's architecture (random weights) generating 32 tokens per request.

One script, one run. Every request is one ~24-token prompt and produces exactly 32 new tokens; 20
clients keep a request each in flight:

    (a) hf          transformers `generate` in process (min_new_tokens = max_new_tokens = 32), at
                    batch sizes 1, 8 and 20; the best one counts
    (b) naive       trb's fp32 `--batching request` repository re-rendered the way a newcomer serves a
                    model: one instance, max_batch_size 1, no dynamic batching
    (c)+(d) trb     the repository `trb build` makes by default, which is `--batching continuous`
                    (requests join the running batch at every decode step): continuous batching won
                    this benchmark and became the default
    (e) request     `--batching request`: each dynamic batch is generated to completion

Served cases are driven by perf_analyzer (gRPC, concurrency 20, a fixed request count; its
--input-data carries PROMPT and MAX_NEW_TOKENS=32). Exactly 32 tokens: the served loop stops at EOS,
so the random model's output-projection row of EOS is zeroed (its logit is always 0 while the best
of 32k random logits is far above), and the script checks that every prompt yields 32 ids.

Results: bench/results/seq2seq.json and bench/results/seq2seq.md; scratch under bench/work/seq2seq/.

    python bench/bench_seq2seq.py            # about 6-8 minutes on 2 cores
    python bench/bench_seq2seq.py --reuse    # reuse the builds of an earlier run
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_embedding import load_average, machine_info, make_naive, rerendered_copy
from common import built_repository

from model_repo_builder.perf.analysis import percentile
from model_repo_builder.perf.perf_analyzer import PerfRun, run_perf_analyzer
from model_repo_builder.runtime.ports import free_ports
from model_repo_builder.runtime.server import TritonServer
from model_repo_builder.spec import BuildSpec, LaunchSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from seq2seq_fixtures import FLAN_T5_SMALL, SENTENCES, write_t5  # noqa: E402

LOGGER = logging.getLogger("bench_seq2seq")

BENCH_DIR = Path(__file__).resolve().parent
WORK = BENCH_DIR / "work" / "seq2seq"
RESULTS = BENCH_DIR / "results"
NEW_TOKENS = 32
CLIENTS = 20
HF_BATCH_SIZES = (1, 8, 20)
PROMPT_TOKENS = 24
EOS_ID = 1


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


def measure_hf(model_dir: Path, prompts: list[str], seconds: float) -> list[dict[str, Any]]:
    """Tokens/s and per-request latency of `generate` at each batch size (one thread per core)."""
    import torch
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = T5ForConditionalGeneration.from_pretrained(str(model_dir)).eval()
    levels = []
    for batch_size in HF_BATCH_SIZES:
        warmup = tokenizer(prompts[:batch_size], return_tensors="pt", padding=True)
        with torch.inference_mode():  # untimed: the first call at a shape pays one-off costs
            model.generate(**warmup, max_new_tokens=2, do_sample=False, num_beams=1)
        latencies, tokens, start = [], 0, time.perf_counter()
        index = 0
        while time.perf_counter() - start < seconds or not latencies:
            batch = [prompts[(index + i) % len(prompts)] for i in range(batch_size)]
            index += batch_size
            inputs = tokenizer(batch, return_tensors="pt", padding=True)
            began = time.perf_counter()
            with torch.inference_mode():
                output = model.generate(
                    **inputs,
                    max_new_tokens=NEW_TOKENS,
                    min_new_tokens=NEW_TOKENS,
                    do_sample=False,
                    num_beams=1,
                )
            latencies += [(time.perf_counter() - began) * 1000] * batch_size
            # min_new_tokens = max_new_tokens: every row holds exactly NEW_TOKENS ids after the start
            # token (a random model may well emit the pad id, so ids are not counted by value).
            if output.shape[1] - 1 != NEW_TOKENS:
                raise RuntimeError(f"generate made {output.shape[1] - 1} tokens, not {NEW_TOKENS}")
            tokens += batch_size * NEW_TOKENS
        elapsed = time.perf_counter() - start
        level = {
            "batch_size": batch_size,
            "tokens_per_s": tokens / elapsed,
            "requests": len(latencies),
            "p50_ms": percentile(latencies, 50),
            "p90_ms": percentile(latencies, 90),
            "p99_ms": percentile(latencies, 99),
            "load_average": load_average(),
        }
        LOGGER.info(
            "(hf) batch %d: %.0f tokens/s, p50 %.0f ms", batch_size, level["tokens_per_s"], level["p50_ms"]
        )
        levels.append(level)
    return levels


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


def check_lengths(server: TritonServer, model: str, prompts: list[str]) -> None:
    """Every prompt must produce exactly NEW_TOKENS ids (so tokens/s = requests/s × NEW_TOKENS)."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        for prompt in prompts:
            prompt_input = grpcclient.InferInput("PROMPT", [1, 1], "BYTES")
            prompt_input.set_data_from_numpy(np.array([[prompt.encode()]], dtype=np.object_))
            limit = grpcclient.InferInput("MAX_NEW_TOKENS", [1, 1], "INT32")
            limit.set_data_from_numpy(np.array([[NEW_TOKENS]], dtype=np.int32))
            ids = client.infer(model, [prompt_input, limit]).as_numpy("TOKEN_IDS")
            produced = int((ids != -1).sum())
            if produced != NEW_TOKENS:
                raise RuntimeError(f"{model}: a prompt produced {produced} tokens, not {NEW_TOKENS}")
    finally:
        client.close()


def measure_served(
    repository: Path, model: str, prompts: list[str], data: Path, label: str, requests: int
) -> dict[str, Any]:
    http_port, grpc_port, metrics_port = free_ports(3)
    spec = LaunchSpec(
        repository=repository, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port
    )
    with TritonServer(spec) as server:
        check_lengths(server, model, prompts[:3])
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
        f"~{PROMPT_TOKENS}-token prompts; every request yields exactly {NEW_TOKENS} tokens (checked).",
        "",
        "| system | config | output tokens/s | p50 ms | p90 ms | p99 ms | requests |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for system in systems.values():
        lines.append(
            f"| {system['label']} | {system['config']} | {system['tokens_per_s']:.0f} | "
            f"{system['p50_ms']:.0f} | {system['p90_ms']:.0f} | {system['p99_ms']:.0f} | "
            f"{system['requests']} |"
        )
    lines += [
        "",
        "1-minute load average after each measurement (2 cores; other work shared the machine): "
        + ", ".join(f"{key} {system['load_average']:.1f}" for key, system in systems.items()),
    ]
    lines += ["", "HF `generate` by batch size (per-request latency = its batch's time):", ""]
    lines += ["| batch | tokens/s | p50 ms |", "|---:|---:|---:|"]
    lines += [
        f"| {lv['batch_size']} | {lv['tokens_per_s']:.0f} | {lv['p50_ms']:.0f} |"
        for lv in report["hf_levels"]
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
    return parser.parse_args()


def verdict(value: float, target: float) -> str:
    return f"{value:.2f} (target ≥ {target:g}: {'met' if value >= target else 'NOT met'})"


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args()
    began = time.perf_counter()
    if not args.reuse:
        import shutil

        shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True, exist_ok=True)
    model_dir = make_model(WORK / "flan-t5-small-random")
    prompts = make_prompts(model_dir, CLIENTS)
    data = write_input_data(WORK / "input_data.json", prompts)
    repos = WORK / "repos"
    default_spec = BuildSpec(source=str(model_dir), output=repos / "default", name="flan")
    default = built_repository(default_spec, args.reuse)
    request = built_repository(
        BuildSpec(source=str(model_dir), output=repos / "request", name="flan", batching="request"),
        args.reuse,
    )
    naive = rerendered_copy(request, "flan", WORK / "naive", make_naive)

    hf_levels = measure_hf(model_dir, prompts, args.hf_seconds)
    best_hf = max(hf_levels, key=lambda level: level["tokens_per_s"])
    systems: dict[str, dict[str, Any]] = {
        "hf": {
            "label": "(a) HF generate, in process",
            "config": f"best batch size {best_hf['batch_size']}",
            **best_hf,
        },
        "naive": {
            "label": "(b) naive repository",
            "config": "1 instance, max_batch_size 1, no dynamic batching, fp32",
            **measure_served(naive, "flan", prompts, data, "naive", args.naive_requests),
        },
        "continuous": {
            "label": "(c)+(d) trb default build",
            "config": f"fp32, 1 instance, dynamic batching, --batching {default_spec.batching}",
            **measure_served(default, "flan", prompts, data, "continuous", args.requests),
        },
        "request": {
            "label": "(e) trb --batching request",
            "config": "fp32, 1 instance, dynamic batching, a batch runs to completion",
            **measure_served(request, "flan", prompts, data, "request", args.requests),
        },
    }
    best = max(("continuous", "request"), key=lambda key: systems[key]["tokens_per_s"])
    continuous, request_level = systems["continuous"], systems["request"]
    ratios = {
        f"best trb ({best}) tokens/s ÷ HF best": verdict(
            systems[best]["tokens_per_s"] / best_hf["tokens_per_s"], 2
        ),
        f"best trb ({best}) tokens/s ÷ naive": verdict(
            systems[best]["tokens_per_s"] / systems["naive"]["tokens_per_s"], 4
        ),
        f"best trb ({best}) p50 ÷ naive p50 (lower is better)": (
            f"{systems[best]['p50_ms'] / systems['naive']['p50_ms']:.2f}"
        ),
        "continuous ÷ request tokens/s": f"{continuous['tokens_per_s'] / request_level['tokens_per_s']:.2f}",
        "continuous ÷ request p50": f"{continuous['p50_ms'] / request_level['p50_ms']:.2f}",
        "continuous ÷ request p99": f"{continuous['p99_ms'] / request_level['p99_ms']:.2f}",
    }
    report = {
        "machine": machine_info(),
        "workload": {
            "new_tokens": NEW_TOKENS,
            "clients": CLIENTS,
            "prompt_tokens": PROMPT_TOKENS,
            "prompts": prompts,
        },
        "systems": systems,
        "hf_levels": hf_levels,
        "ratios": ratios,
        "duration_s": round(time.perf_counter() - began, 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "seq2seq.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (RESULTS / "seq2seq.md").write_text(render_markdown(report), encoding="utf-8")
    LOGGER.info("done in %.0f s; results in %s", report["duration_s"], RESULTS)


if __name__ == "__main__":
    main()
