"""`trb plan simulate RUN_DIR --trace …`: predict replicas, queue, latency and cost before deploying."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from model_repo_builder.plan.spec import SimulateSpec

_DEFAULTS = {field.name: field.default for field in dataclasses.fields(SimulateSpec)}


@click.group("plan")
def command() -> None:
    """Plan a deployment from a `trb sweep` run."""


@command.command("simulate")
@click.argument("run", type=click.Path(path_type=Path, exists=True))
@click.option(
    "--trace",
    "traces",
    multiple=True,
    metavar="SPEC",
    help="Load segment, repeatable, played in order: constant:rate=50,duration=60 | "
    "ramp:from=0,to=100,duration=2m | interval:every=15s,duration=40m[,requests=1] | "
    "users:from=0,to=20,duration=3m[,think=1s] | users:count=20,duration=5m. "
    "constant and ramp take arrivals=even|poisson.",
)
@click.option(
    "--trace-file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Recorded log: one request per line, seconds or an ISO 8601 time in the first field.",
)
@click.option("--replicas", type=int, help="A fixed number of replicas instead of autoscaling.")
@click.option("--min-replicas", type=int, help="Autoscaling lower bound (default 1).")
@click.option("--max-replicas", type=int, help="Autoscaling upper bound (default: the run's replica plan).")
@click.option(
    "--scale-up-queue",
    type=float,
    help="Queue depth per replica to scale up at (default: the run's knee); a text-generation run "
    "scales on requests in flight per replica (default: the knee's concurrency).",
)
@click.option(
    "--scale-down-queue", type=float, help="KEDA activation threshold, in the same metric (default 1)."
)
@click.option(
    "--window",
    "window_s",
    type=int,
    default=_DEFAULTS["window_s"],
    show_default=True,
    help="Stabilisation window, seconds.",
)
@click.option(
    "--polling",
    "polling_s",
    type=float,
    default=_DEFAULTS["polling_s"],
    show_default=True,
    help="Seconds between autoscaler polls.",
)
@click.option(
    "--startup",
    "startup_s",
    type=float,
    default=_DEFAULTS["startup_s"],
    show_default=True,
    help="Seconds a new replica takes to be ready.",
)
@click.option("--cost-per-hour", type=float, help="Price of one replica per hour.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random draw.")
@click.option("--config", help="A configuration of the run other than its best.")
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    help="Folder to write (default RUN/simulations/<time>-<trace>).",
)
@click.option("--no-plot", is_flag=True, help="Skip simulation.png.")
def simulate(run: Path, no_plot: bool, **options: object) -> None:
    """Replay a load through the service RUN measured, under trb's autoscaling rule."""
    from model_repo_builder.deploy.autoscaling import IN_FLIGHT
    from model_repo_builder.plan.run import run_simulation

    outcome = run_simulation(SimulateSpec(run=run, plot=not no_plot, **options))  # type: ignore[arg-type]
    result = outcome.result
    click.echo(f"trace:       {result.trace} ({result.requests:,} requests)")
    click.echo(
        f"service:     {outcome.curve.config}, one replica up to {outcome.curve.capacity_rps:.1f} req/s"
    )
    click.echo(f"autoscaling: {outcome.rule.describe()}")
    for line in outcome.basis:
        click.echo(f"             · {line}")
    latency = result.latency
    rows = [
        ("throughput", f"{result.throughput_rps:.2f} req/s (offered {result.offered_rps:.2f})"),
        ("latency p50", "-" if latency is None else f"{latency.p50_ms:.1f} ms"),
        ("latency p99", "-" if latency is None else f"{latency.p99_ms:.1f} ms"),
        ("max queue depth", f"{result.max_queue_depth:.1f}"),
        ("replicas", f"max {result.replicas_max}, mean {result.replicas_mean:.2f}"),
        ("replica-hours", f"{result.replica_seconds / 3600:.3f}"),
    ]
    if result.cost_usd is not None:
        per_million = result.cost_per_million_usd
        rows.append(
            (
                "cost",
                f"${result.cost_usd:.4f}" + ("" if per_million is None else f" (${per_million:.2f} / 1M)"),
            )
        )
    for name, value in rows:
        click.echo(f"  {name:16} {value}")
    if result.scaling:
        read = "in flight" if outcome.rule.metric == IN_FLIGHT else "queue"
        click.echo(f"  {'t (s)':>8} {'replicas':>9} {read:>9}")
        for event in result.scaling:
            change = f"{event.replicas_from:>4} → {event.replicas_to:<2}"
            click.echo(f"  {event.t_s:8.0f} {change} {event.metric:9.1f}")
    if result.completed < result.requests:
        click.echo(
            f"warning: {result.requests - result.completed} requests never finished (overload)", err=True
        )
    click.echo(f"wrote {outcome.folder}/simulation.json")
