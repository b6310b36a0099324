"""`trb launch --docker`: the `docker run` command for the NGC Triton image on a repository."""

from __future__ import annotations

import shutil
import subprocess

from model_repo_builder.runtime.admin import ADMIN_HEADER
from model_repo_builder.runtime.server import RESTRICTED_APIS
from model_repo_builder.spec import LaunchSpec

DEFAULT_IMAGE = "trb-triton:24.10"


def docker_command(
    spec: LaunchSpec, image: str = DEFAULT_IMAGE, gpus: bool = False, admin_key: str = "CHANGE-ME"
) -> list[str]:
    """The `docker run` command serving `spec.repositories` read-only with trb's secure defaults.

    Inside the container Triton listens on all interfaces (it must, to be reachable through the
    port mapping); the ports are published on `spec.host` only, loopback by default.
    """
    restricted = f"{RESTRICTED_APIS}:{ADMIN_HEADER}={admin_key}"
    command = ["docker", "run", "--rm", "--init", "--shm-size=1g"]
    if gpus:
        command.append("--gpus=all")
    for port in (spec.http_port, spec.grpc_port, spec.metrics_port):
        command += ["-p", f"{spec.host}:{port}:{port}"]
    # One mount per repository: /models for one, /models/0, /models/1, … for several.
    mounts = (
        ["/models"]
        if len(spec.repositories) == 1
        else [f"/models/{i}" for i in range(len(spec.repositories))]
    )
    for repository, mount in zip(spec.repositories, mounts, strict=True):
        command += ["-v", f"{repository.resolve()}:{mount}:ro"]
    command += [
        image,
        "tritonserver",
        *(f"--model-repository={mount}" for mount in mounts),
        "--model-control-mode=none",
        "--strict-readiness=true",
        f"--http-port={spec.http_port}",
        f"--grpc-port={spec.grpc_port}",
        f"--metrics-port={spec.metrics_port}",
        f"--http-restricted-api={restricted}",
        f"--grpc-restricted-protocol={restricted}",
    ]
    return command


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
