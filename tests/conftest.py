"""Shared fixtures: the default model built once per session in fp32 and int8, and a server for each.

Builds take ~20 s and a server start a few seconds, so every integration test shares them. Unit tests
use none of these fixtures and never trigger a build.
"""

from __future__ import annotations

import contextlib
import re
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from model_repo_builder.build import BuildResult, build
from model_repo_builder.runtime.ports import free_ports as free_ports_helper
from model_repo_builder.runtime.server import TritonServer
from model_repo_builder.spec import BuildSpec, LaunchSpec

DEFAULT_SOURCE = "minilm"


@dataclass(frozen=True)
class BuiltRepository:
    """A repository built by a session fixture, with the spec it was built from."""

    spec: BuildSpec
    result: BuildResult

    @property
    def name(self) -> str:
        return self.result.name

    @property
    def repository(self) -> Path:
        """The directory tritonserver is pointed at (holds `<name>/`, trb.yaml, README.md)."""
        return self.result.repository

    @property
    def model_dir(self) -> Path:
        return self.result.repository / self.result.name


def launch_spec(*repositories: Path, **overrides: object) -> LaunchSpec:
    """A LaunchSpec serving `repositories` on fresh free ports."""
    http_port, grpc_port, metrics_port = free_ports_helper(3)
    return LaunchSpec(
        repositories=repositories,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        **overrides,  # type: ignore[arg-type]
    )


@contextlib.contextmanager
def running_server(*repositories: Path) -> Iterator[TritonServer]:
    """Start one tritonserver on `repositories`, wait until ready, stop it afterwards."""
    with TritonServer(launch_spec(*repositories)) as server:
        yield server


@pytest.fixture(scope="session")
def free_ports() -> Callable[..., list[int]]:
    """`free_ports(count)`: distinct ports nothing listens on (tests use it instead of importing conftest)."""
    return free_ports_helper


@pytest.fixture(scope="session")
def server_launch_spec() -> Callable[..., LaunchSpec]:
    """`server_launch_spec(repository, **overrides)`: a LaunchSpec on fresh free ports."""
    return launch_spec


def _build_default(tmp_path_factory: pytest.TempPathFactory, precision: str) -> BuiltRepository:
    output = tmp_path_factory.mktemp(f"repos-{precision}")
    spec = BuildSpec(source=DEFAULT_SOURCE, output=output, precision=precision, name=f"minilm-{precision}")
    return BuiltRepository(spec=spec, result=build(spec))


@pytest.fixture(scope="session")
def fp32_repo(tmp_path_factory: pytest.TempPathFactory) -> BuiltRepository:
    """The default model (all-MiniLM-L6-v2 from its pip package) built in fp32, once per session."""
    return _build_default(tmp_path_factory, "fp32")


@pytest.fixture(scope="session")
def int8_repo(tmp_path_factory: pytest.TempPathFactory) -> BuiltRepository:
    """The default model built in int8, once per session."""
    return _build_default(tmp_path_factory, "int8")


@pytest.fixture(scope="session")
def fp32_server(fp32_repo: BuiltRepository) -> Iterator[TritonServer]:
    """tritonserver serving the fp32 repository for the whole session."""
    with running_server(fp32_repo.repository) as server:
        yield server


@pytest.fixture(scope="session")
def int8_server(int8_repo: BuiltRepository) -> Iterator[TritonServer]:
    """tritonserver serving the int8 repository for the whole session."""
    with running_server(int8_repo.repository) as server:
        yield server


def metric_values(metrics_url: str, name: str, model: str) -> dict[str, float]:
    """`name`'s value per instance label for `model`, from a raw scrape."""
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and f'model="{model}"' in line:
            instance = re.search(r'instance="([^"]*)"', line)
            values[instance.group(1) if instance else ""] = float(line.rsplit(" ", 1)[1])
    return values
