"""How much shared memory, CPU and memory a served repository gets in a container or a pod.

Shared memory: every python-backend instance exchanges its tensors with tritonserver through
/dev/shm. A stub starts with a 1 MiB region (the python backend's `shm-default-byte-size`) and grows
it to hold a request and its response; trb sizes each instance for two of its largest batches
(max batch size × max text bytes × tensors, the bound trb's own models enforce on every text), plus
that first 1 MiB. Docker's default 64 MiB is too small for a few instances of that, so the total is
at least 256 MiB.

CPU: the cores the repository was built to use, instances × ONNX Runtime threads per instance.

Memory: from a sweep run, the server's measured peak resident memory (tritonserver and its stubs)
plus 50% headroom; without one, an estimate from the repository (256 MiB for tritonserver, and per
instance 192 MiB for the stub's Python and ONNX Runtime plus twice the model's files). Measured on
2 CPU cores: all-MiniLM-L6-v2 int8 with 2 instances held 296 MiB; the estimate gives 740 MiB. Shared
memory lives in RAM and counts against a pod's memory limit, so the limit adds it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from model_repo_builder.deploy.facts import RepositoryFacts

MIB = 1 << 20
SHM_FLOOR_BYTES = 256 * MIB
STUB_REGION_BYTES = 1 * MIB
SERVER_BASE_BYTES = 256 * MIB
INSTANCE_BASE_BYTES = 192 * MIB
MEMORY_HEADROOM = 0.5


@dataclass(frozen=True, kw_only=True)
class Resources:
    """What one replica asks for; `basis` says where the memory figure came from."""

    cpu_cores: int
    memory_bytes: int  # the server's own memory, without shared memory
    shm_bytes: int
    gpus: int
    basis: str

    @property
    def memory_limit_bytes(self) -> int:
        """The pod's memory: the server's plus its shared memory (a memory-backed volume)."""
        return self.memory_bytes + self.shm_bytes


def shm_bytes(facts: RepositoryFacts) -> int:
    """Shared memory for all python-backend instances of the repository, at least 256 MiB."""
    total = 0
    for model in facts.models:
        largest_batch = model.max_batch_size * model.max_text_bytes * max(1, model.tensors)
        total += model.instances * (STUB_REGION_BYTES + 2 * largest_batch)
    return _round_up_mib(max(SHM_FLOOR_BYTES, total))


def cpu_cores(facts: RepositoryFacts) -> int:
    """Cores the repository's instances use together (at least 1)."""
    return max(1, sum(model.instances * model.threads_per_instance for model in facts.models))


def estimated_memory_bytes(facts: RepositoryFacts) -> int:
    """Memory of the server and its stubs, estimated from the repository alone."""
    per_instance = sum(
        model.instances * (INSTANCE_BASE_BYTES + 2 * model.file_bytes) for model in facts.models
    )
    return _round_up_mib(SERVER_BASE_BYTES + per_instance)


def resources(facts: RepositoryFacts, measured_rss_bytes: int | None = None, run: str = "") -> Resources:
    """One replica's resources; memory from `measured_rss_bytes` (a sweep's peak) when given."""
    if measured_rss_bytes:
        memory = _round_up_mib(int(measured_rss_bytes * (1 + MEMORY_HEADROOM)))
        basis = (
            f"memory: peak server RSS {measured_rss_bytes / MIB:.0f} MiB measured by the sweep {run} "
            f"+ {MEMORY_HEADROOM:.0%} headroom"
        )
    else:
        memory = estimated_memory_bytes(facts)
        basis = (
            "memory: estimated from the repository (256 MiB + per instance 192 MiB and twice the "
            "model's files); pass --plan RUN_DIR to size it from a sweep's measurement"
        )
    return Resources(
        cpu_cores=cpu_cores(facts),
        memory_bytes=memory,
        shm_bytes=shm_bytes(facts),
        gpus=1 if facts.gpu else 0,
        basis=basis,
    )


def quantity(count_bytes: int) -> str:
    """A Kubernetes quantity in whole MiB ("768Mi")."""
    return f"{math.ceil(count_bytes / MIB)}Mi"


def docker_size(count_bytes: int) -> str:
    """A size for docker's --shm-size and compose's shm_size, in whole MiB ("256m")."""
    return f"{math.ceil(count_bytes / MIB)}m"


def _round_up_mib(count_bytes: int) -> int:
    return math.ceil(count_bytes / MIB) * MIB
