"""trb's seq2seq decode loop in process, without Triton: what the served figures are bounded by.

One script, one run, on flan-t5-small's architecture (random weights, the model and prompts of
bench_seq2seq.py), 20 prompts of ~24 tokens, 32 new tokens each:

    tokens/s    `Seq2SeqGenerator.generate_ids` at batch 20 for fp32, int8 and fp16 builds, and fp32
                with ONNX Runtime's spinning threads
    calls       milliseconds of one first-step decoder call at batch 1 (what admitting one request
                cost before the cross-attention cache model) and of one decoder-with-past step at
                batch 1 and 20

Results: bench/results/seq2seq_inprocess.json and .md; builds under bench/work/seq2seq/ (shared with
bench_seq2seq.py, reused when present).

    python bench/bench_seq2seq_inprocess.py      # about 4 minutes on 2 cores
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from bench_seq2seq import CLIENTS, NEW_TOKENS, RESULTS, WORK, make_model, make_prompts
from common import CORES, built_repository, machine_info

from model_repo_builder.spec import BuildSpec
from model_repo_builder.templates.seq2seq.generation import (
    GenerationParams,
    GeneratorSettings,
    Seq2SeqGenerator,
)

LOGGER = logging.getLogger("bench_seq2seq_inprocess")
SECONDS = 10.0


def tokens_per_s(generator: Seq2SeqGenerator, prompts: list[str]) -> float:
    token_ids = generator.tokenize(prompts)
    params = [GenerationParams(max_new_tokens=NEW_TOKENS)] * len(prompts)
    generator.generate_ids(token_ids[:2], params[:2])  # untimed: first calls pay one-off costs
    tokens, start = 0, time.perf_counter()
    while time.perf_counter() - start < SECONDS:
        tokens += sum(len(ids) for ids in generator.generate_ids(token_ids, params))
    return tokens / (time.perf_counter() - start)


def call_ms(call: Callable[[], Any], repeats: int = 20) -> float:
    call()
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - start) / repeats * 1000


def decoder_calls(generator: Seq2SeqGenerator, prompts: list[str]) -> dict[str, float]:
    figures = {}
    for batch in (1, CLIENTS):
        hidden, mask = generator.encode(generator.tokenize(prompts[:batch]))
        start = np.full((batch, 1), generator.settings.decoder_start_token_id, dtype=np.int64)
        _, cache = generator.first_step(start, hidden, mask)
        tokens = np.zeros(batch, dtype=np.int64)
        for _ in range(NEW_TOKENS // 2):  # a cache half way through the sequence
            _, cache = generator.next_step(tokens, mask, cache)
        if batch == 1:
            figures["first-step decoder, batch 1"] = call_ms(
                partial(generator.first_step, start, hidden, mask)
            )
        figures[f"decoder-with-past step, batch {batch}"] = call_ms(
            partial(generator.next_step, tokens, mask, cache)
        )
    return figures


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    WORK.mkdir(parents=True, exist_ok=True)
    model_dir = make_model(WORK / "flan-t5-small-random")
    prompts = make_prompts(model_dir, CLIENTS)
    settings = GeneratorSettings(intra_op_threads=CORES, eos_token_id=1)
    rows: dict[str, float] = {}
    calls: dict[str, float] = {}
    for precision in ("fp32", "int8", "fp16"):
        spec = BuildSpec(
            source=str(model_dir),
            output=WORK / "repos" / ("default" if precision == "fp32" else precision),
            name="flan",
            precision=precision,
        )
        version = built_repository(spec, reuse=True) / "flan" / "1"
        generator = Seq2SeqGenerator.from_directory(str(version), settings)
        rows[f"{precision}, {CORES} threads"] = tokens_per_s(generator, prompts)
        if precision == "fp32":
            calls = decoder_calls(generator, prompts)
            spinning = dataclasses.replace(settings, allow_spinning=True)
            rows[f"fp32, {CORES} spinning threads"] = tokens_per_s(
                Seq2SeqGenerator.from_directory(str(version), spinning), prompts
            )
        LOGGER.info("%s", rows)
    report = {"machine": machine_info(), "tokens_per_s": rows, "call_ms": calls}
    (RESULTS / "seq2seq_inprocess.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    lines = [
        "# seq2seq decode loop in process (no Triton): flan-t5-small architecture, batch 20, 32 tokens",
        "",
        f"{report['machine']['date']} · {CORES} cores ({report['machine']['cpu']})",
        "",
        "| configuration | tokens/s |",
        "|---|---:|",
        *(f"| {name} | {value:.0f} |" for name, value in rows.items()),
        "",
        "| one ONNX Runtime call (fp32) | ms |",
        "|---|---:|",
        *(f"| {name} | {value:.1f} |" for name, value in calls.items()),
    ]
    (RESULTS / "seq2seq_inprocess.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    LOGGER.info("results in %s", RESULTS)


if __name__ == "__main__":
    main()
