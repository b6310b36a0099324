"""A small client for people and tests: send texts to a served repository, get its outputs back.

What a model takes and returns comes from its task (`model_repo_builder/tasks/`), so this client
serves every task: one text input (embeddings, classification, generation) or two (reranking pairs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from model_repo_builder.errors import InferenceError, RepositoryError
from model_repo_builder.repository import config as model_config
from model_repo_builder.repository.manifest import read_manifest
from model_repo_builder.tasks import Task, get_task


def resolve_target(target: str) -> tuple[str, Task, int | None]:
    """Model name, task and max batch size of a repository directory, or a bare (embedding) model name."""
    path = Path(target)
    if path.is_dir():
        manifest = read_manifest(path)
        config_file = path / manifest.name / "config.pbtxt"
        max_batch = None
        if config_file.is_file():
            max_batch = model_config.parse(config_file.read_text(encoding="utf-8")).max_batch_size or None
        return manifest.name, get_task(manifest.task), max_batch
    if "/" in target or target.startswith("."):
        raise RepositoryError(f"{target} is neither a repository directory nor a model name")
    return target, get_task("feature-extraction"), None


def infer(
    model: str,
    texts: Mapping[str, Sequence[str]],
    outputs: Sequence[str],
    url: str = "127.0.0.1:8000",
    protocol: str = "http",
    int_inputs: Mapping[str, int] | None = None,
    priority: int = 0,
    timeout_s: float = 60.0,
) -> dict[str, np.ndarray]:
    """Send one request with the text inputs `texts` (name → one string per row); return `outputs`.

    `int_inputs` are INT32 inputs sent with the same value for every row (e.g. MAX_NEW_TOKENS);
    `priority` is the request's priority level (0: the model's default); an answer that takes longer
    than `timeout_s` is an error. Errors carry the server's message.
    """
    rows = {len(values) for values in texts.values()}
    if len(rows) != 1:
        raise InferenceError(f"every text input needs the same number of rows, got {sorted(rows)}")
    (count,) = rows
    if protocol == "grpc":
        import tritonclient.grpc as client_module
    else:
        import tritonclient.http as client_module  # type: ignore[no-redef]
    from geventhttpclient.response import HTTPConnectionClosed
    from tritonclient.utils import InferenceServerException

    client = None
    try:
        if protocol == "grpc":
            client = client_module.InferenceServerClient(url)
        else:
            client = client_module.InferenceServerClient(url, network_timeout=timeout_s)
        requests = []
        for name, values in texts.items():
            batch = np.array([[text.encode("utf-8")] for text in values], dtype=np.object_)
            request = client_module.InferInput(name, list(batch.shape), "BYTES")
            request.set_data_from_numpy(batch)
            requests.append(request)
        for name, value in (int_inputs or {}).items():
            extra = client_module.InferInput(name, [count, 1], "INT32")
            extra.set_data_from_numpy(np.full((count, 1), value, dtype=np.int32))
            requests.append(extra)
        wanted = [client_module.InferRequestedOutput(name) for name in outputs]
        extra_options = {"client_timeout": timeout_s} if protocol == "grpc" else {}
        result = client.infer(model, requests, outputs=wanted, priority=priority, **extra_options)
    except InferenceServerException as error:
        raise InferenceError(f"{model} at {url}: {error.message()}") from None
    except TimeoutError:
        raise InferenceError(f"{model} at {url}: no answer within {timeout_s:g} s") from None
    except (ConnectionError, OSError, HTTPConnectionClosed) as error:
        # HTTPConnectionClosed: the server closed a kept-alive connection (it is stopping) before answering.
        reason = str(error) or type(error).__name__
        raise InferenceError(
            f"cannot reach a Triton server at {url} ({reason}); is `trb launch` running?"
        ) from None
    finally:
        # An idle keep-alive connection makes tritonserver wait out its whole exit timeout on shutdown.
        if client is not None:
            client.close()
    answered = {}
    for name in outputs:
        output = result.as_numpy(name)
        if output is None:
            raise InferenceError(f"{model} at {url} answered without an {name} output")
        answered[name] = np.asarray(output)
    return answered


def infer_task(
    model: str,
    task: Task,
    texts: Mapping[str, Sequence[str]],
    url: str = "127.0.0.1:8000",
    protocol: str = "http",
    int_inputs: Mapping[str, int] | None = None,
    max_batch_size: int | None = None,
    priority: int = 0,
) -> dict[str, np.ndarray]:
    """Every output of `task` for `texts`, in requests of at most `max_batch_size` rows."""
    missing = [name for name in task.text_inputs if name not in texts]
    if missing:
        raise InferenceError(
            f"{task.name} models take {', '.join(task.text_inputs)}; missing {', '.join(missing)}"
        )
    count = len(next(iter(texts.values())))
    step = max_batch_size or count or 1
    parts = []
    for start in range(0, count, step):
        chunk = {name: list(values[start : start + step]) for name, values in texts.items()}
        parts.append(infer(model, chunk, [o.name for o in task.outputs], url, protocol, int_inputs, priority))
    return {name: _concatenate([part[name] for part in parts]) for name in parts[0]}


def _concatenate(arrays: list[np.ndarray]) -> np.ndarray:
    """Stack row blocks; generated-id blocks of different widths are padded with -1 first."""
    if len(arrays) == 1 or arrays[0].ndim < 2:
        return np.concatenate(arrays)
    width = max(array.shape[1] for array in arrays)
    if all(array.shape[1] == width for array in arrays):
        return np.concatenate(arrays)
    padded = [np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=-1) for a in arrays]
    return np.concatenate(padded)


def embed_texts(
    model: str,
    texts: Sequence[str],
    url: str = "127.0.0.1:8000",
    protocol: str = "http",
    timeout_s: float = 60.0,
) -> np.ndarray:
    """Embeddings [len(texts), dim] from a served embedding model."""
    task = get_task("feature-extraction")
    answered = infer(
        model, {task.text_inputs[0]: texts}, [task.main_output], url, protocol, timeout_s=timeout_s
    )
    return answered[task.main_output]
