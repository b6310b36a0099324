"""The README written into every repository: how to run it and how to call it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from model_repo_builder import __version__
from model_repo_builder.models.registry import FEATURE_EXTRACTION, TEXT2TEXT_GENERATION
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
{call}"""

_EMBEDDING_CALL = """
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


_GENERATION_CALL = """
Send a UTF-8 prompt as `PROMPT` (TYPE_STRING, shape [batch, 1]); get the generated `TEXT`
(TYPE_STRING, [batch, 1]) and its `TOKEN_IDS` (INT64, [batch, n], padded with -1) back.
Optional inputs, each [batch, 1] like `PROMPT` (one value per prompt):
`MAX_NEW_TOKENS` (INT32, default {default_max_new_tokens}, at most {max_new_tokens_limit}),
`DO_SAMPLE` (BOOL, default false: greedy decoding), `TEMPERATURE` (FP32 > 0, default 1.0),
`TOP_P` (FP32 in (0, 1], default 1.0), `SEED` (INT64 ≥ 0; same seed and prompt, same text),
`NUM_BEAMS` (INT32, 1 to 8, default 1; above 1, beam search as transformers' `generate` does it,
not with sampling and not on the streaming model).

    curl -s localhost:8000/v2/models/{name}/infer -H 'Content-Type: application/json' -d '{{
      "inputs": [{{"name": "PROMPT", "shape": [1, 1], "datatype": "BYTES",
                   "data": ["translate English to German: How old are you?"]}},
                 {{"name": "MAX_NEW_TOKENS", "shape": [1, 1], "datatype": "INT32", "data": [32]}}]}}'

Tokens as they are made: send the same inputs, one prompt per request, to `{streaming_model}` with
gRPC streaming (a decoupled model, one instance): one response per token (`TEXT` delta and
`TOKEN_IDS` [1, 1]), then an empty final response. It reads `{name}`'s ONNX files.

{batching}. Limits: at most {max_batch_size} prompts per request; at most {max_queue_size}
requests wait in the queue, beyond that the server answers 503 (HTTP) / UNAVAILABLE (gRPC) at once.
Empty or non-UTF-8 prompts, prompts longer than {max_input_tokens} tokens (they are rejected, not
truncated) and out-of-range parameters are answered with 400 / INVALID_ARGUMENT.
"""


def _embedding_fields(options: dict[str, Any], model: dict[str, Any]) -> dict[str, Any]:
    return {
        "input": "TEXT",
        "output": "EMBEDDING",
        "dimension": model["dimension"],
        "normalized": ", L2-normalized" if model["normalize"] else "",
        "max_length": model["max_length"],
    }


def _generation_fields(options: dict[str, Any], model: dict[str, Any]) -> dict[str, Any]:
    return {
        "max_input_tokens": model["max_input_tokens"],
        "default_max_new_tokens": model["default_max_new_tokens"],
        "max_new_tokens_limit": model["max_new_tokens_limit"],
        "streaming_model": model["streaming_model"],
        # Repositories built before `--batching` existed batch per request.
        "batching": _BATCHING_TEXT[model.get("batching", "request")],
    }


_BATCHING_TEXT = {
    "request": "Requests that arrive together are generated as one batch with a KV cache; finished "
    "sequences leave\nthe batch at once",
    "continuous": "Continuous batching (`--batching continuous`, the default): a request joins the running "
    "batch at the\nnext decode step, and finished sequences leave it at once",
}


# task → (how to call it, the fields that text needs from the built model)
_CALL_SECTIONS: dict[str, tuple[str, Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]]] = {
    FEATURE_EXTRACTION: (_EMBEDDING_CALL, _embedding_fields),
    TEXT2TEXT_GENERATION: (_GENERATION_CALL, _generation_fields),
}


def render_readme(
    name: str, options: dict[str, Any], model: dict[str, Any], repo_dir: str, task: str = FEATURE_EXTRACTION
) -> str:
    """Fill the README template from the build options and the built model's description."""
    call_template, call_fields = _CALL_SECTIONS[task]
    common = {
        "name": name,
        "max_batch_size": options["max_batch_size"],
        "max_queue_size": options["max_queue_size"],
        "repo_dir": repo_dir,
    }
    call = call_template.format(**common, **call_fields(options, model))
    return _TEMPLATE.format(
        **common,
        call=call,
        trb_version=__version__,
        source=options["source"],
        precision=options["precision"],
        instances=options["instances"],
        image=NGC_IMAGE,
    )
