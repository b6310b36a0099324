"""Specs: the one validated, frozen description of a job that flows down from CLI or manifest.

Every field is keyword-only. Validation happens at construction and the message names the CLI
option, so `BuildSpec(instances=0)` fails with "`--instances` must be ≥ 1, got 0".
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model_repo_builder.errors import SpecError

PRECISIONS = ("fp32", "fp16", "int8")
DEVICE_KINDS = ("cpu", "gpu")
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _require_int_at_least(flag: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"`{flag}` must be an integer ≥ {minimum}, got {value!r}")


def _require_choice(flag: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise SpecError(f"`{flag}` must be one of {', '.join(choices)}; got {value!r}")


def validate_model_name(name: str) -> None:
    """Raise `SpecError` unless `name` is usable as a Triton model directory name."""
    if not _NAME_PATTERN.match(name):
        raise SpecError(
            f"`--name` must be 1-64 characters of letters, digits, '_', '-' or '.', "
            f"starting with a letter or digit; got {name!r}"
        )


@dataclass(frozen=True, kw_only=True)
class BuildSpec:
    """What `trb build` makes: a source model turned into one Triton model repository."""

    source: str
    name: str | None = None
    output: Path = Path("repos")
    precision: str = "fp32"
    instances: int = 1
    kind: str = "cpu"
    max_batch_size: int = 32
    max_queue_delay_us: int = 1000
    max_queue_size: int = 256
    threads_per_instance: int | None = None
    max_length: int | None = None
    allow_pickle: bool = False
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source.strip():
            raise SpecError("`SOURCE` must name a model: a local directory, a Hub id or an alias")
        if self.name is not None:
            validate_model_name(self.name)
        _require_choice("--precision", self.precision, PRECISIONS)
        _require_choice("--kind", self.kind, DEVICE_KINDS)
        _require_int_at_least("--instances", self.instances, 1)
        _require_int_at_least("--max-batch-size", self.max_batch_size, 1)
        _require_int_at_least("--max-queue-delay-us", self.max_queue_delay_us, 0)
        _require_int_at_least("--max-queue-size", self.max_queue_size, 1)
        if self.threads_per_instance is not None:
            _require_int_at_least("--threads-per-instance", self.threads_per_instance, 1)
        if self.max_length is not None:
            _require_int_at_least("--max-length", self.max_length, 2)
        if self.trust_remote_code:
            raise SpecError(
                "`--trust-remote-code` is not supported: trb only builds architectures it knows, "
                "so no code from a model repository is ever executed"
            )
        object.__setattr__(self, "output", Path(self.output))

    def resolved_threads_per_instance(self) -> int:
        """Threads per ONNX Runtime session so that all instances together use the cores once."""
        if self.threads_per_instance is not None:
            return self.threads_per_instance
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return max(1, cores // self.instances)

    def options(self) -> dict[str, Any]:
        """Every option as plain data, for the manifest; `output` is left out (it is where, not what)."""
        data = dataclasses.asdict(self)
        data.pop("output")
        return data

    @classmethod
    def from_options(cls, options: dict[str, Any], **overrides: Any) -> BuildSpec:
        """Build from a manifest's `options` mapping; unknown keys are an error, not silently dropped."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise SpecError(f"manifest has unknown build options: {', '.join(unknown)}")
        merged = {**options, **{k: v for k, v in overrides.items() if v is not None}}
        return cls(**merged)


@dataclass(frozen=True, kw_only=True)
class LaunchSpec:
    """How `trb launch` runs tritonserver on a repository."""

    repository: Path
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    startup_timeout_s: float = 120.0
    exit_timeout_s: int = 30
    log_verbose: int = 0
    extra_args: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        object.__setattr__(self, "repository", Path(self.repository))
        for flag, port in (
            ("--http-port", self.http_port),
            ("--grpc-port", self.grpc_port),
            ("--metrics-port", self.metrics_port),
        ):
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                raise SpecError(f"`{flag}` must be a port number between 1 and 65535, got {port!r}")
        ports = [self.http_port, self.grpc_port, self.metrics_port]
        if len(set(ports)) != len(ports):
            raise SpecError(f"`--http-port`, `--grpc-port` and `--metrics-port` must differ, got {ports}")
        if not self.host:
            raise SpecError("`--host` must not be empty")
        if self.startup_timeout_s <= 0:
            raise SpecError(f"`--startup-timeout` must be > 0 seconds, got {self.startup_timeout_s}")
        _require_int_at_least("--exit-timeout", self.exit_timeout_s, 0)
