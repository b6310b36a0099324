"""Configuration variants of a built repository, for config search without rebuilding.

A variant shares the model files with its source (hard links where the filesystem allows) and
differs only in config.pbtxt scheduling: instances, max batch size, queue delay and the ONNX Runtime
threads per instance. Its manifest is rewritten so it stays truthful and hash-checked.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

from model_repo_builder.repository import config as model_config
from model_repo_builder.repository.manifest import MANIFEST_NAME, read_manifest
from model_repo_builder.repository.writer import file_hashes
from model_repo_builder.spec import BuildSpec


@dataclasses.dataclass(frozen=True, kw_only=True)
class Scheduling:
    """The settings a variant changes."""

    instances: int
    max_batch_size: int
    max_queue_delay_us: int
    max_queue_size: int | None = None

    @property
    def name(self) -> str:
        """Short label used in reports: i2-b32-d1000."""
        queue = f"-q{self.max_queue_size}" if self.max_queue_size is not None else ""
        return f"i{self.instances}-b{self.max_batch_size}-d{self.max_queue_delay_us}{queue}"


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def make_variant(repository: Path, target: Path, scheduling: Scheduling) -> Path:
    """Write a copy of `repository` at `target` with `scheduling` applied to its model."""
    manifest = read_manifest(repository)
    spec = BuildSpec.from_options(
        manifest.options, **dataclasses.asdict(scheduling), threads_per_instance=None
    )
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(repository, target, copy_function=_link_or_copy)
    config_path = target / manifest.name / "config.pbtxt"
    config_path.unlink()  # a hard link: write a new file instead of changing the source's
    current = model_config.as_dict(
        model_config.parse((repository / manifest.name / "config.pbtxt").read_text())
    )
    admits = "max_queue_size" in current.get("parameters", {})  # the template bounds its own queue
    updated = {**current, **model_config.scheduling(spec, admission=admits)}
    warmups = current.get("model_warmup", [])
    if warmups:
        input_name = next(iter(warmups[0]["inputs"]))
        updated["model_warmup"] = model_config.text_warmup(input_name, spec.max_batch_size)
    parameters = dict(updated.get("parameters", {}))
    parameters.update(
        model_config.string_parameters({"intra_op_threads": spec.resolved_threads_per_instance()})
    )
    if admits:
        parameters.pop("max_queue_size")
        parameters.update(model_config.string_parameters(model_config.admission_parameters(spec)))
    updated["parameters"] = parameters
    config_path.write_text(model_config.render(updated), encoding="utf-8")
    rewritten = dataclasses.replace(
        manifest, options=spec.options(), files=file_hashes(target, (MANIFEST_NAME,))
    )
    manifest_path = target / MANIFEST_NAME
    manifest_path.unlink()
    manifest_path.write_text(rewritten.to_yaml(), encoding="utf-8")
    return target
