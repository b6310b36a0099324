"""Atomic repository writes: build beside the target, then rename into place.

A failed or interrupted build removes its staging directory (and the output folders it created) and
leaves the previous repository exactly as it was. The swap itself is two renames on one filesystem.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from model_repo_builder.repository import config as model_config

LOGGER = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield an empty staging directory that replaces `target` only if the block succeeds."""
    target = target.resolve()
    created = [parent for parent in (target.parent, *target.parent.parents) if not parent.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for parent in created:  # innermost first: folders this build made, now empty again
            with contextlib.suppress(OSError):
                parent.rmdir()
        LOGGER.info("build failed; %s left untouched", target)
        raise
    staging.chmod(0o755)
    previous = None
    if target.exists():
        previous = target.with_name(f".{target.name}.previous-{os.getpid()}")
        os.rename(target, previous)
    os.rename(staging, target)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


def file_hashes(root: Path, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every file under `root`, keyed by POSIX relative path, sorted."""
    hashes = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix()
        if relative in exclude or "__pycache__" in relative:
            continue
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        hashes[relative] = digest.hexdigest()
    return hashes


def lay_out_model(
    model_dir: Path, files: dict[str, Path], kind: str, templates: tuple[str, ...], warmup_text: str
) -> Path:
    """Write a model's version directory (`files` by target name, the templates) and warmup; return it."""
    from model_repo_builder.templates import copy_templates

    version_dir = model_dir / "1"
    version_dir.mkdir(parents=True)
    for target, source in files.items():
        shutil.copy2(source, version_dir / target)
    copy_templates(kind, templates, version_dir)
    (model_dir / "warmup").mkdir()
    (model_dir / "warmup" / model_config.WARMUP_FILE).write_bytes(
        model_config.serialize_bytes_element(warmup_text)
    )
    return version_dir
