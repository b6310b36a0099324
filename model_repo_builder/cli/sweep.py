"""`trb sweep REPO`: perf_analyzer sweeps, config search, capacity plan and report."""

from __future__ import annotations

from pathlib import Path

import click


def _numbers(text: str | None, kind: type) -> tuple:  # type: ignore[type-arg]
    from model_repo_builder.errors import SpecError

    if not text:
        return ()
    try:
        return tuple(kind(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise SpecError(f"expected a comma-separated list of numbers, got {text!r}") from None


@click.command("sweep")
@click.argument("repository", required=False, type=click.Path(path_type=Path))
@click.option("--url", help="host:port of a running server instead of launching REPOSITORY.")
@click.option("--model", help="Model name (with --url).")
@click.option(
    "--output", "-o", type=click.Path(path_type=Path), help="Run folder (default runs/<time>-<model>)."
)
@click.option("--concurrency", default="1,2,4,8,16,32", show_default=True, help="Concurrency levels.")
@click.option(
    "--request-rate", default="", help="Request rates (req/s) for open-loop levels, e.g. 20,50,100."
)
@click.option("--slo", help="Latency objective, e.g. p99=500ms or p95=0.2s.")
@click.option("--target-qps", type=float, help="Traffic to plan replicas for.")
@click.option(
    "--headroom", type=float, default=0.2, show_default=True, help="Spare capacity kept per replica."
)
@click.option(
    "--cost-per-hour", type=float, help="Price of one replica per hour, for cost per 1M inferences."
)
@click.option(
    "--search", is_flag=True, help="Search instances / max batch / queue delay for the best config."
)
@click.option("--search-grid", is_flag=True, help="Measure the full grid instead of coordinate descent.")
@click.option("--search-instances", default="1,2", show_default=True)
@click.option("--search-max-batch-sizes", default="8,32", show_default=True)
@click.option("--search-queue-delays-us", default="0,2000", show_default=True)
@click.option(
    "--profile",
    "profiles",
    multiple=True,
    type=click.Choice(["ramp", "interval", "soak", "stress"]),
    help="Load profiles to run on the best config (repeatable).",
)
@click.option("--profile-duration", type=float, default=30.0, show_default=True, help="Seconds per profile.")
@click.option("--prompts", type=click.Path(path_type=Path, exists=True), help="Text inputs, one per line.")
@click.option(
    "--max-new-tokens",
    type=int,
    help="Text-generation models: new tokens every request asks for (default: the model's default).",
)
@click.option("--protocol", type=click.Choice(["grpc", "http"]), default="grpc", show_default=True)
@click.option("--interval-ms", type=int, default=1000, show_default=True, help="perf_analyzer window length.")
@click.option("--budget", type=float, help="Seconds the whole sweep may take.")
@click.option(
    "--compare",
    nargs=2,
    type=click.Path(path_type=Path, exists=True),
    metavar="RUN_A RUN_B",
    help="Compare two runs instead of measuring; exit 1 on a regression.",
)
@click.option("--threshold", type=float, default=10.0, show_default=True, help="Regression threshold in %.")
def command(
    repository: Path | None,
    compare: tuple[Path, Path] | None,
    threshold: float,
    concurrency: str,
    request_rate: str,
    search_instances: str,
    search_max_batch_sizes: str,
    search_queue_delays_us: str,
    search_grid: bool,
    profile_duration: float,
    interval_ms: int,
    budget: float | None,
    profiles: tuple[str, ...],
    **options: object,
) -> None:
    """Measure REPOSITORY with perf_analyzer and plan capacity under an SLO."""
    if compare:
        _compare(compare, threshold)
        return
    from rich.console import Console

    from model_repo_builder.perf.sweep import run_sweep
    from model_repo_builder.spec import SweepSpec

    spec = SweepSpec(
        repository=repository,
        concurrency=_numbers(concurrency, int),
        request_rates=_numbers(request_rate, float),
        search_instances=_numbers(search_instances, int),
        search_max_batch_sizes=_numbers(search_max_batch_sizes, int),
        search_queue_delays_us=_numbers(search_queue_delays_us, int),
        search_strategy="grid" if search_grid else "coordinate",
        profiles=profiles,
        profile_duration_s=profile_duration,
        measurement_interval_ms=interval_ms,
        budget_s=budget,
        **options,  # type: ignore[arg-type]
    )
    console = Console(stderr=True)
    with console.status("starting") as status:
        outcome = run_sweep(
            spec,
            progress=lambda message, fraction: status.update(
                f"{message}" + (f" — {fraction:.0%} of budget" if fraction else "")
            ),
        )
    results = outcome.results
    click.echo(results["summary"])
    if results.get("search"):
        search = results["search"]
        click.echo(
            f"search ({search['strategy']}): {search['configurations_measured']} of {search['grid_size']} "
            f"configurations, {search['perf_analyzer_runs']} perf_analyzer runs; "
            f"best {results['best_config']}"
        )
    for profile in results["profiles"]:
        click.echo(f"profile {profile['kind']}: {profile['verdict']}")
    click.echo(f"report: {outcome.folder / 'report.html'}")


def _compare(runs: tuple[Path, Path], threshold: float) -> None:
    from model_repo_builder.errors import TrbError
    from model_repo_builder.perf.compare import compare

    report = compare(runs[0], runs[1], threshold)
    click.echo(f"{'metric':22} {'baseline':>12} {'candidate':>12} {'change':>9}  verdict")
    for row in report.rows:
        base = "" if row.baseline is None else f"{row.baseline:12.2f}"
        cand = "" if row.candidate is None else f"{row.candidate:12.2f}"
        change = "" if row.change_pct is None else f"{row.change_pct:+8.1f}%"
        click.echo(f"{row.metric:22} {base:>12} {cand:>12} {change:>9}  {row.note}")
    if report.regressed:
        raise TrbError(f"performance regressed by more than {threshold:g}% (see the table above)")
