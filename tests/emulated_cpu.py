"""Run a served model's computation on an emulated x86 CPU without VNNI (AVX2 only).

`qemu-x86_64 -cpu EPYC-Rome` runs this machine's Python and ONNX Runtime in user-mode emulation of an
AMD EPYC Rome: CPUID then reports AVX2 without AVX-512 or VNNI, and ONNX Runtime dispatches to the
AVX2 integer kernels such a machine uses (u8×s8 pairs summed in a saturating int16). Used by the
int8 portability test and bench/bench_int8_portability.py. A job is a JSON-able dict:

- {"family": "embedding", "onnx", "tokenizer", "parameters", "texts"} → embeddings;
- {"family": "seq2seq", "files", "tokenizer", "prompts", "targets" (.npy)} → teacher-forced top-1 ids;
- {"family": "saturation-probe"} → one MatMulInteger whose exact sum overflows int16 pairs: it shows
  which kernel ran (exact on VNNI, saturated on AVX2), so a test knows the emulation took effect.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

EMULATED_CPU = "EPYC-Rome"
ROOT = Path(__file__).resolve().parents[1]


def qemu_available() -> bool:
    return shutil.which("qemu-x86_64") is not None


PROBE_DEPTH = 64  # products of 255 × 127 summed; exact: 255 * 127 * 64


def _saturation_probe() -> dict[str, np.ndarray]:
    import onnxruntime as ort
    from onnx import TensorProto, helper

    weights = np.full((PROBE_DEPTH, 4), 127, dtype=np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])],
        "probe",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [1, PROBE_DEPTH])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [1, 4])],
        [helper.make_tensor("B", TensorProto.INT8, list(weights.shape), weights.tobytes(), raw=True)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (product,) = session.run(None, {"A": np.full((1, PROBE_DEPTH), 255, dtype=np.uint8)})
    return {"product": product}


def run_served(job: dict[str, Any]) -> dict[str, np.ndarray]:
    """The served model's outputs for the job's inputs, and the seconds the computation took."""
    if job["family"] == "saturation-probe":
        return _saturation_probe()
    if job["family"] == "embedding":
        from model_repo_builder.templates.embedding.text_embedding import EmbedderSettings, TextEmbedder

        embedder = TextEmbedder(
            job["onnx"], job["tokenizer"], EmbedderSettings.from_parameters(job["parameters"])
        )
        start = time.perf_counter()
        embeddings = embedder.embed(list(job["texts"]))
        return {"embeddings": embeddings, "seconds": np.array(time.perf_counter() - start)}
    from model_repo_builder.templates.seq2seq.generation import GeneratorSettings, Seq2SeqGenerator

    generator = Seq2SeqGenerator(job["files"], job["tokenizer"], GeneratorSettings(intra_op_threads=1))
    token_ids = generator.tokenize(list(job["prompts"]), truncate=True)
    targets = np.load(job["targets"])
    start = time.perf_counter()
    _, first, later = generator.teacher_forced_logits(token_ids, targets[:, :-1])
    logits = np.concatenate([first[:, None, :], later], axis=1)
    return {"top1": logits.argmax(axis=-1), "seconds": np.array(time.perf_counter() - start)}


def run_job(
    job: dict[str, Any], emulated: bool, scratch: Path, timeout_s: float = 900
) -> dict[str, np.ndarray]:
    """`run_served` in a child process: natively, or on the emulated AVX2-only CPU."""
    job_file = scratch / f"job-{time.monotonic_ns()}.json"
    out = job_file.with_suffix(".npz")
    job_file.write_text(json.dumps({**job, "out": str(out)}), encoding="utf-8")
    command = [sys.executable, __file__, str(job_file)]
    if emulated:
        command = ["qemu-x86_64", "-cpu", EMULATED_CPU, *command]
    subprocess.run(
        command, check=True, cwd=ROOT, timeout=timeout_s, stderr=subprocess.DEVNULL if emulated else None
    )
    with np.load(out) as data:
        return {key: data[key] for key in data.files}


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    worker_job = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    np.savez(worker_job["out"], **run_served(worker_job))
