"""What a PyTriton sidecar step costs: MiniLM fp32 served with and without a no-op pre step, one run.

Both repositories are built from the embedded MiniLM; one adds `--pre examples/noop.py:identity`.
Each is launched on its own and driven over HTTP, one text per request, by 1 and by 4 clients for a
fixed number of requests. Reports requests/s, p50/p99 and the with ÷ without ratios.
Writes bench/results/sidecar.{json,md}.
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

from common import built_repository, launch, load_average, machine_info, wait_until_idle

from model_repo_builder.client import embed_texts
from model_repo_builder.perf.analysis import percentile
from model_repo_builder.spec import BuildSpec

LOGGER = logging.getLogger("bench_sidecar")
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
WORK = ROOT / "bench" / "work" / "sidecar"
TEXTS = [f"Request {i}: dynamic batching groups concurrent requests into one execution." for i in range(64)]


def drive(url: str, model: str, requests: int, clients: int) -> dict[str, Any]:
    def one(index: int) -> float:
        began = time.perf_counter()
        embed_texts(model, [TEXTS[index % len(TEXTS)]], url=url)
        return time.perf_counter() - began

    for index in range(8):
        one(index)
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = [value * 1000 for value in pool.map(one, range(requests))]
    elapsed = time.perf_counter() - start
    return {
        "requests_per_s": round(requests / elapsed, 1),
        "p50_ms": round(percentile(latencies, 50), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    shutil.rmtree(WORK, ignore_errors=True)
    variants = {
        "without steps": BuildSpec(source="minilm", output=WORK, name="minilm-plain"),
        "with a no-op pre step": BuildSpec(
            source="minilm",
            output=WORK,
            name="minilm-noop",
            pre=(f"{ROOT / 'examples' / 'noop.py'}:identity",),
        ),
    }
    wait_until_idle(60)
    info = {**machine_info(), "load_average": load_average()}
    rows = []
    for label, spec in variants.items():
        repository = built_repository(spec, reuse=False)
        with launch(repository) as server:
            for clients in (1, 4):
                rows.append(
                    {
                        "variant": label,
                        "clients": clients,
                        **drive(server.http_url, spec.name or "", args.requests, clients),
                    }
                )
                LOGGER.info("%s", rows[-1])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sidecar.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=2) + "\n")
    lines = [
        "# The cost of one PyTriton sidecar step (MiniLM fp32, one text per request, HTTP)",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, load average {info['load_average']}, "
        f"{info['date']}; {args.requests} requests per row.",
        "",
        "| variant | clients | requests/s | p50 ms | p99 ms |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['variant']} | {r['clients']} | {r['requests_per_s']} | {r['p50_ms']} | {r['p99_ms']} |"
        for r in rows
    ]
    for clients in (1, 4):
        plain, noop = (
            next(r for r in rows if r["variant"] == v and r["clients"] == clients) for v in variants
        )
        lines.append("")
        ratio = noop["requests_per_s"] / plain["requests_per_s"]
        lines.append(
            f"{clients} client(s): with ÷ without throughput {ratio:.2f}, "
            f"p50 +{noop['p50_ms'] - plain['p50_ms']:.2f} ms"
        )
    (RESULTS / "sidecar.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
