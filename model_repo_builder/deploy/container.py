"""`trb deploy docker`: a compose file, a `docker run` script and monitoring config for a repository.

Both the compose file and the script serve the repository with trb's image (the top-level
Dockerfile: NGC tritonserver 24.10 plus the packages the models import) and exactly the container
settings `trb launch --docker` uses (`runtime/docker.py`). The repository is referred to by a path
relative to the output folder, so the two can move together. The restricted-API key is read from
the `TRB_ADMIN_KEY` environment variable when the container starts; no file holds it.
"""

from __future__ import annotations

import os
import shlex
from typing import Any

from model_repo_builder.deploy import yaml_text
from model_repo_builder.deploy.facts import RepositoryFacts
from model_repo_builder.deploy.monitoring import dashboard_json, prometheus_config
from model_repo_builder.deploy.sizing import docker_size, shm_bytes
from model_repo_builder.runtime.docker import (
    CONTAINER_REPOSITORY,
    CONTAINER_USER,
    container_flags,
    docker_run_options,
)
from model_repo_builder.spec import DeploySpec

PROMETHEUS_IMAGE = "prom/prometheus:v2.55.1"
GRAFANA_IMAGE = "grafana/grafana:11.3.0"
_KEY_PLACEHOLDER = "@TRB_ADMIN_KEY@"
_KEY_HINT = "set TRB_ADMIN_KEY to a secret (e.g. the output of: openssl rand -hex 24)"


def _flags(spec: DeploySpec, facts: RepositoryFacts) -> list[str]:
    return container_flags(
        admin_key=_KEY_PLACEHOLDER,
        http_port=spec.http_port,
        grpc_port=spec.grpc_port,
        metrics_port=spec.metrics_port,
        exit_timeout_s=spec.exit_timeout_s,
        gpus=facts.gpu,
    ).args()


def _relative_repository(facts: RepositoryFacts, output: str) -> str:
    relative = os.path.relpath(facts.path.resolve(), os.path.abspath(output))
    return relative if relative.startswith(".") else f"./{relative}"  # compose reads "name" as a volume


def _shell_word(argument: str) -> str:
    """Quote one argument for sh, expanding the admin-key placeholder to "${TRB_ADMIN_KEY}"."""
    parts = argument.split(_KEY_PLACEHOLDER)
    return '"${TRB_ADMIN_KEY}"'.join(shlex.quote(part) if part else "" for part in parts)


def run_script(spec: DeploySpec, facts: RepositoryFacts, output: str) -> str:
    """docker-run.sh: the `docker run` line, with the repository found relative to the script."""
    options = docker_run_options(
        host=spec.host,
        ports=(spec.http_port, spec.grpc_port, spec.metrics_port),
        repositories=("@REPOSITORY@",),
        shm_size=docker_size(shm_bytes(facts)),
        gpus=facts.gpu,
    )
    words = [
        "docker",
        "run",
        *options,
        f"--name=trb-{facts.name}",
        spec.image,
        "tritonserver",
        *_flags(spec, facts),
    ]
    quoted = [_shell_word(word).replace("@REPOSITORY@", '"${REPOSITORY}"') for word in words]
    grouped: list[str] = ["docker run"]
    pending = ""
    for word in quoted[2:]:  # an option and its value stay on one line
        if word in ("-p", "-v"):
            pending = word
            continue
        grouped.append(f"{pending} {word}".strip())
        pending = ""
    lines = " \\\n    ".join(grouped)
    relative = _relative_repository(facts, output)
    return (
        "#!/bin/sh\n"
        f"# Serve {facts.name} with tritonserver in trb's image (written by `trb deploy docker`).\n"
        "# Build the image first, in the trb checkout: docker build -t trb-triton:24.10 .\n"
        "set -eu\n"
        f': "${{TRB_ADMIN_KEY:?{_KEY_HINT}}}"\n'
        f'REPOSITORY="$(cd "$(dirname "$0")" && cd {shlex.quote(relative)} && pwd)"\n'
        f"exec {lines}\n"
    )


def compose_file(spec: DeploySpec, facts: RepositoryFacts, output: str) -> dict[str, Any]:
    """compose.yaml: the server, plus Prometheus and Grafana under the `monitoring` profile."""
    flags = [
        flag.replace(_KEY_PLACEHOLDER, f"${{TRB_ADMIN_KEY:?{_KEY_HINT}}}") for flag in _flags(spec, facts)
    ]
    ports = (spec.http_port, spec.grpc_port, spec.metrics_port)
    triton: dict[str, Any] = {
        "image": spec.image,
        "command": ["tritonserver", *flags],
        "init": True,
        "user": CONTAINER_USER,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "shm_size": docker_size(shm_bytes(facts)),
        "ports": [f"{spec.host}:{port}:{port}" for port in ports],
        "volumes": [
            {
                "type": "bind",
                "source": _relative_repository(facts, output),
                "target": CONTAINER_REPOSITORY,
                "read_only": True,
            }
        ],
        "stop_grace_period": f"{spec.exit_timeout_s + 10}s",
        "healthcheck": {
            # The image has Python (the python backend needs it); curl is not guaranteed.
            "test": [
                "CMD",
                "python3",
                "-c",
                f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{spec.http_port}/v2/health/ready')",
            ],
            "interval": "10s",
            "timeout": "5s",
            "retries": 3,
            "start_period": "120s",
        },
    }
    if facts.gpu:
        triton["deploy"] = {
            "resources": {
                "reservations": {"devices": [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]}
            }
        }
    return {
        "name": f"trb-{facts.name}".lower(),
        "services": {
            "triton": triton,
            "prometheus": {
                "image": PROMETHEUS_IMAGE,
                "profiles": ["monitoring"],
                "volumes": [
                    {
                        "type": "bind",
                        "source": "./prometheus.yml",
                        "target": "/etc/prometheus/prometheus.yml",
                        "read_only": True,
                    }
                ],
                "ports": [f"{spec.host}:9090:9090"],
            },
            "grafana": {
                "image": GRAFANA_IMAGE,
                "profiles": ["monitoring"],
                "volumes": [
                    {
                        "type": "bind",
                        "source": "./grafana/provisioning",
                        "target": "/etc/grafana/provisioning",
                        "read_only": True,
                    },
                    {
                        "type": "bind",
                        "source": "./grafana/dashboards",
                        "target": "/var/lib/grafana/dashboards",
                        "read_only": True,
                    },
                ],
                "ports": [f"{spec.host}:3000:3000"],
            },
        },
    }


def grafana_provisioning() -> dict[str, dict[str, Any]]:
    """Grafana's provisioning files: the Prometheus data source and the dashboard folder."""
    return {
        "grafana/provisioning/datasources/prometheus.yml": {
            "apiVersion": 1,
            "datasources": [
                {
                    "name": "Prometheus",
                    "type": "prometheus",
                    "access": "proxy",
                    "url": "http://prometheus:9090",
                    "isDefault": True,
                }
            ],
        },
        "grafana/provisioning/dashboards/trb.yml": {
            "apiVersion": 1,
            "providers": [
                {"name": "trb", "type": "file", "options": {"path": "/var/lib/grafana/dashboards"}}
            ],
        },
    }


def render(spec: DeploySpec, facts: RepositoryFacts, output: str) -> dict[str, str]:
    """Every file of the docker deployment, by path relative to the output folder."""
    files = {
        "compose.yaml": yaml_text.dump(compose_file(spec, facts, output)),
        "docker-run.sh": run_script(spec, facts, output),
        "prometheus.yml": yaml_text.dump(prometheus_config(f"triton:{spec.metrics_port}", facts.name)),
        f"grafana/dashboards/{facts.name}.json": dashboard_json(facts),
    }
    for path, content in grafana_provisioning().items():
        files[path] = yaml_text.dump(content)
    return files
