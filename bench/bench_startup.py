"""How long `trb build` and a server start take, and what keeping one int8 layer in fp32 buys.

One script, one run, figures the READMEs and issue notes quote:

    build       wall time of `trb build` (export, conversion, verification, atomic write) for the
                embedded MiniLM at fp32 and int8, and for flan-t5-small's architecture (random
                weights) at fp32 and int8; the size of the ONNX files each repository holds
    ready       seconds from starting tritonserver on each repository until every model is ready,
                over several starts
    int8 layers MiniLM's int8 verification (cosine with the PyTorch model) with and without the
                per-architecture exclusion list `models.registry.INT8_KEEP_FP32` (without it, the
                build is refused when it misses the int8 tolerance; its figures are still recorded)

Results: bench/results/startup.json and bench/results/startup.md; scratch under bench/work/startup/.

    python bench/bench_startup.py            # about 4 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from unittest import mock

from common import launch, load_average, machine_info

from model_repo_builder.build import build
from model_repo_builder.errors import VerificationError
from model_repo_builder.models.registry import INT8_KEEP_FP32
from model_repo_builder.spec import BuildSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from seq2seq_fixtures import FLAN_T5_SMALL, write_t5  # noqa: E402

LOGGER = logging.getLogger("bench_startup")

BENCH_DIR = Path(__file__).resolve().parent
WORK = BENCH_DIR / "work" / "startup"
RESULTS = BENCH_DIR / "results"


def timed_build(spec: BuildSpec) -> tuple[Path, float, dict[str, Any]]:
    """Build `spec`; return the repository, the wall time and the verification summary."""
    began = time.perf_counter()
    result = build(spec)
    seconds = time.perf_counter() - began
    LOGGER.info("built %s in %.1f s", spec.name, seconds)
    return result.repository, seconds, result.manifest.verification


def ready_seconds(repository: Path, starts: int) -> list[float]:
    """Seconds from starting tritonserver until it reports every model ready, `starts` times."""
    seconds = []
    for _ in range(starts):
        began = time.perf_counter()
        with launch(repository):
            seconds.append(time.perf_counter() - began)
    return seconds


def render_markdown(report: dict[str, Any]) -> str:
    machine = report["machine"]
    lines = [
        "# Build and start-up times",
        "",
        f"{machine['date']} · {machine['cores']} cores ({machine['cpu']}) · {machine['platform']}",
        "",
        "| repository | build s | ONNX MB | server ready s (median, min–max) | verification |",
        "|---|---:|---:|---:|---|",
    ]
    for row in report["repositories"]:
        ready = row["ready_s"]
        lines.append(
            f"| {row['label']} | {row['build_s']:.1f} | {row['onnx_mb']:.0f} | "
            f"{statistics.median(ready):.1f} ({min(ready):.1f}–{max(ready):.1f}) | "
            f"{row['verification']['summary']} |"
        )
    exclusion = report["int8_exclusion"]
    lines += [
        "",
        f"MiniLM int8, cosine with PyTorch on the verification texts (nodes kept fp32: "
        f"{', '.join(exclusion['kept_fp32'])}):",
        "",
        "| int8 variant | mean cosine | worst cosine | verification |",
        "|---|---:|---:|---|",
    ]
    for label, verification in exclusion["variants"].items():
        lines.append(
            f"| {label} | {verification['mean_cosine']:.4f} | {verification['min_cosine']:.4f} | "
            f"{verification.get('verdict', 'passes')} |"
        )
    lines += ["", f"1-minute load average at the end: {report['load_average']:.1f}", ""]
    lines += ["## Versions", ""]
    lines += [f"- {package}: {version}" for package, version in machine["versions"].items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--starts", type=int, default=3, help="server starts per repository")
    args = parser.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    t5_dir = write_t5(WORK / "flan-t5-small-random", FLAN_T5_SMALL)
    specs = {
        "MiniLM fp32": BuildSpec(source="minilm", output=WORK / "minilm-fp32", name="minilm"),
        "MiniLM int8": BuildSpec(
            source="minilm", output=WORK / "minilm-int8", name="minilm", precision="int8"
        ),
        "flan-t5-small architecture fp32": BuildSpec(source=str(t5_dir), output=WORK / "t5", name="flan"),
        "flan-t5-small architecture int8": BuildSpec(
            source=str(t5_dir), output=WORK / "t5-int8", name="flan", precision="int8"
        ),
    }
    repositories = []
    for label, spec in specs.items():
        repository, seconds, verification = timed_build(spec)
        repositories.append(
            {
                "label": label,
                "build_s": seconds,
                "onnx_mb": sum(path.stat().st_size for path in repository.rglob("*.onnx")) / 1e6,
                "ready_s": ready_seconds(repository, args.starts),
                "verification": verification,
            }
        )
    kept = INT8_KEEP_FP32["bert"]
    with mock.patch.dict(INT8_KEEP_FP32, {"bert": ()}):
        spec = BuildSpec(source="minilm", output=WORK / "minilm-int8-all", name="minilm", precision="int8")
        try:
            _, _, every_layer = timed_build(spec)
        except VerificationError as error:  # what the exclusion is there for
            every_layer = {**(error.report or {}), "verdict": "fails the int8 tolerance"}
    report = {
        "machine": machine_info(),
        "repositories": repositories,
        "int8_exclusion": {
            "kept_fp32": list(kept),
            "variants": {
                "every MatMul int8": every_layer,
                "trb default (listed nodes kept fp32)": repositories[1]["verification"],
            },
        },
        "load_average": load_average(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "startup.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (RESULTS / "startup.md").write_text(render_markdown(report), encoding="utf-8")
    LOGGER.info("results in %s", RESULTS)


if __name__ == "__main__":
    main()
