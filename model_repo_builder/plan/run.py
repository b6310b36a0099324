"""`trb plan simulate`: read the run, resolve the rule, simulate, write simulation.json and a PNG.

The output folder is written atomically (a staging folder renamed into place), like a build.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_repo_builder import __version__
from model_repo_builder.deploy.autoscaling import IN_FLIGHT, QUEUE_DEPTH, autoscaling
from model_repo_builder.deploy.plan import read_run, run_generates
from model_repo_builder.plan.autoscaler import ScalingRule
from model_repo_builder.plan.service import ServiceCurve, read_curve
from model_repo_builder.plan.simulate import SimulationResult, simulate
from model_repo_builder.plan.spec import SimulateSpec
from model_repo_builder.plan.trace import Trace, parse_trace, read_trace_file
from model_repo_builder.repository.writer import atomic_directory

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class SimulationOutcome:
    """Where the files are, and what was simulated."""

    folder: Path
    result: SimulationResult
    curve: ServiceCurve
    rule: ScalingRule
    basis: tuple[str, ...]  # where the autoscaling settings came from


def scaling_rule(spec: SimulateSpec) -> tuple[ScalingRule, tuple[str, ...]]:
    """The rule `trb deploy k8s --plan RUN_DIR` would render with the same flags (or a fixed count).

    A text-generation run scales on requests in flight, as `trb deploy k8s` scales its repository.
    """
    if spec.replicas is not None:
        rule = ScalingRule(
            min_replicas=spec.replicas,
            max_replicas=spec.replicas,
            scale_up_queue=1.0,
            scale_down_queue=0.0,
            window_s=float(spec.window_s),
            polling_s=spec.polling_s,
            startup_s=spec.startup_s,
        )
        return rule, (f"{spec.replicas} replica(s) fixed by --replicas",)
    needs_run = spec.scale_up_queue is None or spec.max_replicas is None
    metric = IN_FLIGHT if run_generates(spec.run) else QUEUE_DEPTH
    scaling = autoscaling(spec, read_run(spec.run) if needs_run else None, metric=metric)
    return ScalingRule.from_autoscaling(scaling, spec.startup_s, spec.polling_s), scaling.basis


def load_trace(spec: SimulateSpec) -> Trace:
    """The spec's `--trace` segments or `--trace-file` log."""
    return read_trace_file(spec.trace_file) if spec.trace_file is not None else parse_trace(spec.traces)


def run_simulation(spec: SimulateSpec) -> SimulationOutcome:
    """Simulate the spec's trace on its run's curve; write the result folder.

    Raises:
        RepositoryError: RUN_DIR holds no trb sweep results.
        SpecError: A trace or flag is invalid, or the run has no concurrency curve.
        DeployError: Autoscaling needs the run's plan and the run met no objective.
    """
    curve = read_curve(spec.run, spec.config)
    rule, basis = scaling_rule(spec)
    trace = load_trace(spec)
    LOGGER.info("simulating %s on %s (%s)", trace.description, curve.source, rule.describe())
    result = simulate(trace, curve, rule, seed=spec.seed, cost_per_hour=spec.cost_per_hour)
    folder = spec.output or _default_folder(spec.run, trace)
    document = {
        "trb_version": __version__,
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "run": str(spec.run),
        "service": curve.as_dict(),
        "autoscaling": {"rule": rule.describe(), "basis": list(basis), **vars(rule)},
        "result": result.as_dict(),
    }
    with atomic_directory(folder) as staging:
        (staging / "simulation.json").write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        if spec.plot:
            _plot(result, staging / "simulation.png", in_flight=rule.metric == IN_FLIGHT)
    return SimulationOutcome(folder=folder, result=result, curve=curve, rule=rule, basis=basis)


def _default_folder(run: Path, trace: Trace) -> Path:
    base = run if run.is_dir() else run.parent
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    slug = re.sub(r"[^A-Za-z0-9]+", "-", trace.description).strip("-")[:40]
    return base / "simulations" / f"{stamp}-{slug}"


def _plot(result: SimulationResult, path: Path, in_flight: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = result.timeline
    t = [p.t_s for p in points]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), dpi=100, sharex=True)
    top.step(t, [p.replicas for p in points], where="post", label="replicas", color="tab:blue")
    top.set_ylabel("replicas")
    depth = top.twinx()
    # The metric the autoscaler read: queue depth, or (generation) the requests in flight.
    label = "requests in flight" if in_flight else "queue depth"
    values = [p.in_system if in_flight else p.queue_depth for p in points]
    depth.plot(t, values, color="tab:orange", label=label)
    depth.set_ylabel(label)
    top.set_title(result.trace[:100])
    bottom.plot(t, [p.completed_rps for p in points], color="tab:green", label="completed req/s")
    bottom.set_ylabel("req/s")
    bottom.set_xlabel("seconds")
    latency = bottom.twinx()
    latency.plot(t, [_nan(p.p99_ms) for p in points], color="tab:red", label="p99 ms")
    latency.set_ylabel("p99 ms")
    for axis, other in ((top, depth), (bottom, latency)):
        lines = axis.get_lines() + other.get_lines()
        axis.legend(lines, [line.get_label() for line in lines], loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def _nan(value: Any) -> float:
    return float("nan") if value is None else float(value)
