"""A small client for people and tests: send texts to a served repository, get vectors or text back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_repo_builder.errors import InferenceError, RepositoryError
from model_repo_builder.models.registry import FEATURE_EXTRACTION, TEXT2TEXT_GENERATION
from model_repo_builder.repository.manifest import read_manifest


@dataclass(frozen=True, kw_only=True)
class ModelIO:
    """The text input and the main output of a served model."""

    task: str
    input_name: str
    output_name: str


TASK_IO = {
    FEATURE_EXTRACTION: ModelIO(task=FEATURE_EXTRACTION, input_name="TEXT", output_name="EMBEDDING"),
    TEXT2TEXT_GENERATION: ModelIO(task=TEXT2TEXT_GENERATION, input_name="PROMPT", output_name="TEXT"),
}


def resolve_target(target: str) -> tuple[str, ModelIO]:
    """Model name and I/O for a repository directory (from its manifest) or a bare model name."""
    path = Path(target)
    if path.is_dir():
        manifest = read_manifest(path)
        return manifest.name, TASK_IO[manifest.task]
    if "/" in target or target.startswith("."):
        raise RepositoryError(f"{target} is neither a repository directory nor a model name")
    return target, TASK_IO[FEATURE_EXTRACTION]


def infer_texts(
    model: str,
    io: ModelIO,
    texts: Sequence[str],
    url: str = "127.0.0.1:8000",
    protocol: str = "http",
    int_inputs: Mapping[str, int] | None = None,
    output_name: str | None = None,
) -> np.ndarray:
    """Send `texts` in one request; return the main output (or `output_name`).

    `int_inputs` are INT32 inputs sent with the same value for every text (e.g. MAX_NEW_TOKENS).
    Errors carry the server's message.
    """
    output_name = output_name or io.output_name
    batch = np.array([[text.encode("utf-8")] for text in texts], dtype=np.object_)
    if protocol == "grpc":
        import tritonclient.grpc as client_module
    else:
        import tritonclient.http as client_module  # type: ignore[no-redef]
    from tritonclient.utils import InferenceServerException

    client = None
    try:
        client = client_module.InferenceServerClient(url)
        request = client_module.InferInput(io.input_name, list(batch.shape), "BYTES")
        request.set_data_from_numpy(batch)
        requests = [request]
        for name, value in (int_inputs or {}).items():
            extra = client_module.InferInput(name, [len(texts), 1], "INT32")
            extra.set_data_from_numpy(np.full((len(texts), 1), value, dtype=np.int32))
            requests.append(extra)
        result = client.infer(model, requests, outputs=[client_module.InferRequestedOutput(output_name)])
    except InferenceServerException as error:
        raise InferenceError(f"{model} at {url}: {error.message()}") from None
    except (ConnectionError, OSError) as error:
        raise InferenceError(
            f"cannot reach a Triton server at {url} ({error}); is `trb launch` running?"
        ) from None
    finally:
        # An idle keep-alive connection makes tritonserver wait out its whole exit timeout on shutdown.
        if client is not None:
            client.close()
    output = result.as_numpy(output_name)
    if output is None:
        raise InferenceError(f"{model} at {url} answered without an {output_name} output")
    return np.asarray(output)


def embed_texts(
    model: str, texts: Sequence[str], url: str = "127.0.0.1:8000", protocol: str = "http"
) -> np.ndarray:
    """Embeddings [len(texts), dim] from a served embedding model."""
    return infer_texts(model, TASK_IO[FEATURE_EXTRACTION], texts, url, protocol)
