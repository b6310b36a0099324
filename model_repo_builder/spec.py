"""Specs: the one validated, frozen description of a job that flows down from CLI or manifest.

Every field is keyword-only. Validation happens at construction and the message names the CLI
option, so `BuildSpec(instances=0)` fails with "`--instances` must be ≥ 1, got 0".
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model_repo_builder.errors import SpecError

PRECISIONS = ("fp32", "fp16", "int8")
DEVICE_KINDS = ("cpu", "gpu")
# Where a repository is meant to run. `cpu`: every model a python-backend model (ONNX Runtime inside
# the stub, on `--kind` instances). `gpu`: an ensemble whose model step is Triton's native onnxruntime
# backend with the TensorRT execution accelerator on KIND_GPU instances (repository/gpu_embedding.py).
TARGETS = ("cpu", "gpu")
# What the model step is: ONNX (run by ONNX Runtime, on GPU through its TensorRT accelerator) or a
# TensorRT plan (built on the GPU that serves it; not yet).
MODEL_FORMATS = ("onnx", "tensorrt")
# How a text-to-text generation model batches: whole requests run to completion together, or
# sequences join and leave the running batch at every decode step. Embedding models ignore it.
# Continuous is the default: on bench/bench_seq2seq.py (flan-t5-small, 20 clients) it gave more
# tokens/s and a lower median latency than request-level batching (bench/results/seq2seq.md).
BATCHING_MODES = ("request", "continuous")
DEFAULT_BATCHING = "continuous"
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _require_int_at_least(flag: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"`{flag}` must be an integer ≥ {minimum}, got {value!r}")


def _require_choice(flag: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise SpecError(f"`{flag}` must be one of {', '.join(choices)}; got {value!r}")


def _require_ports(http_port: Any, grpc_port: Any, metrics_port: Any) -> None:
    """The three Triton ports: each a port number, all different."""
    for flag, port in (
        ("--http-port", http_port),
        ("--grpc-port", grpc_port),
        ("--metrics-port", metrics_port),
    ):
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise SpecError(f"`{flag}` must be a port number between 1 and 65535, got {port!r}")
    ports = [http_port, grpc_port, metrics_port]
    if len(set(ports)) != len(ports):
        raise SpecError(f"`--http-port`, `--grpc-port` and `--metrics-port` must differ, got {ports}")


def parse_gpu_list(text: str) -> tuple[int, ...]:
    """`--gpus 0,1` as GPU ids; anything but comma-separated integers is a `SpecError`."""
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() for part in parts):
        raise SpecError(f"`--gpus` must be comma-separated GPU ids such as 0,1; got {text!r}")
    return tuple(int(part) for part in parts)


def validate_model_name(name: str) -> None:
    """Raise `SpecError` unless `name` is usable as a Triton model directory name."""
    if not isinstance(name, str) or not _NAME_PATTERN.fullmatch(name):
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
    instances: int | None = None  # None: the task's default for the target (`Task.default_instances`)
    kind: str = ""  # "": cpu, or gpu with `target` gpu (resolved at construction)
    target: str = "cpu"
    gpus: tuple[int, ...] = ()  # GPU ids for KIND_GPU instances, `instances` on each; (): every GPU
    model_format: str = "onnx"
    max_batch_size: int = 32
    max_queue_delay_us: int = 1000
    max_queue_size: int = 256
    threads_per_instance: int | None = None
    max_length: int | None = None
    allow_pickle: bool = False
    trust_remote_code: bool = False
    batching: str = DEFAULT_BATCHING
    task: str | None = None  # None: the task the model's own files name
    int8_scheme: str = "auto"  # how int8 weights are quantized (export/quantize.py)
    max_text_bytes: int | None = None  # per text; None: sized from the model's window
    pre: tuple[str, ...] = ()  # pre-processing steps, in order: `file.py:function` or `module:function`
    post: tuple[str, ...] = ()  # post-processing steps, in order
    response_cache: bool = False  # Triton's response cache for repeated inputs (not for decoupled models)
    priority_levels: int = 0  # 0: one queue; N: levels 1 (highest) … N
    default_priority_level: int | None = None  # None: the lowest level, N
    priority_queues: tuple[str, ...] = ()  # per-level queue policy: `LEVEL=MAX_QUEUE_SIZE[:TIMEOUT_US]`
    rate_limit_resources: tuple[str, ...] = ()  # `NAME=COUNT`: what each instance needs to execute

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source.strip():
            raise SpecError("`SOURCE` must name a model: a local directory, a Hub id or an alias")
        if self.task is not None:
            from model_repo_builder.tasks import buildable_names

            _require_choice("--task", self.task, tuple(buildable_names()))
        if self.name is not None:
            validate_model_name(self.name)
        _require_choice("--precision", self.precision, PRECISIONS)
        self._resolve_device()
        _require_choice("--batching", self.batching, BATCHING_MODES)
        from model_repo_builder.export.quantize import INT8_SCHEME_CHOICES

        _require_choice("--int8-scheme", self.int8_scheme, INT8_SCHEME_CHOICES)
        if self.instances is not None:
            _require_int_at_least("--instances", self.instances, 1)
        _require_int_at_least("--max-batch-size", self.max_batch_size, 1)
        _require_int_at_least("--max-queue-delay-us", self.max_queue_delay_us, 0)
        _require_int_at_least("--max-queue-size", self.max_queue_size, 0)
        if self.threads_per_instance is not None:
            _require_int_at_least("--threads-per-instance", self.threads_per_instance, 1)
        if self.max_length is not None:
            _require_int_at_least("--max-length", self.max_length, 2)
        if self.max_text_bytes is not None:
            _require_int_at_least("--max-text-bytes", self.max_text_bytes, 1)
        if self.trust_remote_code:
            raise SpecError(
                "`--trust-remote-code` is not supported: trb only builds architectures it knows, "
                "so no code from a model repository is ever executed"
            )
        self._validate_priorities()
        self.rate_limiter_resources()  # validates
        object.__setattr__(self, "output", Path(self.output))
        object.__setattr__(self, "pre", tuple(self.pre))  # a manifest holds lists
        object.__setattr__(self, "post", tuple(self.post))
        object.__setattr__(self, "priority_queues", tuple(self.priority_queues))
        object.__setattr__(self, "rate_limit_resources", tuple(self.rate_limit_resources))

    def _validate_priorities(self) -> None:
        _require_int_at_least("--priority-levels", self.priority_levels, 0)
        if self.priority_levels == 0:
            if self.default_priority_level is not None or self.priority_queues:
                raise SpecError(
                    "`--default-priority-level` and `--priority-queue` need `--priority-levels` ≥ 1"
                )
            return
        if self.default_priority_level is not None:
            _require_int_at_least("--default-priority-level", self.default_priority_level, 1)
            if self.default_priority_level > self.priority_levels:
                raise SpecError(
                    f"`--default-priority-level` must be between 1 and {self.priority_levels} "
                    f"(`--priority-levels`), got {self.default_priority_level}"
                )
        self.priority_queue_policies()  # validates

    def priority_queue_policies(self) -> dict[int, tuple[int, int]]:
        """`--priority-queue LEVEL=SIZE[:TIMEOUT_US]` as level → (max queue size, timeout in µs)."""
        policies: dict[int, tuple[int, int]] = {}
        for item in self.priority_queues:
            match = re.fullmatch(r"(\d+)=(\d+)(?::(\d+))?", str(item).strip())
            if match is None:
                raise SpecError(
                    "`--priority-queue` must be LEVEL=MAX_QUEUE_SIZE[:TIMEOUT_US], e.g. 2=16:50000; "
                    f"got {item!r}"
                )
            level, size, timeout = int(match[1]), int(match[2]), int(match[3] or 0)
            if not 1 <= level <= self.priority_levels:
                raise SpecError(
                    f"`--priority-queue` level must be between 1 and {self.priority_levels}, got {level}"
                )
            if level in policies:
                raise SpecError(f"`--priority-queue` gives level {level} twice")
            policies[level] = (size, timeout)
        return policies

    def rate_limiter_resources(self) -> dict[str, int]:
        """`--rate-limit-resource NAME=COUNT` as name → count."""
        resources: dict[str, int] = {}
        for item in self.rate_limit_resources:
            match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_.-]*)=(\d+)", str(item).strip())
            if match is None or int(match[2]) < 1:
                raise SpecError(f"`--rate-limit-resource` must be NAME=COUNT with COUNT ≥ 1, got {item!r}")
            if match[1] in resources:
                raise SpecError(f"`--rate-limit-resource` gives {match[1]} twice")
            resources[match[1]] = int(match[2])
        return resources

    def _resolve_device(self) -> None:
        """`--target gpu` implies `--kind gpu`; `--gpus` and `--format tensorrt` need a GPU target.

        `--target` decides the repository's layout (one python-backend model, or an ensemble around
        the native onnxruntime backend) and `--kind` only where instances run, so `--target gpu`
        sets the kind rather than replacing the option: `--kind gpu` alone keeps its old meaning
        (the python-backend model with ONNX Runtime's CUDA provider).
        """
        _require_choice("--target", self.target, TARGETS)
        _require_choice("--format", self.model_format, MODEL_FORMATS)
        if not self.kind:
            object.__setattr__(self, "kind", "gpu" if self.target == "gpu" else "cpu")
        _require_choice("--kind", self.kind, DEVICE_KINDS)
        if self.target == "gpu" and self.kind != "gpu":
            raise SpecError(
                f"`--target gpu` runs the model step on KIND_GPU instances; `--kind {self.kind}` "
                "contradicts it (leave `--kind` out)"
            )
        gpus = tuple(self.gpus)  # a manifest holds a list
        for gpu in gpus:
            _require_int_at_least("--gpus", gpu, 0)
        if len(set(gpus)) != len(gpus):
            raise SpecError(f"`--gpus` lists a GPU twice: {','.join(map(str, gpus))}")
        if gpus and self.kind != "gpu":
            raise SpecError("`--gpus` places KIND_GPU instances; add `--target gpu`")
        object.__setattr__(self, "gpus", gpus)
        if self.model_format == "tensorrt" and self.target != "gpu":
            raise SpecError("`--format tensorrt` builds TensorRT plans for GPUs; add `--target gpu`")

    def int8_candidates(self) -> list[BuildSpec]:
        """The specs a build tries in turn: `--int8-scheme auto` becomes each portable scheme in order."""
        from model_repo_builder.export.quantize import AUTO_INT8_SCHEMES

        if self.precision != "int8" or self.int8_scheme != "auto":
            return [self]
        return [dataclasses.replace(self, int8_scheme=scheme) for scheme in AUTO_INT8_SCHEMES]

    def int8(self) -> Any:
        """The `Int8Scheme` to quantize with (`auto` resolves to its first candidate)."""
        from model_repo_builder.export.quantize import AUTO_INT8_SCHEMES, INT8_SCHEMES

        return INT8_SCHEMES[AUTO_INT8_SCHEMES[0] if self.int8_scheme == "auto" else self.int8_scheme]

    @property
    def instance_count(self) -> int:
        """The instances to build; `build` resolves an unset `--instances` before anything reads it."""
        if self.instances is None:
            raise ValueError("`instances` is unresolved: `build` sets the task's default first")
        return self.instances

    def resolved_threads_per_instance(self) -> int:
        """Threads per ONNX Runtime session so that all instances together use the cores once."""
        if self.threads_per_instance is not None:
            return self.threads_per_instance
        from model_repo_builder.runtime.threads import available_cores

        return max(1, available_cores() // self.instance_count)

    def options(self) -> dict[str, Any]:
        """Every option as plain data, for the manifest; `output` is left out (it is where, not what)."""
        data = dataclasses.asdict(self)
        data.pop("output")
        data["pre"], data["post"] = list(self.pre), list(self.post)  # YAML has lists, not tuples
        data["priority_queues"] = list(self.priority_queues)
        data["rate_limit_resources"] = list(self.rate_limit_resources)
        data["gpus"] = list(self.gpus)
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
    """How `trb launch` runs one tritonserver on one or several repositories, served together."""

    repositories: tuple[Path, ...]
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    startup_timeout_s: float = 120.0
    exit_timeout_s: int = 30
    log_verbose: int = 0
    extra_args: tuple[str, ...] = field(default_factory=tuple)
    cache_size_mb: int = 64  # the response cache, when a served model has it on
    rate_limit_resources: tuple[str, ...] = ()  # `NAME=COUNT`: the budget rate-limited models share
    # Serve a GPU-target repository on the local CPU server: models of the native onnxruntime
    # backend run on the python ONNX Runtime runner, in a temporary copy (runtime/cpu_smoke.py).
    cpu_smoke: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.repositories, (str, Path)):
            raise SpecError("`repositories` must be a sequence of paths, not one path")
        given = tuple(Path(r) for r in self.repositories)
        if not given:
            raise SpecError("`REPOSITORY` is required: at least one repository to serve")
        resolved = [path.resolve() for path in given]
        repeated = sorted({str(path) for path in given if resolved.count(path.resolve()) > 1})
        if repeated:
            raise SpecError(f"`REPOSITORY` given more than once: {', '.join(repeated)}")
        object.__setattr__(self, "repositories", given)
        if self.cpu_smoke and len(given) != 1:
            raise SpecError(f"`--cpu-smoke` serves one repository at a time, got {len(given)}")
        _require_ports(self.http_port, self.grpc_port, self.metrics_port)
        if not self.host:
            raise SpecError("`--host` must not be empty")
        if self.startup_timeout_s <= 0:
            raise SpecError(f"`--startup-timeout` must be > 0 seconds, got {self.startup_timeout_s}")
        _require_int_at_least("--exit-timeout", self.exit_timeout_s, 0)
        _require_int_at_least("--cache-size-mb", self.cache_size_mb, 1)
        object.__setattr__(self, "rate_limit_resources", tuple(self.rate_limit_resources))
        for item in self.rate_limit_resources:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*=[1-9]\d*", str(item).strip()):
                raise SpecError(f"`--rate-limit-resource` must be NAME=COUNT with COUNT ≥ 1, got {item!r}")

    @property
    def repository(self) -> Path:
        """The first repository (the only one, usually)."""
        return self.repositories[0]


PROFILE_KINDS = ("ramp", "interval", "soak", "stress")
SEARCH_STRATEGIES = ("coordinate", "grid")


@dataclass(frozen=True, kw_only=True)
class SweepSpec:
    """What `trb sweep` measures, against which server, and what it plans for."""

    repository: Path | None = None
    url: str | None = None
    model: str | None = None
    output: Path | None = None
    concurrency: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    request_rates: tuple[float, ...] = ()
    slo: str | None = None
    target_qps: float | None = None
    cost_per_hour: float | None = None
    headroom: float = 0.2
    search: bool = False
    search_strategy: str = "coordinate"
    search_instances: tuple[int, ...] = (1, 2)
    search_max_batch_sizes: tuple[int, ...] = (8, 32)
    search_queue_delays_us: tuple[int, ...] = (0, 2000)
    profiles: tuple[str, ...] = ()
    profile_duration_s: float = 30.0
    prompts: Path | None = None
    protocol: str = "grpc"
    measurement_interval_ms: int = 1000
    budget_s: float | None = None
    # Text-generation models: new tokens every request asks for (None: the model's default).
    max_new_tokens: int | None = None

    def __post_init__(self) -> None:
        if (self.repository is None) == (self.url is None):
            raise SpecError("give a repository to launch, or `--url` of a running server (not both)")
        if self.url is not None and not self.model:
            raise SpecError("`--model` is required with `--url` (the name of the served model)")
        if self.repository is not None:
            object.__setattr__(self, "repository", Path(self.repository))
        if self.search and self.repository is None:
            raise SpecError("`--search` needs a repository: it relaunches the model with each configuration")
        if not self.concurrency and not self.request_rates:
            raise SpecError("give at least one `--concurrency` or `--request-rate` level")
        if self.max_new_tokens is not None:
            _require_int_at_least("--max-new-tokens", self.max_new_tokens, 1)
        for level in self.concurrency:
            _require_int_at_least("--concurrency", level, 1)
        for rate in self.request_rates:
            if not rate > 0:
                raise SpecError(f"`--request-rate` must be > 0 requests/s, got {rate!r}")
        for flag, values in (
            ("--search-instances", self.search_instances),
            ("--search-max-batch-sizes", self.search_max_batch_sizes),
        ):
            for value in values:
                _require_int_at_least(flag, value, 1)
        for delay in self.search_queue_delays_us:
            _require_int_at_least("--search-queue-delays-us", delay, 0)
        unknown = sorted(set(self.profiles) - set(PROFILE_KINDS))
        if unknown:
            raise SpecError(f"`--profile` must be among {', '.join(PROFILE_KINDS)}; got {', '.join(unknown)}")
        if self.search_strategy not in SEARCH_STRATEGIES:
            raise SpecError(
                f"search strategy must be one of {', '.join(SEARCH_STRATEGIES)}, got {self.search_strategy!r}"
            )
        if not self.profile_duration_s >= 3:
            raise SpecError(f"`--profile-duration` must be ≥ 3 seconds, got {self.profile_duration_s!r}")
        if self.protocol not in ("grpc", "http"):
            raise SpecError(f"`--protocol` must be grpc or http, got {self.protocol!r}")
        if not 0 <= self.headroom < 1:
            raise SpecError(f"`--headroom` must be in [0, 1), got {self.headroom!r}")
        if self.target_qps is not None and not self.target_qps > 0:
            raise SpecError(f"`--target-qps` must be > 0, got {self.target_qps!r}")
        if self.cost_per_hour is not None and not self.cost_per_hour >= 0:
            raise SpecError(f"`--cost-per-hour` must be ≥ 0, got {self.cost_per_hour!r}")
        _require_int_at_least("--interval-ms", self.measurement_interval_ms, 100)
        if self.budget_s is not None and not self.budget_s > 0:
            raise SpecError(f"`--budget` must be > 0 seconds, got {self.budget_s!r}")
        if self.prompts is not None:
            object.__setattr__(self, "prompts", Path(self.prompts))


@dataclass(frozen=True, kw_only=True)
class MultiModelSweepSpec:
    """What `trb sweep REPO… --models a,b` measures: several models of one server, solo and together.

    Each level of `concurrency` (and of `request_rates`) is applied to every model: first to each
    model alone, then to all of them at once, one perf_analyzer per model.
    """

    repositories: tuple[Path, ...] = ()
    url: str | None = None
    models: tuple[str, ...] = ()  # empty: the main model of each repository
    output: Path | None = None
    concurrency: tuple[int, ...] = (1, 4)
    request_rates: tuple[float, ...] = ()
    prompts: Path | None = None
    protocol: str = "grpc"
    measurement_interval_ms: int = 1000
    max_new_tokens: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.repositories, (str, Path)):
            raise SpecError("`repositories` must be a sequence of paths, not one path")
        object.__setattr__(self, "repositories", tuple(Path(r) for r in self.repositories))
        object.__setattr__(self, "models", tuple(self.models))
        if bool(self.repositories) == (self.url is not None):
            raise SpecError("give repositories to launch, or `--url` of a running server (not both)")
        if self.url is not None and not self.models:
            raise SpecError("`--models` is required with `--url`: the names of the served models, e.g. a,b")
        if not self.models and len(self.repositories) < 2:
            raise SpecError("a multi-model sweep needs `--models a,b` or at least two repositories")
        if self.models and len(self.models) < 2:
            raise SpecError(
                f"`--models` needs at least two models to drive together, got {self.models[0]!r}; "
                "measure one model with `trb sweep REPO` or `--model`"
            )
        repeated = sorted({name for name in self.models if self.models.count(name) > 1})
        if repeated:
            raise SpecError(f"`--models` names {', '.join(repeated)} more than once")
        for name in self.models:
            if not name or not name.strip():
                raise SpecError("`--models` holds an empty name; give comma-separated model names")
        if not self.concurrency and not self.request_rates:
            raise SpecError("give at least one `--concurrency` or `--request-rate` level")
        for level in self.concurrency:
            _require_int_at_least("--concurrency", level, 1)
        for rate in self.request_rates:
            if not rate > 0:
                raise SpecError(f"`--request-rate` must be > 0 requests/s, got {rate!r}")
        if self.max_new_tokens is not None:
            _require_int_at_least("--max-new-tokens", self.max_new_tokens, 1)
        _require_choice("--protocol", self.protocol, ("grpc", "http"))
        _require_int_at_least("--interval-ms", self.measurement_interval_ms, 100)
        if self.prompts is not None:
            object.__setattr__(self, "prompts", Path(self.prompts))
        if self.output is not None:
            object.__setattr__(self, "output", Path(self.output))


# trb's image: the top-level Dockerfile, NGC tritonserver 24.10 plus what the generated models import.
DEFAULT_IMAGE = "trb-triton:24.10"
DEPLOY_PLATFORMS = ("docker", "k8s")
_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
# KEDA's and the HPA's stabilisation windows are bounded by the HPA API: 0 to 3600 seconds.
_MAX_WINDOW_S = 3600


@dataclass(frozen=True, kw_only=True)
class DeploySpec:
    """What `trb deploy docker|k8s` writes for a built repository.

    Autoscaling fields left None come from `plan` (a `trb sweep` run) when one is given, else from
    the defaults in `model_repo_builder.deploy.autoscaling` (the Wallaroo benchmark knobs).
    """

    repository: Path
    platform: str
    output: Path | None = None  # None: deploy/<name>/<platform> in the working directory
    image: str = DEFAULT_IMAGE
    host: str = "127.0.0.1"  # docker: the address the ports are published on
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    exit_timeout_s: int = 30
    # Kubernetes
    plain: bool = False  # a Deployment + Service instead of a KServe InferenceService
    plan: Path | None = None
    namespace: str = "default"
    storage_uri: str | None = None  # None: pvc://<name>-repository/<name>
    min_replicas: int | None = None
    max_replicas: int | None = None
    scale_up_queue: float | None = None
    scale_down_queue: float | None = None
    window_s: int = 60
    prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090"
    wake_query: str | None = None  # a signal that exists while no replica runs (scale from zero)

    def __post_init__(self) -> None:
        object.__setattr__(self, "repository", Path(self.repository))
        _require_choice("platform", self.platform, DEPLOY_PLATFORMS)
        if self.output is not None:
            object.__setattr__(self, "output", Path(self.output))
            inside = Path(self.output).resolve()
            if inside == self.repository.resolve() or self.repository.resolve() in inside.parents:
                raise SpecError(
                    f"`--output` {self.output} lies inside the repository: tritonserver would take "
                    "that folder for a model and fail to start; choose a folder outside it"
                )
        if self.plan is not None:
            object.__setattr__(self, "plan", Path(self.plan))
        if not self.image.strip() or any(char.isspace() for char in self.image):
            raise SpecError(f"`--image` must name a container image, got {self.image!r}")
        if not self.host:
            raise SpecError("`--host` must not be empty")
        _require_ports(self.http_port, self.grpc_port, self.metrics_port)
        _require_int_at_least("--exit-timeout", self.exit_timeout_s, 0)
        if not _DNS_LABEL.fullmatch(self.namespace):
            raise SpecError(
                f"`--namespace` must be a Kubernetes name (lowercase letters, digits and '-', "
                f"at most 63), got {self.namespace!r}"
            )
        if self.storage_uri is not None and "://" not in self.storage_uri:
            raise SpecError(
                f"`--storage-uri` must be a URI such as s3://bucket/path or pvc://claim/path, "
                f"got {self.storage_uri!r}"
            )
        if self.min_replicas is not None:
            _require_int_at_least("--min-replicas", self.min_replicas, 0)
        if self.max_replicas is not None:
            _require_int_at_least("--max-replicas", self.max_replicas, 1)
        if (
            self.min_replicas is not None
            and self.max_replicas is not None
            and self.max_replicas < self.min_replicas
        ):
            raise SpecError(
                f"`--max-replicas` ({self.max_replicas}) must be ≥ `--min-replicas` ({self.min_replicas})"
            )
        for flag, depth in (
            ("--scale-up-queue", self.scale_up_queue),
            ("--scale-down-queue", self.scale_down_queue),
        ):
            if depth is not None and (
                isinstance(depth, bool) or not isinstance(depth, int | float) or depth < 0
            ):
                raise SpecError(f"`{flag}` must be a queue depth ≥ 0, got {depth!r}")
        up, down = self.scale_up_queue, self.scale_down_queue
        if up is not None and down is not None and not up > down:
            raise SpecError(
                f"`--scale-up-queue` ({self.scale_up_queue:g}) must be above "
                f"`--scale-down-queue` ({self.scale_down_queue:g})"
            )
        _require_int_at_least("--window", self.window_s, 0)
        if self.window_s > _MAX_WINDOW_S:
            raise SpecError(
                f"`--window` must be at most {_MAX_WINDOW_S} seconds (the HPA's limit), got {self.window_s}"
            )
        if not re.match(r"^https?://[^\s/]+", self.prometheus_url):
            raise SpecError(f"`--prometheus-url` must be an http(s) URL, got {self.prometheus_url!r}")
        if self.min_replicas == 0 and not self.wake_query:
            raise SpecError(
                "`--min-replicas 0` needs `--wake-query`: Triton's queue metrics vanish with the last "
                "replica, so nothing would ever scale the service up again; give a Prometheus query "
                "that is above 0 while requests wait and no replica runs (e.g. your ingress's request "
                "rate for this service)"
            )
