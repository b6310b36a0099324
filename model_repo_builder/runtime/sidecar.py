"""PyTriton sidecars: the user's own pre- and post-processing steps, each in its own process.

A step is a plain Python function named by a SPEC, `path/to/file.py:function` or
`package.module:function`:

- `text` steps take and return `list[str]` of the same length (a pre step of any model, the post
  step of a text-generation model: prompt templating, PII scrubbing, output clean-up);
- `vectors` steps take and return a float32 `np.ndarray` with the same number of rows (the post
  step of an embedding model: Matryoshka truncation, re-normalization);
- `arrays` steps are PyTriton-style callables on named arrays: they take a dict of the model's
  outputs by name and return a dict with the same names and the same number of rows (the post step
  of a classifier or a reranker: `{"SCORES", "LABEL"}` or `{"SCORE"}`; calibration, abstention,
  relabelling). A step is declared by the task it is attached to, not by a decorator: the task's
  `post_step_kind` says which contract its `--post` steps follow.

`trb build --pre/--post` copies the step's source file into the repository (`<model>/sidecars/`,
hashed in trb.yaml). `trb launch` starts one PyTriton server per step on loopback ports (its own
tritonserver, model `step`, input and output `DATA`, or the named outputs for `arrays` steps), and
the repository's python-backend model
calls it for each request with the Triton client, so clients keep one endpoint and one model name.
Run as `python -m model_repo_builder.runtime.sidecar STEP.json PORTS` by the launcher.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_repo_builder.errors import SpecError

LOGGER = logging.getLogger(__name__)

STEPS_DIR = "sidecars"
STEPS_FILE = "steps.json"
STEP_MODEL = "step"
STEP_TENSOR = "DATA"
KINDS = ("text", "vectors", "arrays")
PYTRITON_SHM_PREFIX = "pytrtion"  # sic: PyTriton 0.7's shared-memory region prefix
# Sample rows per data type for checking an `arrays` step at build time.
_SAMPLE_ROWS = 2
# numpy dtypes of the Triton data types an `arrays` step exchanges (strings travel as bytes objects)
_NUMPY = {"TYPE_FP32": "float32", "TYPE_INT64": "int64", "TYPE_INT32": "int32", "TYPE_BOOL": "bool"}


@dataclass(frozen=True, kw_only=True)
class Step:
    """One pre or post step of a model, as recorded in `<model>/sidecars/steps.json`."""

    stage: str  # "pre" or "post"
    index: int  # order within the stage
    kind: str  # "text" or "vectors"
    file: str  # the copied source file, relative to the sidecars directory
    function: str
    sha256: str
    # `arrays` steps: the named tensors they take and return, [{"name", "data_type", "dims"}, …]
    tensors: tuple[dict[str, Any], ...] = ()

    @property
    def name(self) -> str:
        """A stable label: `pre-0-scrub`."""
        return f"{self.stage}-{self.index}-{self.function}"


def _source_file(spec: str) -> tuple[Path, str]:
    """The file and function a SPEC names; a bad SPEC is a `SpecError` that shows the two forms."""
    target, _, function = spec.rpartition(":")
    if not target or not function.isidentifier():
        raise SpecError(f"step {spec!r} must be `path/to/file.py:function` or `package.module:function`")
    if target.endswith(".py"):
        path = Path(target).expanduser()
        if not path.is_file():
            raise SpecError(f"step {spec!r}: {path} is not a file")
        return path.resolve(), function
    module = importlib.util.find_spec(target)
    if module is None or module.origin is None or not module.origin.endswith(".py"):
        raise SpecError(f"step {spec!r}: module {target} is not importable as a single .py file")
    return Path(module.origin), function


def load_function(path: Path, function: str) -> Callable[..., Any]:
    """Import `function` from the source file at `path` (under a private module name)."""
    module_name = f"trb_step_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
    loader = importlib.util.spec_from_file_location(module_name, path)
    if loader is None or loader.loader is None:
        raise SpecError(f"{path} cannot be imported as Python")
    module = importlib.util.module_from_spec(loader)
    try:
        loader.loader.exec_module(module)
    except Exception as error:  # the user's module failed to import: say where, whatever it raised
        raise SpecError(f"importing {path} failed: {type(error).__name__}: {error}") from None
    found = getattr(module, function, None)
    if not callable(found):
        raise SpecError(f"{path} has no function {function!r}")
    return found  # type: ignore[no-any-return]


def sample_arrays(tensors: tuple[dict[str, Any], ...], rows: int = _SAMPLE_ROWS) -> dict[str, Any]:
    """Sample data for the named tensors: ones for numbers, b"sample" for strings."""
    import numpy as np

    arrays = {}
    for tensor in tensors:
        width = max(int(tensor["dims"][-1]), 1) if tensor["dims"] else 1
        if tensor["data_type"] == "TYPE_STRING":
            arrays[tensor["name"]] = np.full((rows, width), b"sample", dtype=np.object_)
        else:
            arrays[tensor["name"]] = np.ones((rows, width), dtype=_NUMPY[tensor["data_type"]])
    return arrays


def check_arrays(result: Any, tensors: tuple[dict[str, Any], ...], rows: int, label: str) -> dict[str, Any]:
    """`result` if it holds every named tensor with `rows` rows; a ValueError naming what is wrong."""
    import numpy as np

    names = [tensor["name"] for tensor in tensors]
    if not isinstance(result, dict) or sorted(result) != sorted(names):
        got = sorted(result) if isinstance(result, dict) else type(result).__name__
        raise ValueError(f"{label} must return a dict with exactly {names}, got {got}")
    checked = {}
    for tensor in tensors:
        value = np.asarray(result[tensor["name"]])
        if value.ndim != 2 or value.shape[0] != rows:
            raise ValueError(
                f"{label} returned {tensor['name']} of shape {value.shape}; expected {rows} rows, 2-D"
            )
        if tensor["data_type"] == "TYPE_STRING":
            value = np.array([[_as_bytes(item) for item in row] for row in value], dtype=np.object_)
        else:
            value = value.astype(_NUMPY[tensor["data_type"]])
        checked[tensor["name"]] = value
    return checked


def _as_bytes(item: Any) -> bytes:
    return item if isinstance(item, bytes) else str(item).encode("utf-8")


def check_step(
    step_function: Callable[..., Any], kind: str, label: str, tensors: tuple[dict[str, Any], ...] = ()
) -> None:
    """Call the step once on sample data and check its contract (same length, right types)."""
    import numpy as np

    if kind == "arrays":
        try:
            check_arrays(step_function(sample_arrays(tensors)), tensors, _SAMPLE_ROWS, f"step {label}")
        except ValueError as error:
            raise SpecError(str(error)) from None
        return
    if kind == "text":
        sample: Any = ["A short sample text.", "Another one."]
        result = step_function(list(sample))
        if not (
            isinstance(result, list)
            and len(result) == len(sample)
            and all(isinstance(t, str) for t in result)
        ):
            raise SpecError(
                f"step {label} must return a list of {len(sample)} strings for {len(sample)} texts"
            )
        return
    sample = np.ones((2, 8), dtype=np.float32)
    result = step_function(sample)
    if not (isinstance(result, np.ndarray) and result.ndim == 2 and result.shape[0] == 2):
        raise SpecError(f"step {label} must return a 2-D array with one row per input row")


def copy_steps(
    specs: dict[str, tuple[str, ...]],
    kinds: dict[str, str],
    model_dir: Path,
    tensors: tuple[dict[str, Any], ...] = (),
) -> list[Step]:
    """Check each SPEC and copy its source file into `model_dir/sidecars`; write steps.json.

    `tensors` are the named outputs an `arrays` step takes and returns.
    """
    steps = []
    for stage, stage_specs in specs.items():
        for index, spec in enumerate(stage_specs):
            path, function = _source_file(spec)
            label = f"{stage} step {spec}"
            step_tensors = tensors if kinds[stage] == "arrays" else ()
            check_step(load_function(path, function), kinds[stage], label, step_tensors)
            target_dir = model_dir / STEPS_DIR
            target_dir.mkdir(parents=True, exist_ok=True)
            copied = f"{stage}_{index}_{path.name}"
            shutil.copy2(path, target_dir / copied)
            digest = hashlib.sha256((target_dir / copied).read_bytes()).hexdigest()
            steps.append(
                Step(
                    stage=stage,
                    index=index,
                    kind=kinds[stage],
                    file=copied,
                    function=function,
                    sha256=digest,
                    tensors=step_tensors,
                )
            )
    if steps:
        (model_dir / STEPS_DIR / STEPS_FILE).write_text(
            json.dumps([step.__dict__ for step in steps], indent=2), encoding="utf-8"
        )
    return steps


def read_steps(model_dir: Path) -> list[Step]:
    """The steps of a built model (none when it has no sidecars)."""
    file = model_dir / STEPS_DIR / STEPS_FILE
    if not file.is_file():
        return []
    return [
        Step(**{**entry, "tensors": tuple(entry.get("tensors", ()))})
        for entry in json.loads(file.read_text(encoding="utf-8"))
    ]


def serve_step(model_dir: Path, step: Step, ports: tuple[int, int, int]) -> None:
    """Host one step with PyTriton on loopback until the process is told to stop (the launcher does)."""
    import numpy as np
    from pytriton.decorators import batch
    from pytriton.model_config import ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    function = load_function(model_dir / STEPS_DIR / step.file, step.function)

    if step.kind == "arrays":

        @batch
        def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
            rows = len(next(iter(inputs.values())))
            return check_arrays(function(dict(inputs)), step.tensors, rows, step.name)

        tensors = [
            Tensor(
                name=tensor["name"],
                dtype=bytes
                if tensor["data_type"] == "TYPE_STRING"
                else np.dtype(_NUMPY[tensor["data_type"]]),
                shape=(-1,),
            )
            for tensor in step.tensors
        ]
    elif step.kind == "text":

        @batch
        def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
            texts = [row.reshape(-1)[0].decode("utf-8") for row in inputs[STEP_TENSOR]]
            result = function(texts)
            if len(result) != len(texts):
                raise ValueError(f"{step.name} returned {len(result)} texts for {len(texts)}")
            return {STEP_TENSOR: np.array([[str(t).encode("utf-8")] for t in result], dtype=np.object_)}

        tensors = [Tensor(name=STEP_TENSOR, dtype=bytes, shape=(1,))]
    else:

        @batch
        def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
            vectors = inputs[STEP_TENSOR]
            result = np.asarray(function(vectors), dtype=np.float32)
            if result.ndim != 2 or result.shape[0] != vectors.shape[0]:
                raise ValueError(f"{step.name} returned shape {result.shape} for {vectors.shape[0]} rows")
            return {STEP_TENSOR: result}

        tensors = [Tensor(name=STEP_TENSOR, dtype=np.float32, shape=(-1,))]
    http_port, grpc_port, metrics_port = ports
    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=http_port,
        grpc_address="127.0.0.1",
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        exit_timeout_secs=5,
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name=STEP_MODEL,
            infer_func=infer,
            inputs=tensors,
            outputs=tensors,
            # No dynamic batcher: it would join requests from different callers (two model
            # instances, or a batch and its per-request retry) into one call, and a step that
            # raises on one row would fail them all. Each call already carries a whole batch.
            config=ModelConfig(max_batch_size=256, batcher=None),  # type: ignore[arg-type]
            strict=False,
        )
        triton.serve()


class SidecarProcess:
    """One step's PyTriton server: start / wait_ready / is_alive / stop, dying with its parent."""

    def __init__(self, model: str, model_dir: Path, step: Step, ports: tuple[int, int, int]):
        self.model, self.model_dir, self.step, self.ports = model, model_dir, step, ports
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def url(self) -> str:
        """host:port of its HTTP endpoint."""
        return f"127.0.0.1:{self.ports[0]}"

    @property
    def label(self) -> str:
        """`model/pre-0-function`."""
        return f"{self.model}/{self.step.name}"

    def start(self) -> SidecarProcess:
        """Launch the process (does not wait for it to be ready)."""
        from model_repo_builder.runtime.server import check_port_free, die_with_parent
        from model_repo_builder.runtime.tools import find_tritonserver

        for port in self.ports:
            check_port_free("127.0.0.1", port, f"the {self.label} sidecar")
        prefix = f"trb-sidecar-{self.step.name}-"
        self._log = tempfile.NamedTemporaryFile(prefix=prefix, suffix=".log", delete=False)  # noqa: SIM115
        command = [
            sys.executable,
            "-m",
            "model_repo_builder.runtime.sidecar",
            str(self.model_dir),
            json.dumps(self.step.__dict__),
            ",".join(str(port) for port in self.ports),
        ]
        self._process = subprocess.Popen(
            command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=find_tritonserver().environment(),
            preexec_fn=die_with_parent,
            start_new_session=True,  # its own process group: PyTriton's tritonserver child goes with it
        )
        LOGGER.info("started sidecar %s on %s (log %s)", self.label, self.url, self._log.name)
        return self

    def is_alive(self) -> bool:
        """Whether the process runs."""
        return self._process is not None and self._process.poll() is None

    def ready(self) -> bool:
        """Whether its step model answers ready."""
        try:
            with urllib.request.urlopen(
                f"http://{self.url}/v2/models/{STEP_MODEL}/ready", timeout=2
            ) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Block until the step answers; a process that exits first is a `ServerError` with its log."""
        from model_repo_builder.errors import ServerError

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.is_alive():
                raise ServerError(f"sidecar {self.label} exited before it was ready: {self.log_tail()}")
            if self.ready():
                return
            time.sleep(0.2)
        self.stop()
        raise ServerError(f"sidecar {self.label} was not ready within {timeout_s:.0f} s: {self.log_tail()}")

    def log_tail(self, lines: int = 5) -> str:
        """The last lines it wrote."""
        if self._log is None:
            return "no output"
        text = Path(self._log.name).read_text(encoding="utf-8", errors="replace").strip().splitlines()
        return " | ".join(text[-lines:]) or "no output"

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM to its process group, wait, then SIGKILL: also what a killed sidecar left behind."""
        if self._process is None:
            return
        group = self._process.pid  # the group leader's pid (start_new_session)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=timeout_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)  # PyTriton's own tritonserver, if still there
        self._process.wait()
        self._wait_ports_free(timeout_s)
        self._remove_shared_memory(group)

    @staticmethod
    def _remove_shared_memory(pid: int) -> None:
        """Remove the python-backend regions of PyTriton's server, which a killed one leaves in /dev/shm.

        PyTriton names them `pytrtion<pid of the process hosting Triton>-…`: this sidecar's.
        """
        for region in Path("/dev/shm").glob(f"{PYTRITON_SHM_PREFIX}{pid}-*"):
            with contextlib.suppress(OSError):
                region.unlink()

    def _wait_ports_free(self, timeout_s: float) -> None:
        """The group's other processes die a moment after the leader; a restart needs their ports."""
        from model_repo_builder.errors import PortInUseError
        from model_repo_builder.runtime.server import check_port_free

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                for port in self.ports:
                    check_port_free("127.0.0.1", port, f"the {self.label} sidecar")
                return
            except PortInUseError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def sidecar_processes(repository: Path, models: list[str]) -> list[SidecarProcess]:
    """A sidecar process (not started) for every step of every model, on free loopback ports."""
    from model_repo_builder.runtime.ports import free_ports

    processes = []
    for model in models:
        for step in read_steps(repository / model):
            http, grpc, metrics = free_ports(3)
            processes.append(SidecarProcess(model, repository / model, step, (http, grpc, metrics)))
    return processes


def endpoints(processes: list[SidecarProcess]) -> dict[str, dict[str, list[str]]]:
    """TRB_SIDECARS for the served models: model → stage → URLs in step order."""
    table: dict[str, dict[str, list[str]]] = {}
    for process in sorted(processes, key=lambda p: (p.model, p.step.stage, p.step.index)):
        table.setdefault(process.model, {}).setdefault(process.step.stage, []).append(process.url)
    return table


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    directory, step_json, port_list = sys.argv[1:4]
    serve_step(Path(directory), Step(**json.loads(step_json)), tuple(int(p) for p in port_list.split(",")))  # type: ignore[arg-type]
