"""`trb sweep REPO`: perf_analyzer sweeps, config search, capacity plan and report.

`trb sweep REPO… --models a,b` drives several models of one server, alone and together.
"""

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
@click.argument("repositories", nargs=-1, type=click.Path(path_type=Path))
@click.option("--url", help="host:port of a running server instead of launching REPOSITORY.")
@click.option("--model", help="Model name (with --url).")
@click.option(
    "--models",
    help="Several models of one server, comma-separated: each measured alone, then all together "
    "(each at every --concurrency / --request-rate level). Default with several REPOSITORY: their models.",
)
@click.option(
    "--output", "-o", type=click.Path(path_type=Path), help="Run folder (default runs/<time>-<model>)."
)
@click.option(
    "--concurrency",
    help="Concurrency levels (per model with --models).  [default: 1,2,4,8,16,32; with --models: 1,4]",
)
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
    repositories: tuple[Path, ...],
    models: str | None,
    compare: tuple[Path, Path] | None,
    threshold: float,
    concurrency: str | None,
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
    """Measure REPOSITORY with perf_analyzer and plan capacity under an SLO.

    With several REPOSITORY or --models a,b: serve them in one server and measure each model alone,
    then all together, and report what sharing costs each one.
    """
    if compare:
        _compare(compare, threshold)
        return
    if models is not None or len(repositories) > 1:
        _refuse_single_model_options(
            model=options["model"],
            slo=options["slo"],
            target_qps=options["target_qps"],
            cost_per_hour=options["cost_per_hour"],
            search=options["search"],
            profile=profiles,
            budget=budget,
        )
        _sweep_models(repositories, models, concurrency, request_rate, interval_ms, options)
        return
    from rich.console import Console

    from model_repo_builder.perf.sweep import run_sweep
    from model_repo_builder.spec import SweepSpec

    spec = SweepSpec(
        repository=repositories[0] if repositories else None,
        concurrency=_numbers(concurrency or _SINGLE_CONCURRENCY, int),
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


_SINGLE_CONCURRENCY = "1,2,4,8,16,32"
_MODELS_CONCURRENCY = "1,4"


def _refuse_single_model_options(**given: object) -> None:
    from model_repo_builder.errors import SpecError

    used = [name.replace("_", "-") for name, value in given.items() if value]
    if used:
        raise SpecError(
            f"`--{used[0]}` applies to a one-model sweep, not to `--models` / several repositories"
        )


def _sweep_models(
    repositories: tuple[Path, ...],
    models: str | None,
    concurrency: str | None,
    request_rate: str,
    interval_ms: int,
    options: dict[str, object],
) -> None:
    from rich.console import Console

    from model_repo_builder.perf.multi_model import run_multi_model_sweep
    from model_repo_builder.perf.report import sharing_columns, sharing_rows
    from model_repo_builder.spec import MultiModelSweepSpec

    names = tuple(part.strip() for part in models.split(",")) if models is not None else ()
    spec = MultiModelSweepSpec(
        repositories=repositories,
        url=options["url"],  # type: ignore[arg-type]
        models=names,
        output=options["output"],  # type: ignore[arg-type]
        concurrency=_numbers(concurrency or _MODELS_CONCURRENCY, int),
        request_rates=_numbers(request_rate, float),
        prompts=options["prompts"],  # type: ignore[arg-type]
        protocol=options["protocol"],  # type: ignore[arg-type]
        measurement_interval_ms=interval_ms,
        max_new_tokens=options["max_new_tokens"],  # type: ignore[arg-type]
    )
    console = Console(stderr=True)
    with console.status("starting") as status:
        outcome = run_multi_model_sweep(spec, progress=lambda message, _: status.update(message))
    results = outcome.results
    columns = sharing_columns(results)
    click.echo("  ".join(f"{column:>{_width(column)}}" for column in columns))
    for row in sharing_rows(results):
        click.echo("  ".join(f"{_cell(row[column]):>{_width(column)}}" for column in columns))
    click.echo(results["summary"])
    click.echo(f"report: {outcome.folder / 'report.html'}")


def _width(column: str) -> int:
    return max(len(column), 8)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


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
