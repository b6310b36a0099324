"""The build manifest `trb.yaml`: source, every option, versions, verification and file hashes.

`trb build --from repos/<name>/trb.yaml` reads the options back and rebuilds the same repository.
"""

from __future__ import annotations

import datetime
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from model_repo_builder import __version__
from model_repo_builder.errors import RepositoryError
from model_repo_builder.runtime.tools import NGC_IMAGE, TRITON_VERSION

MANIFEST_NAME = "trb.yaml"
FORMAT_VERSION = 1
_TRACKED_PACKAGES = (
    "onnxruntime",
    "onnx",
    "transformers",
    "tokenizers",
    "torch",
    "optimum",
    "optimum-onnx",
    "tritonclient",
    "nvidia-pytriton",
    "numpy",
)


def library_versions() -> dict[str, str]:
    """Versions of the tools and libraries that shaped a build."""
    versions = {
        "trb": __version__,
        "python": platform.python_version(),
        "triton": TRITON_VERSION,
        "container_image": NGC_IMAGE,
    }
    for package in _TRACKED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """Everything needed to know what a repository is and to build it again."""

    name: str
    task: str
    source: dict[str, Any]
    options: dict[str, Any]
    model: dict[str, Any]
    verification: dict[str, Any]
    versions: dict[str, str]
    files: dict[str, str]
    built_at: str = ""

    def to_yaml(self) -> str:
        """Serialize with a stable key order."""
        data = {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "task": self.task,
            "built_at": self.built_at
            or datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "source": self.source,
            "options": self.options,
            "model": self.model,
            "verification": self.verification,
            "versions": self.versions,
            "files": self.files,
        }
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)

    @classmethod
    def from_yaml(cls, text: str, origin: str = MANIFEST_NAME) -> Manifest:
        """Parse a manifest; a missing field or another format version is a `RepositoryError`."""
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise RepositoryError(f"{origin} is not valid YAML: {error}") from None
        if not isinstance(data, dict):
            raise RepositoryError(f"{origin} must be a YAML mapping")
        version = data.get("format_version")
        if type(version) is not int or version != FORMAT_VERSION:
            raise RepositoryError(
                f"{origin} has format_version {data.get('format_version')!r}; this trb reads {FORMAT_VERSION}"
            )
        required = ("name", "task", "source", "options")
        missing = [key for key in required if key not in data]
        if missing:
            raise RepositoryError(f"{origin} lacks {', '.join(missing)}")
        return cls(
            name=data["name"],
            task=data["task"],
            source=data["source"],
            options=data["options"],
            model=data.get("model", {}),
            verification=data.get("verification", {}),
            versions=data.get("versions", {}),
            files=data.get("files", {}),
            built_at=data.get("built_at", ""),
        )


def read_manifest(path: Path) -> Manifest:
    """Read `trb.yaml` from a file or from a repository directory."""
    file = path / MANIFEST_NAME if path.is_dir() else path
    if not file.is_file():
        raise RepositoryError(f"no {MANIFEST_NAME} at {path}; is it a repository built by `trb build`?")
    return Manifest.from_yaml(file.read_text(encoding="utf-8"), origin=str(file))
