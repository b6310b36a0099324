"""`trb build`: resolve the source, run the task's builder, write the repository atomically."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_repo_builder.errors import SpecError, ToolNotFoundError, UnsupportedModelError, VerificationError
from model_repo_builder.models.source import ResolvedModel, check_weights, load_tokenizer, resolve_source
from model_repo_builder.repository.embedding import BuiltModel
from model_repo_builder.repository.manifest import MANIFEST_NAME, Manifest, library_versions, read_manifest
from model_repo_builder.repository.readme import render_readme
from model_repo_builder.repository.writer import atomic_directory, file_hashes
from model_repo_builder.runtime.cpu import cpu_info
from model_repo_builder.runtime.sidecar import copy_steps
from model_repo_builder.runtime.threads import available_cores
from model_repo_builder.spec import BuildSpec, validate_model_name
from model_repo_builder.tasks import Task, get_task

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class BuildResult:
    """Where the repository went and what it holds."""

    repository: Path
    name: str
    manifest: Manifest


def build(spec: BuildSpec, model_dir: Path | None = None) -> BuildResult:
    """Build a Triton model repository at `spec.output / name`; the old one survives any failure.

    An int8 build with `--int8-scheme auto` tries each portable quantization scheme in turn and keeps
    the first that passes verification; the manifest records the one it kept.
    """
    _check_model_format(spec)
    source = resolve_source(spec.source, model_dir, task=spec.task)
    task = get_task(source.task)
    if spec.target == "gpu" and task.gpu_not_yet is not None:
        raise UnsupportedModelError(f"not yet: `--target gpu` for {task.name} models: {task.gpu_not_yet}")
    check_weights(source.path, spec.allow_pickle)
    if spec.instances is None:
        spec = dataclasses.replace(spec, instances=task.default_instances(spec.kind, available_cores()))
    if task.needs_tokenizer:
        load_tokenizer(source.path)  # fails here, before anything is written, without tokenizer files
    name = spec.name or source.default_name
    validate_model_name(name)
    candidates = spec.int8_candidates()
    for attempt, candidate in enumerate(candidates, start=1):
        try:
            return _build_once(candidate, source, task, name, model_dir)
        except VerificationError as error:
            if attempt == len(candidates):
                raise
            LOGGER.warning(
                "int8 with %s weights failed verification (%s); trying %s",
                candidate.int8_scheme,
                error,
                candidates[attempt].int8_scheme,
            )
    raise AssertionError("unreachable: the last candidate returns or raises")


def _build_once(
    spec: BuildSpec, source: ResolvedModel, task: Task, name: str, model_dir: Path | None
) -> BuildResult:
    target = spec.output / name
    LOGGER.info("building %s (%s, %s) into %s", name, source.task, spec.precision, target)
    if spec.pre and not task.pre_steps or spec.post and task.post_step_kind is None:
        raise SpecError(f"`--pre` / `--post` steps are not yet supported for {task.name} models")
    with atomic_directory(target) as staging:
        built = task.build(spec, source, name, staging)
        stages = {"pre": spec.pre, "post": spec.post}
        kinds = {"pre": "text", "post": task.post_step_kind or ""}
        outputs = tuple(tensor.config() for tensor in task.outputs)  # what `arrays` post steps exchange
        steps = copy_steps(
            {stage: specs for stage, specs in stages.items() if specs}, kinds, staging / name, outputs
        )
        if steps:
            built = BuiltModel(
                model={**built.model, "steps": [step.name for step in steps]}, verification=built.verification
            )
        options = {**spec.options(), "name": name}
        if model_dir is not None:
            options["source"] = str(model_dir)
        draft = Manifest(
            name=name,
            task=source.task,
            source={
                "argument": spec.source,
                "origin": source.origin,
                "hub_id": source.hub_id,
                "model_type": source.model_type,
            },
            options=options,
            model=built.model,
            verification={**built.verification, **_verified_on(spec)},
            versions=library_versions(),
            files={},
        )
        readme = render_readme(name, options, built.model, repo_dir=str(target), task=task)
        (staging / "README.md").write_text(readme, encoding="utf-8")
        manifest = Manifest(**{**draft.__dict__, "files": file_hashes(staging)})
        (staging / MANIFEST_NAME).write_text(manifest.to_yaml(), encoding="utf-8")
    return BuildResult(repository=target, name=name, manifest=manifest)


def _check_model_format(spec: BuildSpec) -> None:
    """`--format tensorrt` fails at once: without a GPU it cannot be built; with one, not yet."""
    if spec.model_format != "tensorrt":
        return
    from model_repo_builder.runtime.gpu import gpu_unavailable_reason

    reason = gpu_unavailable_reason()
    if reason is not None:
        raise ToolNotFoundError(
            f"`--format tensorrt` builds TensorRT plans on the GPU that will serve them, and this machine "
            f"has none: {reason}. Build `--target gpu` (ONNX with the TensorRT accelerator, engines built "
            "when the model loads) here, or run the build on the GPU machine"
        )
    raise UnsupportedModelError(
        "not yet: `--format tensorrt` (building TensorRT plans) is not implemented; build `--target gpu` "
        "(the onnxruntime backend builds TensorRT engines from the ONNX model when it loads)"
    )


def _verified_on(spec: BuildSpec) -> dict[str, Any]:
    """The CPU the verification figures were measured on and, for int8, how the weights were quantized."""
    recorded: dict[str, Any] = {"cpu": cpu_info().as_dict()}
    if spec.precision == "int8":
        recorded["int8_scheme"] = dataclasses.asdict(spec.int8())
    return recorded


def spec_from_manifest(path: Path, output: Path | None = None, name: str | None = None) -> BuildSpec:
    """The BuildSpec a manifest was built with; `output`/`name` may redirect the rebuild."""
    manifest = read_manifest(path)
    return BuildSpec.from_options(manifest.options, output=output, name=name)
