"""How the cores are shared among the instances of every model one tritonserver serves.

A build sizes ONNX Runtime's intra-op threads for the whole machine: cores / instances of that
repository, written as the `intra_op_threads` parameter of each model's config.pbtxt. Served
together, several repositories would each take the whole machine. So when `trb launch` serves more
than one repository it divides the cores across all instances of all their models and hands each
model its share at load time (TRB_LAUNCH_PARAMETERS, which the templates lay over their config
parameters): the repositories stay as built, hash-checked. One repository keeps what its build chose,
and a model built with an explicit `--threads-per-instance` keeps that number and counts against the
budget.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from model_repo_builder.repository import config as model_config
from model_repo_builder.repository.manifest import MANIFEST_NAME, read_manifest

THREADS_PARAMETER = "intra_op_threads"


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, not the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@dataclass(frozen=True, kw_only=True)
class ModelThreads:
    """One model's instances and the intra-op threads each gets."""

    model: str
    repository: Path
    instances: int
    built: int  # what its config.pbtxt says
    threads: int  # what it runs with
    fixed: bool  # built with an explicit `--threads-per-instance`: kept as is


@dataclass(frozen=True, kw_only=True)
class ThreadSplit:
    """The cores and what every threaded model gets of them."""

    cores: int
    models: tuple[ModelThreads, ...]

    @property
    def total_threads(self) -> int:
        """Intra-op threads of all instances together."""
        return sum(m.instances * m.threads for m in self.models)

    @property
    def oversubscribed(self) -> bool:
        """Whether the instances together run more threads than there are cores."""
        return self.total_threads > self.cores

    def overrides(self) -> dict[str, dict[str, str]]:
        """TRB_LAUNCH_PARAMETERS: the models whose threads differ from their build."""
        return {m.model: {THREADS_PARAMETER: str(m.threads)} for m in self.models if m.threads != m.built}

    def describe(self) -> str:
        """One line: `2 cores: minilm 1×1, t5 1×1 (instances × threads)`."""
        parts = [
            f"{m.model} {m.instances}×{m.threads}" + (" (fixed at build)" if m.fixed else "")
            for m in self.models
        ]
        return f"{self.cores} cores: {', '.join(parts) or 'no threaded model'} (instances × threads)"


def _threads_fixed_at_build(repository: Path) -> bool:
    if not (repository / MANIFEST_NAME).is_file():
        return True  # not built by trb: nothing says its threads may be changed
    return read_manifest(repository).options.get("threads_per_instance") is not None


def thread_split(model_repositories: dict[str, Path], cores: int | None = None) -> ThreadSplit:
    """Divide `cores` (default: this process's) across every instance of every served model.

    Models without an `intra_op_threads` parameter (not trb's) are left out. With a single
    repository every model keeps its build's threads.
    """
    cores = cores or available_cores()
    found = []
    for model, repository in sorted(model_repositories.items()):
        config = model_config.parse((repository / model / "config.pbtxt").read_text(encoding="utf-8"))
        if THREADS_PARAMETER not in config.parameters:
            continue
        instances = sum(group.count or 1 for group in config.instance_group) or 1
        built = int(config.parameters[THREADS_PARAMETER].string_value)
        found.append((model, repository, instances, built, _threads_fixed_at_build(repository)))
    shared = len(set(model_repositories.values())) > 1
    fixed_threads = sum(instances * built for _, _, instances, built, fixed in found if fixed)
    free_instances = sum(instances for _, _, instances, _, fixed in found if not fixed)
    share = max(1, (cores - fixed_threads) // free_instances) if free_instances else 0
    models = tuple(
        ModelThreads(
            model=model,
            repository=repository,
            instances=instances,
            built=built,
            threads=share if shared and not fixed else built,
            fixed=fixed,
        )
        for model, repository, instances, built, fixed in found
    )
    return ThreadSplit(cores=cores, models=models)
