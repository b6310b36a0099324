"""A small client for people and tests: send texts to a served repository, get vectors back."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from model_repo_builder.errors import InferenceError, RepositoryError
from model_repo_builder.repository.manifest import read_manifest

INPUT_NAME = "TEXT"
OUTPUT_NAME = "EMBEDDING"


def model_name_for(target: str) -> str:
    """A repository directory's model name (from its manifest), or `target` itself as a model name."""
    path = Path(target)
    if path.is_dir():
        return read_manifest(path).name
    if "/" in target or target.startswith("."):
        raise RepositoryError(f"{target} is neither a repository directory nor a model name")
    return target


def embed_texts(
    model: str, texts: Sequence[str], url: str = "127.0.0.1:8000", protocol: str = "http"
) -> np.ndarray:
    """Embed `texts` with one request to a running server; errors carry the server's message."""
    batch = np.array([[text.encode("utf-8")] for text in texts], dtype=np.object_)
    if protocol == "grpc":
        import tritonclient.grpc as client_module
    else:
        import tritonclient.http as client_module  # type: ignore[no-redef]
    from tritonclient.utils import InferenceServerException

    client = None
    try:
        client = client_module.InferenceServerClient(url)
        request = client_module.InferInput(INPUT_NAME, list(batch.shape), "BYTES")
        request.set_data_from_numpy(batch)
        result = client.infer(model, [request], outputs=[client_module.InferRequestedOutput(OUTPUT_NAME)])
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
    embeddings = result.as_numpy(OUTPUT_NAME)
    if embeddings is None:
        raise InferenceError(f"{model} at {url} answered without an {OUTPUT_NAME} output")
    return np.asarray(embeddings)
