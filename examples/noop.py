"""A pre step that changes nothing: bench/bench_sidecar.py measures what one sidecar hop costs."""

from __future__ import annotations


def identity(texts: list[str]) -> list[str]:
    """Return the texts unchanged."""
    return texts
