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
