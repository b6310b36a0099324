"""`trb sweep --compare RUN_A RUN_B`: a regression table between two runs, for release gating."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from model_repo_builder.errors import RepositoryError
from model_repo_builder.perf.analysis import RegressionReport, compare_runs

# Headline metrics of a run and whether a larger value is better.
HEADLINE = {
    "capacity_rps": True,
    "knee_rps": True,
    "max_throughput_rps": True,
    "p50_ms_at_capacity": False,
    "p99_ms_at_capacity": False,
}


def load_results(run: Path) -> dict[str, Any]:
    """results.json of a run folder (or the file itself)."""
    path = run / "results.json" if run.is_dir() else run
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise RepositoryError(f"cannot read sweep results {path}: {error}") from None
    if isinstance(data, dict) and "models" in data and "configs" not in data:
        raise RepositoryError(
            f"{path} holds a multi-model sweep (`--models`); `--compare` compares one-model sweeps"
        )
    if not isinstance(data, dict) or "configs" not in data:
        raise RepositoryError(f"{path} is not a trb sweep results.json")
    return data


def headline_metrics(results: dict[str, Any]) -> dict[str, float]:
    """The best config's headline figures; missing figures are left out, not invented."""
    best = next((c for c in results["configs"] if c["name"] == results.get("best_config")), None)
    if best is None:
        return {}
    figures: dict[str, float] = {}
    levels = [level for level in best["levels"] if level.get("p99_ms") is not None]
    if levels:
        figures["max_throughput_rps"] = max(level["throughput_rps"] for level in levels)
    capacity = best.get("capacity") or {}
    if capacity.get("met"):
        figures["capacity_rps"] = float(capacity["throughput_rps"])
        at = next((level for level in levels if level["load"] == capacity.get("load")), None)
        if at is not None:
            figures["p50_ms_at_capacity"] = at["p50_ms"]
            figures["p99_ms_at_capacity"] = at["p99_ms"]
    knee = best.get("knee") or {}
    if knee.get("throughput_rps"):
        figures["knee_rps"] = float(knee["throughput_rps"])
    return figures


def compare(baseline: Path, candidate: Path, threshold_pct: float) -> RegressionReport:
    """Compare two runs' headline metrics; `regressed` is true when any worsened beyond the threshold."""
    return compare_runs(
        headline_metrics(load_results(baseline)),
        headline_metrics(load_results(candidate)),
        threshold_pct,
        HEADLINE,
    )
