"""The README written into every repository: how to run it and how to call it."""

from __future__ import annotations

from typing import Any

from model_repo_builder import __version__
from model_repo_builder.runtime.tools import NGC_IMAGE

_TEMPLATE = """# {name}

Triton model repository built by trb {trb_version} from `{source}` ({precision}, {instances} instance(s),
max batch {max_batch_size}). `trb.yaml` records every option, the versions used and file hashes;
rebuild with `trb build --from trb.yaml`.

## Run

Locally (CPU, the tritonserver from the nvidia-pytriton wheel):

    trb launch {repo_dir}

In the NGC container (build the image from trb's Dockerfile, which adds the Python packages the
model imports to `{image}`):

    docker build -t trb-triton:24.10 .            # in the trb checkout
    docker run --rm -p 127.0.0.1:8000:8000 -p 127.0.0.1:8001:8001 -p 127.0.0.1:8002:8002 \\
        -v "$PWD/{repo_dir}:/models:ro" trb-triton:24.10 \\
        tritonserver --model-repository=/models --model-control-mode=none \\
        --http-restricted-api=model-repository,shared-memory:trb-admin-key=CHANGE-ME \\
        --grpc-restricted-protocol=model-repository,shared-memory:trb-admin-key=CHANGE-ME

## Call

Send UTF-8 text as `{input}` (TYPE_STRING, shape [batch, 1]); get `{output}` back
(FP32, shape [batch, {dimension}]{normalized}).

    curl -s localhost:8000/v2/models/{name}/infer -H 'Content-Type: application/json' -d '{{
      "inputs": [{{"name": "{input}", "shape": [2, 1], "datatype": "BYTES",
                   "data": ["A man is eating food.", "Triton serves many models."]}}]}}'

Or: `trb infer {repo_dir} "A man is eating food."`

Limits: at most {max_batch_size} texts per request; at most {max_queue_size} requests wait in the
queue, beyond that the server answers 503 (HTTP) / UNAVAILABLE (gRPC) at once. Empty or
non-UTF-8 text is answered with 400 / INVALID_ARGUMENT. Texts longer than {max_length} tokens are
truncated, as the source model does.
"""


def render_readme(name: str, options: dict[str, Any], model: dict[str, Any], repo_dir: str) -> str:
    """Fill the README template from the build options and the built model's description."""
    return _TEMPLATE.format(
        name=name,
        trb_version=__version__,
        source=options["source"],
        precision=options["precision"],
        instances=options["instances"],
        max_batch_size=options["max_batch_size"],
        max_queue_size=options["max_queue_size"],
        repo_dir=repo_dir,
        image=NGC_IMAGE,
        input="TEXT",
        output="EMBEDDING",
        dimension=model["dimension"],
        normalized=", L2-normalized" if model["normalize"] else "",
        max_length=model["max_length"],
    )
