"""`trb launch REPO [REPO…]`: serve one or several repositories in one tritonserver until Ctrl-C / SIGTERM."""

from __future__ import annotations

import shlex
import signal
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from model_repo_builder.runtime.server import TritonServer


@click.command("launch")
@click.argument("repositories", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind; use 0.0.0.0 to accept connections from other machines.",
)
@click.option("--http-port", type=int, default=8000, show_default=True)
@click.option("--grpc-port", type=int, default=8001, show_default=True)
@click.option("--metrics-port", type=int, default=8002, show_default=True)
@click.option(
    "--startup-timeout", type=float, default=120.0, show_default=True, help="Seconds to wait for readiness."
)
@click.option(
    "--exit-timeout",
    type=int,
    default=30,
    show_default=True,
    help="Seconds in-flight requests get to finish on shutdown.",
)
@click.option(
    "--docker", is_flag=True, help="Run the NGC container instead (prints the command without an engine)."
)
@click.option(
    "--image", default=None, help="Container image for --docker (default: trb's image, see Dockerfile)."
)
@click.option("--gpus", is_flag=True, help="With --docker: pass all GPUs to the container.")
@click.option(
    "--cache-size-mb",
    type=int,
    default=64,
    show_default=True,
    help="Size of the response cache, used when a served model was built with --response-cache.",
)
@click.option(
    "--rate-limit-resource",
    "rate_limit_resources",
    multiple=True,
    help="NAME=COUNT: the budget of a rate limiter resource that models built with "
    "--rate-limit-resource share (default: the most any one instance needs).",
)
@click.option(
    "--cpu-smoke",
    is_flag=True,
    help="Smoke-test a --target gpu repository on this CPU: its onnxruntime-backend model step runs on "
    "the python ONNX Runtime runner, in a temporary copy (the built repository is not changed).",
)
@click.option(
    "--supervise/--no-supervise",
    default=True,
    show_default=True,
    help="Reload a model whose python-backend stub died (Triton 2.51 does not restart it).",
)
def command(
    repositories: tuple[Path, ...],
    host: str,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    startup_timeout: float,
    exit_timeout: int,
    docker: bool,
    image: str | None,
    gpus: bool,
    cache_size_mb: int,
    rate_limit_resources: tuple[str, ...],
    cpu_smoke: bool,
    supervise: bool,
) -> None:
    """Serve every model of every REPOSITORY in one tritonserver, wait until ready, print the endpoints."""
    from model_repo_builder.errors import SpecError, ToolNotFoundError
    from model_repo_builder.runtime.cpu import repository_cpu_warnings
    from model_repo_builder.runtime.server import TritonServer, served_models
    from model_repo_builder.runtime.status import state_file
    from model_repo_builder.runtime.supervisor import Supervisor
    from model_repo_builder.spec import LaunchSpec

    spec = LaunchSpec(
        repositories=repositories,
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        startup_timeout_s=startup_timeout,
        exit_timeout_s=exit_timeout,
        cache_size_mb=cache_size_mb,
        rate_limit_resources=rate_limit_resources,
        cpu_smoke=cpu_smoke,
    )
    if docker and cpu_smoke:
        raise SpecError(
            "`--cpu-smoke` runs the local CPU server; the container (`--docker`) needs no substitute"
        )
    if docker:
        from model_repo_builder.runtime.docker import DEFAULT_IMAGE, docker_command, docker_unavailable_reason

        served_models(spec.repositories)
        command_line = docker_command(spec, image or DEFAULT_IMAGE, gpus=gpus)
        click.echo(shlex.join(command_line))
        reason = docker_unavailable_reason()
        if reason:
            raise ToolNotFoundError(
                f"cannot run the container here: {reason}; run the command above on a machine "
                "with Docker (build the image first: `docker build -t trb-triton:24.10 .`)"
            )
        import subprocess

        raise SystemExit(subprocess.call(command_line))

    for repository in spec.repositories:
        for warning in repository_cpu_warnings(repository):
            click.echo(f"warning: {warning}", err=True)
    server = TritonServer(spec)
    stop_requested: list[int] = []

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.append(signum)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with server:
            state = state_file(spec.http_port)
            supervisor = Supervisor(server, state_path=state).start() if supervise else None
            if server.substituted:
                click.secho(
                    f"CPU SMOKE RUN: {', '.join(server.substituted)} runs on the python ONNX Runtime runner "
                    "on this CPU, NOT on the onnxruntime backend with TensorRT it was built for; this checks "
                    "the ensemble's wiring, inputs, outputs and numbers, not GPU speed nor the TensorRT "
                    "engine "
                    f"(serving a temporary copy: {server.served_repositories[0]})",
                    err=True,
                    bold=True,
                    fg="yellow",
                )
            click.echo(f"serving {', '.join(server.models)} from {', '.join(map(str, repositories))}")
            if server.threads is not None and server.threads.models:
                shared = "shared by all models" if len(repositories) > 1 else "as built"
                click.echo(f"  threads  {server.threads.describe()}, {shared}")
                if server.threads.oversubscribed and len(repositories) > 1:
                    click.echo(
                        f"warning: the instances run {server.threads.total_threads} threads on "
                        f"{server.threads.cores} cores: models busy at the same time contend for them; "
                        "build those with fewer `--instances` to avoid it",
                        err=True,
                    )
            click.echo(f"  HTTP     http://{server.http_url}/v2/models/{server.models[0]}/infer")
            click.echo(f"  gRPC     {server.grpc_url}")
            click.echo(f"  metrics  {server.metrics_url}")
            click.echo(f"  log      {server.log_path}")
            if supervisor is not None:
                click.echo("  supervised: a model whose stub dies is reloaded (see warnings below)")
            click.echo(
                f"  admin    `trb models` reads the key from {server.key_path} (this user only); Triton "
                "2.51 takes it only on its command line, so local users can read it with `ps`: on a "
                "shared machine run trb as its own user"
            )
            click.echo("Ctrl-C stops the server; in-flight requests finish first.")
            try:
                _wait(server, stop_requested)
            finally:
                if supervisor is not None:
                    supervisor.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _wait(server: TritonServer, stop_requested: list[int]) -> None:
    from model_repo_builder.errors import ServerError

    while not stop_requested:
        if not server.is_alive():
            raise ServerError(f"tritonserver stopped unexpectedly; see its log at {server.log_path}")
        time.sleep(0.5)
    click.echo("stopping: waiting for in-flight requests")
