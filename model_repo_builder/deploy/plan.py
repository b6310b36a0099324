"""The figures a `trb sweep` run gives a deployment: capacity, the queue at the knee, replicas, memory.

Queue depth at the knee is Little's law on the knee level: throughput × the server's average queue
time (perf_analyzer's server-side breakdown). Up to that depth per replica, more load still bought
throughput in the sweep; past it, latency grew faster than throughput — the point to add a replica.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_repo_builder.deploy.facts import RepositoryFacts
from model_repo_builder.errors import DeployError
from model_repo_builder.perf.analysis import Slo
from model_repo_builder.perf.compare import load_results

# Settings a search may change that make a measured configuration differ from the repository as built.
_SCHEDULING_KEYS = ("instances", "max_batch_size")


@dataclass(frozen=True, kw_only=True)
class MeasuredPlan:
    """What one replica of the repository did in a sweep run, and what the run planned."""

    run: Path
    config: str
    capacity_rps: float
    slo: str | None
    knee_load: float
    knee_rps: float
    knee_queue_depth: float
    replicas: int | None  # replicas for the run's --target-qps; None when it had no target
    target_qps: float | None
    peak_rss_bytes: int | None  # None for runs made before trb recorded the server's memory
    generates: bool = False  # a text-generation model (the run counted tokens per request)


def _best(results: dict[str, Any], run: Path) -> dict[str, Any]:
    best = next((c for c in results["configs"] if c["name"] == results.get("best_config")), None)
    capacity = (best or {}).get("capacity") or {}
    if best is None or not capacity.get("met") or not capacity.get("throughput_rps"):
        raise DeployError(
            f"`--plan` {run} has no configuration that met its objective "
            f"({results.get('summary', 'no summary')}); sweep the repository again"
        )
    return best


def _check_same_repository(
    results: dict[str, Any], best: dict[str, Any], facts: RepositoryFacts, run: Path
) -> None:
    if results.get("model") != facts.name:
        raise DeployError(
            f"`--plan` {run} measured {results.get('model')!r}, not {facts.name!r}; "
            "give the run of this repository"
        )
    settings = best.get("settings") or {}
    built = {"instances": facts.models[0].instances, "max_batch_size": facts.models[0].max_batch_size}
    differs = {
        key: settings[key] for key in _SCHEDULING_KEYS if key in settings and settings[key] != built[key]
    }
    if differs:
        options = " ".join(f"--{key.replace('_', '-')} {value}" for key, value in differs.items())
        raise DeployError(
            f"`--plan` {run}: its best configuration ({best['name']}) differs from the repository as "
            f"built; rebuild with {options} so the deployment runs what was measured"
        )


def _knee(best: dict[str, Any], run: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    knee = best.get("knee") or {}
    level = next(
        (
            level
            for level in best.get("levels", [])
            if level.get("mode") == "concurrency"
            and level.get("load") == knee.get("load")
            and "error" not in level
        ),
        None,
    )
    if not knee or level is None or "breakdown" not in level:
        raise DeployError(f"`--plan` {run} has no measured knee level to take the queue depth from")
    return knee, level


def run_generates(run: Path) -> bool:
    """Whether a sweep run measured a text-generation model (it counted tokens per request)."""
    return "generation" in load_results(run)


def read_plan(run: Path, facts: RepositoryFacts) -> MeasuredPlan:
    """Read a sweep run folder (or its results.json) measured on this repository.

    Raises:
        RepositoryError: The path holds no trb sweep results.
        DeployError: The run measured another model or configuration, or met no objective.
    """
    results = load_results(run)
    _check_same_repository(results, _best(results, run), facts, run)
    return read_run(run)


def read_run(run: Path) -> MeasuredPlan:
    """Read a sweep run folder (or its results.json) on its own, without a repository to check it against.

    `trb plan simulate` reads a run this way, so its autoscaling is the one `trb deploy k8s --plan`
    would render from the same run.

    Raises:
        RepositoryError: The path holds no trb sweep results.
        DeployError: The run met no objective or has no knee level.
    """
    results = load_results(run)
    best = _best(results, run)
    knee, level = _knee(best, run)
    queue_s = float(level["breakdown"]["server_queue_ms"]) / 1000
    rss = [int(lv["server_rss_bytes"]) for lv in best.get("levels", []) if lv.get("server_rss_bytes")]
    plan = results.get("plan") or {}
    slo = results.get("slo")
    return MeasuredPlan(
        run=run,
        config=best["name"],
        capacity_rps=float(best["capacity"]["throughput_rps"]),
        slo=Slo(percentile=int(slo["percentile"]), latency_ms=float(slo["latency_ms"])).describe()
        if slo
        else None,
        knee_load=float(knee["load"]),
        knee_rps=float(level["throughput_rps"]),
        knee_queue_depth=float(level["throughput_rps"]) * queue_s,
        replicas=int(plan["replicas"]) if plan.get("replicas") else None,
        target_qps=float(plan["target_qps"]) if plan.get("target_qps") else None,
        peak_rss_bytes=max(rss) if rss else None,
        generates="generation" in results,
    )
