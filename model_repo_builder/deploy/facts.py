"""What deployment files need to know about a built repository, read from its configs and trb.yaml.

A text-generation repository (its task generates text: `tasks/`) is scaled on the requests its models
hold (`trb_requests_in_flight`, which the generation template exports), not on queue depth; its
facts say so, with the decode width of a replica (instances × the prompts one instance decodes at
once: the `max_running` parameter of continuous batching, else the max batch size).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from model_repo_builder.errors import DeployError
from model_repo_builder.repository import config as model_config
from model_repo_builder.repository.manifest import read_manifest
from model_repo_builder.runtime.server import repository_models
from model_repo_builder.runtime.sidecar import read_steps
from model_repo_builder.templates import RUNTIME_FILE
from model_repo_builder.templates.common.trb_runtime import IN_FLIGHT_METRIC, default_max_text_bytes

# A model without the `max_text_bytes` parameter (not built by this trb) is sized as for a 128-token window.
_FALLBACK_TEXT_BYTES = default_max_text_bytes(128)


@dataclass(frozen=True, kw_only=True)
class ServedModel:
    """One model of the repository as its config.pbtxt sets it up."""

    name: str
    instances: int
    threads_per_instance: int
    max_batch_size: int
    max_text_bytes: int
    tensors: int  # inputs and outputs together
    file_bytes: int  # everything under the model's folder (weights, tokenizer, code)
    decode_width: int = 0  # generation models: prompts one instance decodes at once (0: not one)
    variant_of: str | None = None  # a variant serving another model's weights (the streaming model)
    exports_in_flight: bool = False  # its runtime exports trb_requests_in_flight (built by this trb)


@dataclass(frozen=True, kw_only=True)
class RepositoryFacts:
    """A built repository: its name, task, device target and models."""

    path: Path
    name: str
    task: str
    target: str  # "cpu" or "gpu": where the instance groups run
    models: tuple[ServedModel, ...]
    generates: bool = False  # a text-generation repository: autoscaled on requests in flight

    @property
    def gpu(self) -> bool:
        """Whether the repository's instances run on GPUs."""
        return self.target == "gpu"

    @property
    def model_names(self) -> tuple[str, ...]:
        """Names of the served models, sorted."""
        return tuple(model.name for model in self.models)

    @property
    def decode_width(self) -> int:
        """Prompts one replica decodes at once: instances × width of its generation models (not variants)."""
        return sum(model.instances * model.decode_width for model in self.models if model.variant_of is None)


def _folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def _served_model(repository: Path, name: str) -> ServedModel:
    config = model_config.parse((repository / name / "config.pbtxt").read_text(encoding="utf-8"))
    parameters = {key: value.string_value for key, value in config.parameters.items()}
    instances = sum(group.count or 1 for group in config.instance_group) or 1
    generation = "batching" in parameters  # only the generation template takes this parameter
    width = int(parameters.get("max_running") or max(1, config.max_batch_size)) if generation else 0
    return ServedModel(
        name=name,
        instances=instances,
        threads_per_instance=int(parameters.get("intra_op_threads") or 1),
        max_batch_size=max(1, config.max_batch_size),
        max_text_bytes=int(parameters.get("max_text_bytes") or _FALLBACK_TEXT_BYTES),
        tensors=len(config.input) + len(config.output),
        file_bytes=_folder_bytes(repository / name),
        decode_width=width,
        variant_of=parameters.get("weights_model") or None,
        exports_in_flight=generation and _exports_in_flight(repository / name),
    )


def _exports_in_flight(model_dir: Path) -> bool:
    """Whether the runtime copied into the model's version folders defines the in-flight gauge."""
    runtimes = list(model_dir.glob(f"*/{RUNTIME_FILE.name}"))
    return bool(runtimes) and all(IN_FLIGHT_METRIC in path.read_text(encoding="utf-8") for path in runtimes)


def _generates(task: str) -> bool:
    from model_repo_builder.tasks.base import registered

    known = registered().get(task)
    return known is not None and known.generates


def _gpu_groups(repository: Path, name: str) -> bool:
    config = model_config.parse((repository / name / "config.pbtxt").read_text(encoding="utf-8"))
    kind_gpu = model_config.model_config_pb2.ModelInstanceGroup.Kind.KIND_GPU
    return any(group.kind == kind_gpu for group in config.instance_group)


def read_repository(repository: Path) -> RepositoryFacts:
    """Read a repository `trb build` wrote; refuse what a container cannot serve yet.

    Raises:
        RepositoryError: The folder is not a trb repository (no model, no trb.yaml).
        DeployError: The repository uses PyTriton sidecars, which only `trb launch` starts, or is a
            generation repository built before its models exported requests in flight.
    """
    names = repository_models(repository)
    manifest = read_manifest(repository)
    with_steps = [name for name in names if read_steps(repository / name)]
    if with_steps:
        raise DeployError(
            f"not yet: {', '.join(with_steps)} runs --pre/--post steps in PyTriton sidecars, which "
            "`trb launch` starts beside tritonserver; the container and Kubernetes files serve "
            "tritonserver alone. Serve it with `trb launch`, or rebuild without steps to deploy it"
        )
    gpu = manifest.options.get("kind") == "gpu" or any(_gpu_groups(repository, name) for name in names)
    models = tuple(_served_model(repository, name) for name in names)
    generates = _generates(manifest.task)
    stale = [
        model.name for model in models if generates and model.decode_width and not model.exports_in_flight
    ]
    if stale:
        raise DeployError(
            f"{', '.join(stale)} was built before trb exported {IN_FLIGHT_METRIC}, the requests a "
            "generation model holds, which its autoscaling reads (Triton's queue stays empty under "
            "continuous batching, so it would never scale); rebuild the repository with this version of trb"
        )
    return RepositoryFacts(
        path=repository,
        name=manifest.name,
        task=manifest.task,
        target="gpu" if gpu else "cpu",
        models=models,
        generates=generates,
    )
