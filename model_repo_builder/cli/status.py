"""`trb status [--url U]`: models, versions, instances, readiness, queue, in flight, restarts, sidecars."""

from __future__ import annotations

import json

import click


@click.command("status")
@click.option("--url", default="127.0.0.1:8000", show_default=True, help="host:port of the server (HTTP).")
@click.option("--metrics-url", help="Its Prometheus endpoint (default: the one `trb launch` recorded).")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def command(url: str, metrics_url: str | None, as_json: bool) -> None:
    """Show what the server at URL serves and how it is doing."""
    from model_repo_builder.runtime.status import server_status

    models, state = server_status(url, metrics_url)
    if as_json:
        click.echo(json.dumps({"models": [m.__dict__ for m in models], "launcher": state}, default=list))
        return
    header = (
        "model",
        "versions",
        "inst",
        "ready",
        "queue",
        "flight",
        "ok",
        "failed",
        "restarts",
        "cache hit/miss",
    )
    click.echo("{:32} {:9} {:>4} {:8} {:>5} {:>6} {:>8} {:>7} {:>8} {:>14}".format(*header))
    for model in models:
        queue = "?" if model.pending is None else str(model.pending)
        flight = "-" if model.in_flight is None else str(model.in_flight)  # generation models only
        ready = "yes" if model.ready else "unloaded" if model.unloaded else "NO"
        click.echo(
            f"{model.name:32} {','.join(model.versions):9} {model.instances:>4} {ready:8} "
            f"{queue:>5} {flight:>6} {model.successes:>8} {model.failures:>7} {model.restarts:>8} "
            f"{f'{model.cache_hits}/{model.cache_misses}':>14}"
        )
    for sidecar in state.get("sidecars", []):
        click.echo(
            f"sidecar {sidecar['step']} at {sidecar['url']}: {'alive' if sidecar['alive'] else 'DOWN'}"
        )
    if not state:
        click.echo(
            "(no supervisor state for this port: restarts and sidecars are known to `trb launch` only)"
        )
