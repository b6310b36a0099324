"""A running server's model-repository API: list, load and unload models, with the launch's admin key.

tritonserver answers this API (like the shared-memory, logging and trace APIs) only to requests that
carry the key `TritonServer` made for that launch. While it runs, the server object keeps the key in
`launch-<http port>.key` in trb's cache directory, readable by the same user only, so `trb models`
run by that user finds it; `--key-file` names another file.

What an unload does to requests in flight (Triton 2.51, tested in tests/integration/test_models_cli.py):
the unload call returns at once and the model turns UNLOADING; requests already accepted run to the
end, streams included (every response is sent); requests that arrive after the call are refused
("not found"); once the last request is done the model is UNAVAILABLE with the reason "unloaded".
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from model_repo_builder.errors import InferenceError, ServerError, SpecError
from model_repo_builder.runtime.flags import ADMIN_HEADER
from model_repo_builder.runtime.tools import cache_dir

UNLOADED_REASON = "unloaded"  # the reason Triton's index gives a model that was unloaded on purpose


def key_file(http_port: int) -> Path:
    """Where the server launched on `http_port` keeps its admin key (one per port and user)."""
    return cache_dir() / f"launch-{http_port}.key"


def write_key(path: Path, key: str) -> None:
    """Write `key` readable by this user only (created with mode 0600, never wider)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(key)


def read_key(url: str, path: Path | None = None) -> str:
    """The admin key for the server at `url` (host:port): from `path`, or the one its launcher wrote."""
    if path is None:
        try:
            port = int(url.rsplit(":", 1)[1])
        except (IndexError, ValueError):
            raise SpecError(f"`--url` must be host:port, got {url!r}") from None
        path = key_file(port)
        if not path.is_file():
            raise SpecError(
                f"no admin key for {url}: {path} does not exist (it is written by `trb launch` run by "
                "this user on this machine); pass `--key-file`"
            )
    try:
        key = path.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise SpecError(f"cannot read the admin key from {path}: {error.strerror}") from None
    if not key:
        raise SpecError(f"{path} is empty; it should hold the server's admin key")
    return key


@dataclass(frozen=True, kw_only=True)
class ModelEntry:
    """One model of the repository index: READY, LOADING, UNLOADING or UNAVAILABLE, and why."""

    name: str
    version: str
    state: str
    reason: str

    @property
    def unloaded(self) -> bool:
        """Whether someone holding the key unloaded it (as opposed to a failed load)."""
        return self.state == "UNAVAILABLE" and self.reason == UNLOADED_REASON


class ModelRepository:
    """The model-repository API of the server at `url` (host:port, HTTP), called with `key`."""

    def __init__(self, url: str, key: str | None, timeout_s: float = 300.0):
        self.url = url
        self.key = key
        self.timeout_s = timeout_s

    def _post(self, path: str) -> bytes:
        headers = {"Content-Type": "application/json"}
        if self.key is not None:
            headers[ADMIN_HEADER] = self.key
        request = urllib.request.Request(
            f"http://{self.url}{path}", data=b"{}", method="POST", headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as error:
            message = error.read().decode("utf-8", errors="replace")
            with contextlib.suppress(ValueError):
                message = json.loads(message).get("error", message)
            if error.code == 403:
                raise ServerError(f"the server at {self.url} refused the admin key: {message}") from None
            raise ServerError(f"the server at {self.url}: {message}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            raise InferenceError(
                f"cannot reach a Triton server at {self.url} ({error}); is `trb launch` running?"
            ) from None

    def index(self) -> list[ModelEntry]:
        """Every model the server's repositories hold, loaded or not."""
        entries = json.loads(self._post("/v2/repository/index") or b"[]")
        return [
            ModelEntry(
                name=entry["name"],
                version=str(entry.get("version", "")),
                state=entry.get("state", ""),
                reason=entry.get("reason", ""),
            )
            for entry in entries
        ]

    def load(self, model: str) -> None:
        """Load (or reload) `model` from the server's repositories; returns once it is loaded."""
        self._post(f"/v2/repository/models/{model}/load")

    def unload(self, model: str) -> None:
        """Unload `model`: in-flight requests finish, new ones are refused (see the module docstring)."""
        self._post(f"/v2/repository/models/{model}/unload")
