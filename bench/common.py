"""Helpers shared by the benchmark scripts in this folder: builds, servers, the machine's state."""

from __future__ import annotations

import datetime
import importlib.metadata
import logging
import os
import platform
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from model_repo_builder.build import build
from model_repo_builder.repository import config as model_config
from model_repo_builder.repository.manifest import MANIFEST_NAME
from model_repo_builder.runtime.ports import free_ports
from model_repo_builder.runtime.server import TritonServer
from model_repo_builder.runtime.tools import TRITON_VERSION
from model_repo_builder.spec import BuildSpec, LaunchSpec

LOGGER = logging.getLogger(__name__)

CORES = len(os.sched_getaffinity(0))
PACKAGES = (
    "trb",
    "onnxruntime",
    "tokenizers",
    "tritonclient",
    "nvidia-pytriton",
    "torch",
    "transformers",
    "sentence-transformers",
    "numpy",
)


def built_repository(spec: BuildSpec, reuse: bool) -> Path:
    """Build `spec` (or reuse an earlier build of it, when `reuse`) and return the repository directory."""
    if spec.name is None:
        raise ValueError("benchmark builds need an explicit name")
    repository = spec.output / spec.name
    if reuse and (repository / MANIFEST_NAME).is_file():
        LOGGER.info("reusing %s", repository)
        return repository
    LOGGER.info("building %s", spec.name)
    return build(spec).repository


def load_average() -> float:
    """The 1-minute load average: how busy the cores were, including with other people's work."""
    return round(os.getloadavg()[0], 2)


def busy_fraction(seconds: float = 2.0) -> float:
    """Share of all cores' time spent busy over the next `seconds`, by any process (/proc/stat)."""

    def sample() -> list[int]:
        with open("/proc/stat", encoding="utf-8") as stat:
            return [int(field) for field in stat.readline().split()[1:]]

    before = sample()
    time.sleep(seconds)
    delta = [after - first for first, after in zip(before, sample(), strict=True)]
    idle = delta[3] + delta[4]  # idle and iowait
    return round(1 - idle / max(sum(delta), 1), 3)


def wait_until_idle(limit_s: float) -> float:
    """Wait up to `limit_s` for the cores to be under 10% busy; return how busy they were last."""
    deadline = time.monotonic() + limit_s
    busy = busy_fraction()
    while busy > 0.1 and time.monotonic() < deadline:
        LOGGER.info("cores are %.0f%% busy with other work; waiting for them to quieten", busy * 100)
        time.sleep(10)
        busy = busy_fraction()
    return busy


def launch(repository: Path) -> TritonServer:
    http_port, grpc_port, metrics_port = free_ports(3)
    return TritonServer(
        LaunchSpec(
            repositories=(repository,), http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port
        )
    )


def rerendered_copy(source: Path, name: str, target: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    """Copy the repository at `source` to `target` with `change` applied to `name`'s config.

    The config is parsed and rendered again through Triton's schema. The copy is no longer what
    `trb build` wrote, so it carries no manifest (the launcher checks a manifest's file hashes).
    """
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source / name, target / name, ignore=shutil.ignore_patterns("config.pbtxt"))
    config = model_config.as_dict(model_config.parse((source / name / "config.pbtxt").read_text("utf-8")))
    change(config)
    (target / name / "config.pbtxt").write_text(model_config.render(config), encoding="utf-8")
    return target


def make_naive(config: dict[str, Any]) -> None:
    """How a newcomer serves a model: one instance, batch size 1, no dynamic batching."""
    config.pop("dynamic_batching")
    config["max_batch_size"] = 1
    config["instance_group"] = [{"count": 1, "kind": "KIND_CPU"}]
    config["model_warmup"] = [w for w in config.get("model_warmup", []) if int(w["batch_size"]) == 1]


def machine_info() -> dict[str, Any]:
    cpu_model = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    versions["tritonserver"] = TRITON_VERSION
    versions["perf_analyzer"] = versions["tritonclient"]
    versions["python"] = platform.python_version()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cores": CORES,
        "cpu": cpu_model,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "platform": platform.platform(),
        "versions": versions,
    }
