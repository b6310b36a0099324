"""`trb build`: resolve the source, run the task's builder, write the repository atomically."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from model_repo_builder.models.registry import FEATURE_EXTRACTION, TEXT2TEXT_GENERATION
from model_repo_builder.models.source import check_weights, resolve_source
from model_repo_builder.repository.embedding import build_embedding
from model_repo_builder.repository.manifest import MANIFEST_NAME, Manifest, library_versions, read_manifest
from model_repo_builder.repository.readme import render_readme
from model_repo_builder.repository.seq2seq import build_seq2seq
from model_repo_builder.repository.writer import atomic_directory, file_hashes
from model_repo_builder.spec import BuildSpec, validate_model_name

LOGGER = logging.getLogger(__name__)

BUILDERS = {FEATURE_EXTRACTION: build_embedding, TEXT2TEXT_GENERATION: build_seq2seq}


@dataclass(frozen=True, kw_only=True)
class BuildResult:
    """Where the repository went and what it holds."""

    repository: Path
    name: str
    manifest: Manifest


def build(spec: BuildSpec, model_dir: Path | None = None) -> BuildResult:
    """Build a Triton model repository at `spec.output / name`; the old one survives any failure."""
    source = resolve_source(spec.source, model_dir)
    check_weights(source.path, spec.allow_pickle)
    name = spec.name or source.default_name
    validate_model_name(name)
    target = spec.output / name
    LOGGER.info("building %s (%s, %s) into %s", name, source.task, spec.precision, target)
    with atomic_directory(target) as staging:
        built = BUILDERS[source.task](spec, source, name, staging)
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
            verification=built.verification,
            versions=library_versions(),
            files={},
        )
        readme = render_readme(name, options, built.model, repo_dir=str(target), task=source.task)
        (staging / "README.md").write_text(readme, encoding="utf-8")
        manifest = Manifest(**{**draft.__dict__, "files": file_hashes(staging)})
        (staging / MANIFEST_NAME).write_text(manifest.to_yaml(), encoding="utf-8")
    return BuildResult(repository=target, name=name, manifest=manifest)


def spec_from_manifest(path: Path, output: Path | None = None, name: str | None = None) -> BuildSpec:
    """The BuildSpec a manifest was built with; `output`/`name` may redirect the rebuild."""
    manifest = read_manifest(path)
    return BuildSpec.from_options(manifest.options, output=output, name=name)
