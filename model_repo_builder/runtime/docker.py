"""The NGC Triton container on a repository: its `docker run` command and the settings it shares.

`trb launch --docker` and `trb deploy docker` both build the container from `container_flags` and
`docker_run_options`: tritonserver's flags are the launcher's own (`runtime/flags.py`), listening on
all interfaces inside the container and published on loopback by default; the repository is mounted
read-only; the server runs as the image's non-root `triton-server` user with no capabilities; shared
memory is sized for the python backend's instances (`deploy/sizing.py`).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from model_repo_builder.runtime.flags import ServerFlags
from model_repo_builder.spec import DEFAULT_IMAGE, LaunchSpec

__all__ = ["DEFAULT_IMAGE", "container_flags", "docker_command", "docker_run_options"]
CONTAINER_REPOSITORY = "/models"
# `triton-server` in nvcr.io/nvidia/tritonserver images (and trb's Dockerfile's USER).
CONTAINER_USER = "1000:1000"


def container_flags(
    *,
    admin_key: str,
    http_port: int | None = 8000,
    grpc_port: int | None = 8001,
    metrics_port: int = 8002,
    exit_timeout_s: int = 30,
    gpus: bool = False,
    model_repositories: tuple[str, ...] = (CONTAINER_REPOSITORY,),
) -> ServerFlags:
    """The tritonserver flags inside a container: the launcher's, on all interfaces, GPU metrics on GPUs."""
    return ServerFlags(
        admin_key=admin_key,
        model_repositories=model_repositories,
        address="0.0.0.0",
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        exit_timeout_s=exit_timeout_s,
        gpu_metrics=gpus,
    )


def container_mounts(count: int) -> tuple[str, ...]:
    """Where `count` repositories are mounted: /models for one, /models/0, /models/1, … for several."""
    return (
        (CONTAINER_REPOSITORY,) if count == 1 else tuple(f"{CONTAINER_REPOSITORY}/{i}" for i in range(count))
    )


def docker_run_options(
    *, host: str, ports: tuple[int, ...], repositories: tuple[str, ...], shm_size: str, gpus: bool
) -> list[str]:
    """`docker run` options between `run` and the image (each repository mounted read-only)."""
    options = [
        "--rm",
        "--init",
        f"--user={CONTAINER_USER}",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        f"--shm-size={shm_size}",
    ]
    if gpus:
        options.append("--gpus=all")
    for port in ports:
        options += ["-p", f"{host}:{port}:{port}"]
    for repository, mount in zip(repositories, container_mounts(len(repositories)), strict=True):
        options += ["-v", f"{repository}:{mount}:ro"]
    return options


def docker_command(
    spec: LaunchSpec, image: str = DEFAULT_IMAGE, gpus: bool = False, admin_key: str = "CHANGE-ME"
) -> list[str]:
    """The `docker run` command serving `spec.repositories` read-only with trb's secure defaults.

    Inside the container Triton listens on all interfaces (it must, to be reachable through the
    port mapping); the ports are published on `spec.host` only, loopback by default.
    """
    from model_repo_builder.deploy.facts import read_repository
    from model_repo_builder.deploy.sizing import docker_size, shm_bytes

    repositories = tuple(str(Path(repository).resolve()) for repository in spec.repositories)
    shm = sum(shm_bytes(read_repository(repository)) for repository in spec.repositories)
    flags = container_flags(
        admin_key=admin_key,
        http_port=spec.http_port,
        grpc_port=spec.grpc_port,
        metrics_port=spec.metrics_port,
        exit_timeout_s=spec.exit_timeout_s,
        gpus=gpus,
        model_repositories=container_mounts(len(repositories)),
    )
    options = docker_run_options(
        host=spec.host,
        ports=(spec.http_port, spec.grpc_port, spec.metrics_port),
        repositories=repositories,
        shm_size=docker_size(shm),
        gpus=gpus,
    )
    return ["docker", "run", *options, image, "tritonserver", *flags.args()]


def docker_unavailable_reason() -> str | None:
    """Why `docker run` cannot work here, or None when a Docker engine answers."""
    if shutil.which("docker") is None:
        return "the docker command is not installed"
    result = subprocess.run(
        ["docker", "info", "--format", "{{.ServerVersion}}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=20,
    )
    if result.returncode != 0:
        return (
            "no Docker engine is running (`docker info` failed: "
            + (result.stderr.strip().splitlines() or ["no output"])[-1]
            + ")"
        )
    return None
