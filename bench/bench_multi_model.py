"""Two models behind one server: each alone vs both driven together (the cost of sharing).

Two real-weight models, all-MiniLM-L6-v2 int8 and fp32 (embeddings, max batch 8, one instance each),
are served by one tritonserver and measured with `trb sweep REPO_A REPO_B --models a,b` (the library
call behind it): at each concurrency, each model alone (the other loaded and idle), then both at
once, one perf_analyzer per model started together. Shared figures count only the requests that
completed while both models' windows were open; the overlap column says how much of each model's
windows that was. Ratios are shared ÷ solo.

The same pair is measured three times: as `trb build` makes it (trb's own queue bound of 256, the
default), with `--max-queue-size 0` (no bound), and with the bound of 256 kept by Triton's queue
policy instead (how trb built it before): any Triton queue policy turns off the dynamic batcher's
prefetching in Triton 2.51 and the 0.5 s stalls seen elsewhere come with it (README, bounded queue).

Results: bench/results/multi_model.json and bench/results/multi_model.md; scratch under
bench/work/multi_model/.

    python bench/bench_multi_model.py            # about 2 minutes on 2 cores; --reuse keeps builds
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from common import CORES, built_repository, load_average, machine_info, rerendered_copy

from model_repo_builder.perf.multi_model import run_multi_model_sweep
from model_repo_builder.perf.report import sharing_rows
from model_repo_builder.spec import BuildSpec, MultiModelSweepSpec

LOGGER = logging.getLogger("bench_multi_model")
ROOT = Path(__file__).resolve().parent
WORK = ROOT / "work" / "multi_model"
VARIANTS = {"default": 256, "unbounded": 0, "triton-bound": 256}  # variant → --max-queue-size


def triton_bound(config: dict[str, Any]) -> None:
    """The bound kept by Triton's queue policy (the stub then answers in execute(), no own queue)."""
    bound = int(config["parameters"].pop("max_queue_size")["string_value"])
    config["dynamic_batching"]["default_queue_policy"] = {
        "timeout_action": "REJECT",
        "default_timeout_microseconds": 0,
        "allow_timeout_override": False,
        "max_queue_size": bound,
    }


def measure(variant: str, queue: int, reuse: bool, concurrency: tuple[int, ...], interval_ms: int) -> dict:
    built = tuple(
        built_repository(
            BuildSpec(
                source="minilm",
                output=WORK / variant,
                precision=precision,
                name=f"minilm-{precision}",
                max_batch_size=8,
                max_queue_size=queue,
            ),
            reuse,
        )
        for precision in ("int8", "fp32")
    )
    repositories = built
    if variant == "triton-bound":
        repositories = tuple(
            rerendered_copy(
                repository, repository.name, WORK / variant / "policy" / repository.name, triton_bound
            )
            for repository in built
        )
    spec = MultiModelSweepSpec(
        repositories=repositories,
        models=tuple(repository.name for repository in built),
        concurrency=concurrency,
        measurement_interval_ms=interval_ms,
        output=WORK / variant / "run",
    )
    outcome = run_multi_model_sweep(spec)
    return {
        "max_queue_size": queue,
        "command": f"trb sweep {' '.join(str(r.relative_to(ROOT.parent)) for r in repositories)} "
        f"--concurrency {','.join(map(str, concurrency))} --interval-ms {interval_ms}",
        "summary": outcome.results["summary"],
        "models": outcome.results["models"],
        "rows": list(sharing_rows(outcome.results)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,4", help="levels, applied to each model")
    parser.add_argument("--interval-ms", type=int, default=2000, help="perf_analyzer window length")
    parser.add_argument("--reuse", action="store_true", help="reuse earlier builds")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    concurrency = tuple(int(part) for part in arguments.concurrency.split(","))
    variants = {
        variant: measure(variant, queue, arguments.reuse, concurrency, arguments.interval_ms)
        for variant, queue in VARIANTS.items()
    }
    results = {
        "machine": machine_info(),
        "load_average_after": load_average(),
        "setup": {
            "models": "all-MiniLM-L6-v2 int8 and fp32 (real weights), max batch 8, 1 instance each",
            "concurrency_per_model": list(concurrency),
            "interval_ms": arguments.interval_ms,
            "windows": 3,
        },
        "variants": variants,
    }
    (ROOT / "results").mkdir(exist_ok=True)
    (ROOT / "results" / "multi_model.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (ROOT / "results" / "multi_model.md").write_text(_markdown(results), encoding="utf-8")
    print(_markdown(results))


def _cell(value: Any, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _markdown(results: dict[str, Any]) -> str:
    machine, setup = results["machine"], results["setup"]
    lines = [
        "# Two models behind one server: alone vs together",
        "",
        f"{machine['date']}, {machine['cores']} cores ({machine['cpu']}), load average after the run "
        f"{results['load_average_after']}. `python bench/bench_multi_model.py`; {setup['models']}; "
        f"{setup['windows']} perf_analyzer windows of {setup['interval_ms']} ms per run; each concurrency "
        "is applied to each model: alone (the other model loaded and idle), then both together.",
        "",
        f"The machine has {CORES} cores: the two models' stubs, tritonserver and the two perf_analyzer "
        "processes share them, so the cost of sharing shows directly (each model's ONNX Runtime gets "
        "half the cores in both cases: trb's thread split divides them across the served models).",
    ]
    for variant, measured in results["variants"].items():
        lines += [
            "",
            f"## {variant} (`--max-queue-size {measured['max_queue_size']}`"
            + (", kept by Triton's queue policy)" if variant == "triton-bound" else ")"),
            "",
            f"    {measured['command']}",
            "",
            "| model | concurrency | solo req/s | shared req/s | shared ÷ solo | solo p50 / p99 ms "
            "| shared p50 / p99 ms | p99 shared ÷ solo | overlap |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in measured["rows"]:
            cells = [
                row["model"],
                f"{row['load']:g}",
                _cell(row["solo_rps"]),
                _cell(row["shared_rps"]),
                _cell(row["throughput_ratio"], 2),
                f"{_cell(row['solo_p50_ms'])} / {_cell(row['solo_p99_ms'])}",
                f"{_cell(row['shared_p50_ms'])} / {_cell(row['shared_p99_ms'])}",
                _cell(row["p99_ratio"], 2),
                _cell(row["overlap"], 3),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", measured["summary"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
