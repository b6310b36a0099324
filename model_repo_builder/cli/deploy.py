"""`trb deploy docker|k8s REPO`: write the files that serve a repository in a container or on Kubernetes."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from model_repo_builder.spec import DeploySpec

_DEFAULTS = {field.name: field.default for field in dataclasses.fields(DeploySpec)}


def _common(function: Any) -> Any:
    """Options both platforms take, defaults from `DeploySpec`."""
    options = [
        click.argument("repository", type=click.Path(path_type=Path)),
        click.option(
            "--output",
            type=click.Path(path_type=Path),
            default=None,
            help="Folder to write (default: deploy/<name>/<platform>; never inside the repository).",
        ),
        click.option(
            "--image", default=_DEFAULTS["image"], show_default=True, help="trb's image (see Dockerfile)."
        ),
        click.option("--http-port", type=int, default=_DEFAULTS["http_port"], show_default=True),
        click.option("--grpc-port", type=int, default=_DEFAULTS["grpc_port"], show_default=True),
        click.option("--metrics-port", type=int, default=_DEFAULTS["metrics_port"], show_default=True),
        click.option(
            "--exit-timeout",
            type=int,
            default=_DEFAULTS["exit_timeout_s"],
            show_default=True,
            help="Seconds in-flight requests get to finish on shutdown.",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _run(spec_fields: dict[str, Any]) -> None:
    from model_repo_builder.deploy import deploy

    result = deploy(DeploySpec(**spec_fields))
    click.echo(f"wrote {result.folder}/")
    for name in result.files:
        click.echo(f"  {name}")
    for note in result.notes:
        click.echo(f"  · {note}")
    click.echo(f"next: read {result.folder / 'NOTES.md'}")


@click.group("deploy")
def command() -> None:
    """Deployment files for a built repository: a container, or Kubernetes with autoscaling."""


@command.command("docker")
@_common
@click.option(
    "--host",
    default=_DEFAULTS["host"],
    show_default=True,
    help="Address the ports are published on; 0.0.0.0 accepts other machines.",
)
def docker(
    repository: Path,
    output: Path | None,
    image: str,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    exit_timeout: int,
    host: str,
) -> None:
    """compose.yaml, docker-run.sh, prometheus.yml and a Grafana dashboard for REPOSITORY."""
    _run(
        {
            "repository": repository,
            "platform": "docker",
            "output": output,
            "image": image,
            "host": host,
            "http_port": http_port,
            "grpc_port": grpc_port,
            "metrics_port": metrics_port,
            "exit_timeout_s": exit_timeout,
        }
    )


@command.command("k8s")
@_common
@click.option("--plan", type=click.Path(path_type=Path), default=None, help="A `trb sweep` run to size from.")
@click.option("--plain", is_flag=True, help="A Deployment + Service instead of a KServe InferenceService.")
@click.option("--namespace", default=_DEFAULTS["namespace"], show_default=True)
@click.option(
    "--storage-uri",
    default=None,
    help="Where the cluster finds the repository (s3://, gs://, pvc://CLAIM/PATH; default pvc://<name>-repository/…).",
)
@click.option("--min-replicas", type=int, default=None, help="Default 1; 0 needs --wake-query.")
@click.option("--max-replicas", type=int, default=None, help="Default 2, or the --plan run's replica plan.")
@click.option(
    "--scale-up-queue",
    type=float,
    default=None,
    help="Queue depth per replica to scale up at (5; --plan: the knee's). A text-generation repository "
    "scales on requests in flight instead: per replica (default its decode width; --plan: the knee's "
    "concurrency).",
)
@click.option(
    "--scale-down-queue",
    type=float,
    default=None,
    help="Queue depth (generation: requests in flight) to scale down at (1).",
)
@click.option(
    "--window", type=int, default=_DEFAULTS["window_s"], show_default=True, help="Stabilisation seconds."
)
@click.option("--prometheus-url", default=_DEFAULTS["prometheus_url"], show_default=True)
@click.option("--wake-query", default=None, help="PromQL above 0 while requests wait at zero replicas.")
def kubernetes(
    repository: Path,
    output: Path | None,
    image: str,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    exit_timeout: int,
    plan: Path | None,
    plain: bool,
    namespace: str,
    storage_uri: str | None,
    min_replicas: int | None,
    max_replicas: int | None,
    scale_up_queue: float | None,
    scale_down_queue: float | None,
    window: int,
    prometheus_url: str,
    wake_query: str | None,
) -> None:
    """A KServe InferenceService (or --plain Deployment), PDB and KEDA ScaledObject for REPOSITORY."""
    _run(
        {
            "repository": repository,
            "platform": "k8s",
            "output": output,
            "image": image,
            "http_port": http_port,
            "grpc_port": grpc_port,
            "metrics_port": metrics_port,
            "exit_timeout_s": exit_timeout,
            "plan": plan,
            "plain": plain,
            "namespace": namespace,
            "storage_uri": storage_uri,
            "min_replicas": min_replicas,
            "max_replicas": max_replicas,
            "scale_up_queue": scale_up_queue,
            "scale_down_queue": scale_down_queue,
            "window_s": window,
            "prometheus_url": prometheus_url,
            "wake_query": wake_query,
        }
    )
