"""`trb launch --cpu-smoke`: serve a GPU-target repository on this machine's CPU-only tritonserver.

The local tritonserver has the python backend only. For a smoke run, every model served by the
native onnxruntime backend is replaced, in a temporary copy of the repository, by the python-backend
ONNX Runtime runner (`templates/onnx_runner`) on KIND_CPU instances, under the same name and with
the same inputs, outputs, batching and warmup; every other model is copied as built. The built
repository is checked against its manifest first and never modified; the copy carries no manifest,
since it is no longer what `trb build` wrote (the launcher checks a manifest's file hashes).
What this tests is the ensemble's wiring, I/O and numbers, not the TensorRT engine a GPU builds.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from model_repo_builder.errors import RepositoryError
from model_repo_builder.repository import config as model_config
from model_repo_builder.templates import RUNTIME_FILE, TEMPLATES_DIR

LOGGER = logging.getLogger(__name__)

NATIVE_ONNX_BACKEND = "onnxruntime"
_NATIVE_ONNX_PLATFORM = "onnxruntime_onnx"
RUNNER = TEMPLATES_DIR / "onnx_runner" / "model.py"


def native_onnx_models(repository: Path, models: list[str]) -> list[str]:
    """The models of `repository` that Triton's native onnxruntime backend serves."""
    native = []
    for name in models:
        config = model_config.parse((repository / name / "config.pbtxt").read_text(encoding="utf-8"))
        if config.backend == NATIVE_ONNX_BACKEND or config.platform == _NATIVE_ONNX_PLATFORM:
            native.append(name)
    return native


def runner_configuration(native: dict[str, Any], cores: int) -> dict[str, Any]:
    """The runner's config: the native model's contract on KIND_CPU, its accelerators dropped."""
    groups = native.get("instance_group") or [{"count": 1}]
    count = max(1, int(groups[0].get("count", 1)))
    count = min(count, cores)
    kept = ("name", "max_batch_size", "input", "output", "dynamic_batching", "model_warmup")
    config: dict[str, Any] = {key: native[key] for key in kept if key in native}
    filename = native.get("default_model_filename") or "model.onnx"
    return {
        **config,
        "backend": "python",
        "instance_group": [{"count": count, "kind": model_config.INSTANCE_KINDS["cpu"]}],
        "parameters": model_config.string_parameters(
            {"onnx_file": filename, "intra_op_threads": max(1, cores // count)}
        ),
    }


def _link_or_copy(source: str, target: str) -> None:
    """Hard-link a file into the copy (weights are large and never written), else copy it."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def cpu_smoke_copy(repository: Path, models: list[str], target: Path) -> list[str]:
    """Lay out the smoke copy of `repository` in the empty folder `target`; return the substituted models.

    Raises:
        RepositoryError: No model of the repository uses the native onnxruntime backend (nothing
            to substitute: launch it without `--cpu-smoke`).
    """
    native = native_onnx_models(repository, models)
    if not native:
        raise RepositoryError(
            f"{repository} has no model on Triton's native onnxruntime backend, so `--cpu-smoke` has "
            "nothing to substitute; launch it without `--cpu-smoke`"
        )
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    for name in models:
        ignored = shutil.ignore_patterns("config.pbtxt", "__pycache__") if name in native else None
        shutil.copytree(repository / name, target / name, ignore=ignored, copy_function=_link_or_copy)
        if name not in native:
            continue
        built = model_config.as_dict(
            model_config.parse((repository / name / "config.pbtxt").read_text(encoding="utf-8"))
        )
        runner = runner_configuration(built, cores)
        version_dir = target / name / "1"
        shutil.copy2(RUNNER, version_dir / "model.py")
        shutil.copy2(RUNTIME_FILE, version_dir / RUNTIME_FILE.name)
        (target / name / "config.pbtxt").write_text(model_config.render(runner), encoding="utf-8")
        LOGGER.warning(
            "cpu smoke: %s runs on the python ONNX Runtime runner (CPU), not on the onnxruntime backend "
            "with TensorRT it was built for",
            name,
        )
    return native
