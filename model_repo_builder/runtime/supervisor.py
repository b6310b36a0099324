"""Keep every model of a running tritonserver serving: find broken python-backend stubs, reload the model.

In Triton 2.51 a python-backend stub that dies is not restarted: the model stays "ready", health stays
200, and each request routed to the dead instance fails after about a second with "Stub process … is
not healthy". The supervisor knows which stubs each model should have (one per instance, named
`<model>_<group>_<index>` on the stub's command line) and which are alive (the server's child
processes); a model missing one, or reported not ready, is reloaded through the restricted
model-repository API (unload, then load: loading an unchanged model is a no-op). Repeated failures
of one model back off exponentially.

A model an operator unloaded on purpose (`trb models unload`, or anyone with the admin key) is left
alone: the repository index tells it apart (UNAVAILABLE, reason "unloaded") from a failed load
(UNAVAILABLE with the error) and from a dead stub (READY, stub gone). Once loaded again it is
watched again.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from model_repo_builder.errors import TrbError
from model_repo_builder.repository import config as model_config
from model_repo_builder.runtime.admin import ModelEntry, ModelRepository
from model_repo_builder.runtime.server import TritonServer
from model_repo_builder.runtime.sidecar import SidecarProcess
from model_repo_builder.runtime.status import write_state

LOGGER = logging.getLogger(__name__)

STUB_BINARY = "triton_python_backend_stub"


@dataclass(frozen=True, kw_only=True)
class Recovery:
    """One reload the supervisor made."""

    model: str
    reason: str
    seconds: float  # from noticing the failure to the model being loaded again
    ok: bool


@dataclass
class _ModelState:
    restarts: int = 0
    failures_in_a_row: int = 0
    not_before: float = 0.0  # monotonic time before which the model is not reloaded again
    history: list[Recovery] = field(default_factory=list)


def expected_stubs(repository: Path, model: str) -> set[str]:
    """The stub names a model's instance groups start: `<model>_<group>_<index>`."""
    config = model_config.parse((repository / model / "config.pbtxt").read_text(encoding="utf-8"))
    if config.backend != "python":  # ensembles and native backends start no stub
        return set()
    groups = config.instance_group or [None]
    return {
        f"{model}_{group_index}_{index}"
        for group_index, group in enumerate(groups)
        for index in range(group.count if group is not None and group.count else 1)
    }


def stub_processes(server_pid: int, proc: Path = Path("/proc")) -> dict[str, int]:
    """The python-backend stubs running as children of the server process: name → pid."""
    stubs = {}
    for status in proc.glob("[0-9]*/status"):
        try:
            lines = status.read_text().splitlines()
            parent = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("PPid:"))
            if int(parent) != server_pid:
                continue
            args = (status.parent / "cmdline").read_bytes().split(b"\0")
        except (OSError, StopIteration, ValueError):
            continue  # the process ended while we looked
        if args and args[0].endswith(STUB_BINARY.encode()) and len(args) > 8:
            stubs[args[8].decode("utf-8", errors="replace")] = int(status.parent.name)
    return stubs


def live_stubs(server_pid: int) -> set[str]:
    """Names of the python-backend stubs alive under the server process."""
    return set(stub_processes(server_pid))


class Supervisor:
    """Watches a `TritonServer`'s models in a background thread and reloads the broken ones."""

    def __init__(
        self,
        server: TritonServer,
        interval_s: float = 1.0,
        max_backoff_s: float = 30.0,
        state_path: Path | None = None,
    ):
        self.server = server
        self.state_path = state_path  # where `trb status` reads restarts and sidecars
        self._written: dict[str, object] | None = None
        self.interval_s = interval_s
        self.max_backoff_s = max_backoff_s
        self.states = {model: _ModelState() for model in server.models}
        self._expected = {m: expected_stubs(server.model_repositories[m], m) for m in server.models}
        self.unloaded: set[str] = set()  # models unloaded on purpose, not healed
        self.repository = ModelRepository(server.http_url, server.admin_key)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def restarts(self) -> dict[str, int]:
        """Reloads per model (and restarts per sidecar, as `model/step`) so far."""
        return {model: state.restarts for model, state in self.states.items()}

    def broken(self) -> dict[str, str]:
        """Models that cannot serve right now, with the reason (none of those unloaded on purpose)."""
        pid = self.server.pid
        if pid is None:
            return {}
        try:
            index = {entry.name: entry for entry in self.repository.index()}
        except TrbError as error:
            LOGGER.warning("cannot read the repository index: %s", error)
            return {}
        alive = live_stubs(pid)
        problems = {}
        for model, expected in self._expected.items():
            entry = index.get(model, ModelEntry(name=model, version="", state="UNAVAILABLE", reason=""))
            if entry.unloaded:
                if model not in self.unloaded:
                    LOGGER.warning("%s was unloaded on purpose; not reloading it", model)
                self.unloaded.add(model)
                continue
            self.unloaded.discard(model)
            if entry.state in ("LOADING", "UNLOADING"):
                continue  # someone with the key is changing it right now
            missing = sorted(expected - alive)
            if entry.state != "READY":
                problems[model] = f"the model is {entry.state.lower()}: {entry.reason or 'no reason given'}"
            elif missing:
                problems[model] = f"python-backend stub {', '.join(missing)} is gone"
        return problems

    def reload(self, model: str, reason: str) -> Recovery:
        """Unload, then load `model`; record the outcome and the backoff before the next try."""
        state = self.states[model]
        started = time.monotonic()
        LOGGER.warning("%s cannot serve (%s): reloading it", model, reason)
        try:
            self.repository.unload(model)
            self.repository.load(model)
            failure = ""
        except TrbError as error:
            failure = str(error)
        ok = not failure and not (self._expected[model] - live_stubs(self.server.pid or -1))
        seconds = time.monotonic() - started
        state.restarts += 1
        state.failures_in_a_row = 0 if ok else state.failures_in_a_row + 1
        backoff = min(self.max_backoff_s, self.interval_s * 2 ** min(state.restarts - 1, 10))
        state.not_before = time.monotonic() + backoff
        recovery = Recovery(model=model, reason=reason, seconds=round(seconds, 3), ok=ok)
        state.history.append(recovery)
        if ok:
            LOGGER.warning("%s reloaded in %.2f s (restart %d)", model, seconds, state.restarts)
        else:
            LOGGER.error(
                "%s did not come back (%s); next try in %.0f s; see %s",
                model,
                failure or "stubs missing after the load",
                backoff,
                self.server.log_path,
            )
        return recovery

    def restart_sidecar(self, sidecar: SidecarProcess) -> Recovery:
        """Start a dead sidecar again on its ports and wait until its step answers."""
        started = time.monotonic()
        LOGGER.warning("sidecar %s exited: restarting it", sidecar.label)
        try:
            sidecar.stop()  # what the dead process left behind (PyTriton's tritonserver) holds its ports
            sidecar.start().wait_ready(timeout_s=120)
            ok = True
        except TrbError as error:
            LOGGER.error("sidecar %s did not come back: %s", sidecar.label, error)
            ok = False
        seconds = time.monotonic() - started
        state = self.states.setdefault(sidecar.label, _ModelState())
        state.restarts += 1
        state.not_before = time.monotonic() + min(
            self.max_backoff_s, self.interval_s * 2 ** min(state.restarts - 1, 10)
        )
        recovery = Recovery(model=sidecar.label, reason="sidecar exited", seconds=round(seconds, 3), ok=ok)
        state.history.append(recovery)
        if ok:
            LOGGER.warning(
                "sidecar %s restarted in %.2f s (restart %d)", sidecar.label, seconds, state.restarts
            )
        return recovery

    def check_once(self) -> list[Recovery]:
        """Restart dead sidecars, then reload every broken model whose backoff has passed."""
        now = time.monotonic()
        done = [
            self.restart_sidecar(sidecar)
            for sidecar in self.server.sidecars
            if not sidecar.is_alive() and now >= self.states.get(sidecar.label, _ModelState()).not_before
        ]
        return done + [
            self.reload(model, reason)
            for model, reason in self.broken().items()
            if now >= self.states[model].not_before
        ]

    def _write_state(self) -> None:
        if self.state_path is None:
            return
        state: dict[str, object] = {
            "pid": self.server.pid,
            "metrics_url": self.server.metrics_url,
            "models": list(self.server.models),
            "repositories": {model: str(path) for model, path in self.server.model_repositories.items()},
            "restarts": self.restarts(),
            "unloaded": sorted(self.unloaded),
            "sidecars": [
                {"step": sidecar.label, "url": sidecar.url, "alive": sidecar.is_alive()}
                for sidecar in self.server.sidecars
            ],
        }
        if state != self._written:
            write_state(self.state_path, state)
            self._written = state

    def _run(self) -> None:
        self._write_state()
        while not self._stop.wait(self.interval_s):
            if not self.server.is_alive():
                return
            try:
                self.check_once()
                self._write_state()
            except Exception:  # the watcher must outlive any one failed check
                LOGGER.exception("supervisor check failed")

    def start(self) -> Supervisor:
        """Begin watching in a daemon thread."""
        self._thread = threading.Thread(target=self._run, name="trb-supervisor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (returns once the current check is done) and remove the state file."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=150)
        if self.state_path is not None:
            self.state_path.unlink(missing_ok=True)

    def status(self) -> dict[str, object]:
        """Restarts and the last recovery of each model, as plain data."""
        return {
            model: {
                "restarts": state.restarts,
                "last": dataclasses.asdict(state.history[-1]) if state.history else None,
            }
            for model, state in self.states.items()
        }
