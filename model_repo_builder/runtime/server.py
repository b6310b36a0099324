"""The tritonserver process: start, wait until every model is ready, stop gracefully.

Secure defaults: binds to loopback unless told otherwise; every model of the repositories is loaded
at start and model control is explicit so that the supervisor can reload a broken model and an
operator can load and unload models (`trb models`): the model-repository API, like the
shared-memory, logging and trace APIs, needs an admin key that only this process and its user know.

Several repositories are served by one process (`--model-repository` once each); a model name two
of them hold is refused before start, and the cores are divided across all their instances
(`runtime/threads.py`).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from model_repo_builder.errors import PortInUseError, RepositoryError, ServerError
from model_repo_builder.repository import config as model_config
from model_repo_builder.repository.manifest import MANIFEST_NAME, read_manifest
from model_repo_builder.repository.writer import file_hashes
from model_repo_builder.runtime.admin import key_file, write_key
from model_repo_builder.runtime.flags import ServerFlags
from model_repo_builder.runtime.sidecar import SidecarProcess, endpoints, sidecar_processes
from model_repo_builder.runtime.threads import ThreadSplit, thread_split
from model_repo_builder.runtime.tools import TritonInstallation, find_tritonserver
from model_repo_builder.spec import LaunchSpec
from model_repo_builder.templates.common.trb_runtime import LAUNCH_PARAMETERS_VARIABLE, SIDECARS_VARIABLE

LOGGER = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_LOAD_FAILURE = re.compile(r"failed to load '([^']+)'[^:]*: (.*)")
_BIND_FAILURE = re.compile(
    r"(failed to start \w+ service|Address already in use|Socket '.*' already in use).*", re.IGNORECASE
)


def repository_models(repository: Path) -> list[str]:
    """Names of the models in a repository; a missing or empty repository is a `RepositoryError`."""
    if not repository.is_dir():
        raise RepositoryError(f"model repository {repository} does not exist; build one with `trb build`")
    models = sorted(p.name for p in repository.iterdir() if (p / "config.pbtxt").is_file())
    if not models:
        raise RepositoryError(
            f"{repository} holds no model (no <model>/config.pbtxt); build one with `trb build`"
        )
    for name in models:
        model_config.parse((repository / name / "config.pbtxt").read_text(encoding="utf-8"))
    return models


def served_models(repositories: tuple[Path, ...]) -> dict[str, Path]:
    """Every model of every repository → the repository holding it; a name in two is a `RepositoryError`."""
    owners: dict[str, Path] = {}
    for repository in repositories:
        for model in repository_models(repository):
            if model in owners:
                raise RepositoryError(
                    f"model '{model}' is in both {owners[model]} and {repository}; one server cannot "
                    "serve two models of one name: rebuild one with another `--name`"
                )
            owners[model] = repository
    return dict(sorted(owners.items()))


def check_port_free(host: str, port: int, flag: str) -> None:
    """Raise `PortInUseError` naming the option when something already listens on host:port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise PortInUseError(
                f"port {port} on {host} is not available ({error.strerror}); "
                f"stop whatever uses it or choose another with `{flag}`"
            ) from None


def _without_traceback(reason: str) -> str:
    """Drop the stub traceback ("At: ...") the python backend appends to load errors."""
    return reason.replace("\\n", "\n").split("At:", 1)[0].strip().strip('"').strip()


def check_repository_files(repository: Path) -> None:
    """Compare files with the hashes `trb build` recorded; raise `RepositoryError` on any change."""
    if not (repository / MANIFEST_NAME).is_file():
        return
    recorded = read_manifest(repository).files
    actual = file_hashes(repository, exclude=(MANIFEST_NAME,))
    changed = sorted(path for path, digest in recorded.items() if actual.get(path) != digest)
    if changed:
        raise RepositoryError(
            f"{repository} differs from what `trb build` wrote "
            f"({', '.join(changed[:5])} changed or missing); "
            "rebuild it with `trb build --from` its trb.yaml"
        )


def die_with_parent() -> None:
    """Run in the child before exec: SIGTERM the server if trb dies, so no server is orphaned."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class TritonServer:
    """A tritonserver on one or several repositories; use as a context manager or start()/stop()."""

    def __init__(self, spec: LaunchSpec):
        self.spec = spec
        self.admin_key = secrets.token_urlsafe(24)
        self.models: list[str] = []
        self.model_repositories: dict[str, Path] = {}  # model → the repository holding it
        self.threads: ThreadSplit | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None
        self._log_handle: object | None = None
        self.sidecars: list[SidecarProcess] = []
        self.substituted: list[str] = []  # models the CPU smoke run serves on the python ONNX runner
        self._smoke_copy: Path | None = None

    @property
    def client_host(self) -> str:
        """Address clients on this machine use (a wildcard bind is reached through loopback)."""
        return "127.0.0.1" if self.spec.host in ("0.0.0.0", "::", "") else self.spec.host

    @property
    def http_url(self) -> str:
        """host:port of the HTTP/REST endpoint, as tritonclient expects it."""
        return f"{self.client_host}:{self.spec.http_port}"

    @property
    def grpc_url(self) -> str:
        """host:port of the gRPC endpoint."""
        return f"{self.client_host}:{self.spec.grpc_port}"

    @property
    def metrics_url(self) -> str:
        """Full URL of the Prometheus metrics endpoint."""
        return f"http://{self.client_host}:{self.spec.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        """Process id of the running server."""
        return self._process.pid if self.is_alive() and self._process is not None else None

    @property
    def log_path(self) -> Path | None:
        """File holding the server's stdout and stderr."""
        return self._log_path

    def flags(self) -> ServerFlags:
        """The tritonserver flags for this spec, as every other runtime renders them too."""
        installation = find_tritonserver()
        return ServerFlags(
            admin_key=self.admin_key,
            model_repositories=tuple(str(repository.resolve()) for repository in self.served_repositories),
            address=self.spec.host,
            http_port=self.spec.http_port,
            grpc_port=self.spec.grpc_port,
            metrics_port=self.spec.metrics_port,
            exit_timeout_s=self.spec.exit_timeout_s,
            log_verbose=self.spec.log_verbose,
            backend_directory=str(installation.backend_dir),
            cache_directory=str(installation.cache_dir),
            extra_args=(*self.feature_flags(), *self.spec.extra_args),
        )

    def command(self) -> list[str]:
        """The tritonserver command line for this spec."""
        return [str(find_tritonserver().binary), *self.flags().args()]

    def feature_flags(self) -> list[str]:
        """The response cache when a model has it on; the rate limiter when a model needs resources."""
        configs = [
            model_config.parse((repository / model / "config.pbtxt").read_text(encoding="utf-8"))
            for model, repository in (
                self.model_repositories or served_models(self.spec.repositories)
            ).items()
        ]
        flags = []
        if any(config.response_cache.enable for config in configs):
            flags.append(f"--cache-config=local,size={self.spec.cache_size_mb * 1024 * 1024}")
        if any(group.rate_limiter.resources for config in configs for group in config.instance_group):
            flags.append("--rate-limit=execution_count")
            flags += [
                f"--rate-limit-resource={item.replace('=', ':')}" for item in self.spec.rate_limit_resources
            ]
        return flags

    def start(self) -> TritonServer:
        """Check the repository and ports, start the sidecars (waiting for them), then tritonserver.

        Does not wait for tritonserver's readiness (`wait_ready` does).
        """
        if self.is_alive():
            raise ServerError("this server is already running")
        self.model_repositories = served_models(self.spec.repositories)
        self.models = list(self.model_repositories)
        for repository in self.spec.repositories:
            check_repository_files(repository)
        self.threads = thread_split(self.model_repositories)
        if self.threads.oversubscribed and len(self.spec.repositories) > 1:
            LOGGER.warning(
                "%d instances need more threads than the %d cores: %s",
                sum(m.instances for m in self.threads.models),
                self.threads.cores,
                self.threads.describe(),
            )
        for flag, port in (
            ("--http-port", self.spec.http_port),
            ("--grpc-port", self.spec.grpc_port),
            ("--metrics-port", self.spec.metrics_port),
        ):
            check_port_free(self.spec.host, port, flag)
        installation = find_tritonserver()
        self._prepare_backends(installation.backend_dir)
        try:
            self._start_processes(installation)
        except BaseException:
            self._remove_smoke_copy()
            raise
        return self

    def _start_processes(self, installation: TritonInstallation) -> None:
        """Start the sidecars (waiting until they answer), then tritonserver on the served folder."""
        command = self.command()
        # Sidecars first: a model's warmup already runs its steps.
        self.sidecars = [
            process.start()
            for repository in self.spec.repositories
            for process in sidecar_processes(
                repository, [m for m, r in self.model_repositories.items() if r == repository]
            )
        ]
        try:
            for sidecar in self.sidecars:
                sidecar.wait_ready(self.spec.startup_timeout_s)
        except ServerError:
            for sidecar in self.sidecars:
                sidecar.stop()
            raise
        environment = installation.environment()
        environment[SIDECARS_VARIABLE] = json.dumps(endpoints(self.sidecars))
        overrides = self.threads.overrides() if self.threads is not None else {}
        environment[LAUNCH_PARAMETERS_VARIABLE] = json.dumps(overrides)
        log_file = tempfile.NamedTemporaryFile(prefix="tritonserver-", suffix=".log", delete=False)  # noqa: SIM115
        self._log_path = Path(log_file.name)
        self._log_handle = log_file
        LOGGER.info(
            "starting tritonserver on %s (log: %s)",
            ", ".join(map(str, self.served_repositories)),
            self._log_path,
        )
        LOGGER.debug("command: %s", " ".join(command))
        self._process = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=environment,
            preexec_fn=die_with_parent,
        )
        write_key(self.key_path, self.admin_key)  # for `trb models` run by this user

    def _remove_smoke_copy(self) -> None:
        """Delete the CPU-smoke copy, if this server made one."""
        if self._smoke_copy is not None:
            shutil.rmtree(self._smoke_copy, ignore_errors=True)
            self._smoke_copy = None

    def _prepare_backends(self, backends: Path) -> None:
        """Refuse native onnxruntime models the local server lacks; with `cpu_smoke`, substitute them."""
        from model_repo_builder.runtime.cpu_smoke import (
            NATIVE_ONNX_BACKEND,
            cpu_smoke_copy,
            native_onnx_models,
        )

        if self.spec.cpu_smoke:
            target = Path(tempfile.mkdtemp(prefix="trb-cpu-smoke-"))
            try:
                (repository,) = self.spec.repositories  # LaunchSpec allows one with cpu_smoke
                self.substituted = cpu_smoke_copy(repository, self.models, target)
            except BaseException:
                shutil.rmtree(target, ignore_errors=True)
                raise
            self._smoke_copy = target
            self.model_repositories = served_models(self.served_repositories)
            return
        native = [
            model
            for repository in self.spec.repositories
            for model in native_onnx_models(
                repository, [m for m, r in self.model_repositories.items() if r == repository]
            )
        ]
        if native and not (backends / NATIVE_ONNX_BACKEND).is_dir():
            raise RepositoryError(
                f"{', '.join(native)} runs on Triton's onnxruntime backend (a GPU-target repository), which "
                f"this tritonserver lacks (backends in {backends}); serve it where that "
                "backend exists (`trb deploy docker`, NGC image), or smoke-test it on this CPU with "
                "`trb launch --cpu-smoke`"
            )

    @property
    def served_repositories(self) -> tuple[Path, ...]:
        """The folders tritonserver serves: the repositories, or the one's CPU-smoke copy."""
        return (self._smoke_copy,) if self._smoke_copy is not None else self.spec.repositories

    @property
    def key_path(self) -> Path:
        """The file (this user only) holding the admin key while the server runs."""
        return key_file(self.spec.http_port)

    def logs(self) -> str:
        """Everything the server has written so far."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        return self._log_path.read_text(encoding="utf-8", errors="replace")

    def is_alive(self) -> bool:
        """Whether the process is running."""
        return self._process is not None and self._process.poll() is None

    def _failure_reason(self) -> str:
        logs = self.logs()
        reasons = [
            f"model '{m.group(1)}': {_without_traceback(m.group(2))}" for m in _LOAD_FAILURE.finditer(logs)
        ]
        reasons += [m.group(0).strip() for m in _BIND_FAILURE.finditer(logs)]
        if reasons:
            return "; ".join(dict.fromkeys(reasons))
        tail = logs.strip().splitlines()[-5:]
        return " | ".join(tail) if tail else "no output"

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Block until every model is ready; raise `ServerError` with the server's reason if not."""
        deadline = time.monotonic() + (timeout_s or self.spec.startup_timeout_s)
        while time.monotonic() < deadline:
            if not self.is_alive():
                code = self._process.returncode if self._process else None
                raise ServerError(
                    f"tritonserver exited (code {code}) before it was ready: {self._failure_reason()}"
                )
            if self._ready():
                LOGGER.info("tritonserver ready: http %s, grpc %s", self.http_url, self.grpc_url)
                return
            time.sleep(0.25)
        reason = self._failure_reason()
        self.stop()
        raise ServerError(
            f"tritonserver was not ready within {timeout_s or self.spec.startup_timeout_s:.0f} s: {reason}"
        )

    def stop(self, timeout_s: float | None = None) -> int | None:
        """SIGTERM (in-flight requests finish), wait, then SIGKILL; return the exit code."""
        process = self._process
        if process is None:
            self._remove_smoke_copy()
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s or self.spec.exit_timeout_s + 10)
            except subprocess.TimeoutExpired:
                LOGGER.warning("tritonserver did not exit after SIGTERM; killing it")
                process.kill()
                process.wait()
        if self._log_handle is not None:
            self._log_handle.close()  # type: ignore[attr-defined]
            self._log_handle = None
        for sidecar in self.sidecars:  # after the server: requests in flight still reach their steps
            sidecar.stop()
        if self.key_path.is_file() and self.key_path.read_text(encoding="utf-8") == self.admin_key:
            self.key_path.unlink()
        self._remove_smoke_copy()
        return process.returncode

    def __enter__(self) -> TritonServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
