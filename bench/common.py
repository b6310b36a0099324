"""Helpers shared by the benchmark scripts in this folder."""

from __future__ import annotations

import logging
from pathlib import Path

from model_repo_builder.build import build
from model_repo_builder.repository.manifest import MANIFEST_NAME
from model_repo_builder.spec import BuildSpec

LOGGER = logging.getLogger(__name__)


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
