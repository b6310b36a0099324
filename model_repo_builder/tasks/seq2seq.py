"""text2text-generation (T5, BART, mBART, Marian): a prompt in, generated text and token ids out."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model_repo_builder.errors import UnsupportedModelError
from model_repo_builder.tasks.base import ModelFacts, Task, TensorIO, register
from model_repo_builder.templates.seq2seq.generation import (
    PARAMETER_INPUTS,
    PROMPT_INPUT,
    TEXT_OUTPUT,
    TOKEN_IDS_OUTPUT,
)

SEQ2SEQ_MODEL_TYPES = ("t5", "mt5", "bart", "mbart", "marian")

_CALL = """
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


_BATCHING_TEXT = {
    "request": "Requests that arrive together are generated as one batch with a KV cache; finished "
    "sequences leave\nthe batch at once",
    "continuous": "Continuous batching (`--batching continuous`, the default): a request joins the running "
    "batch at the\nnext decode step, and finished sequences leave it at once",
}


class Text2TextGeneration(Task):
    """Greedy, sampled or beam-search generation with a KV-cached, batched decode loop."""

    name = "text2text-generation"
    summary = "prompt in, generated text out (T5, BART, mBART, Marian)"
    inputs = (
        TensorIO(name=PROMPT_INPUT, data_type="TYPE_STRING", description="UTF-8 prompt"),
        *(TensorIO(name=p.name, data_type=p.data_type, optional=True) for p in PARAMETER_INPUTS),
    )
    outputs = (
        TensorIO(name=TEXT_OUTPUT, data_type="TYPE_STRING", description="generated text"),
        TensorIO(name=TOKEN_IDS_OUTPUT, data_type="TYPE_INT64", dims=(-1,), description="ids, -1 padded"),
    )
    main_output = TEXT_OUTPUT
    generates = True
    pre_steps = True
    post_step_kind = "text"
    # On GPU, flan-t5 must run in BF16 or FP32: T5's feed-forward activations exceed FP16's range
    # (65504) and turn into inf/NaN, so a TensorRT FP16 engine of it generates garbage (docs/gpu-target.md).
    gpu_not_yet = (
        "the GPU target for generation needs the decode loop (encoder, decoder-with-past, KV cache, "
        "continuous batching) driving onnxruntime-backend or TensorRT steps on the GPU, with BF16/FP32 "
        "engines for T5 (FP16 overflows its activations); today's decode loop runs inside the python "
        "backend on ONNX Runtime: build without `--target gpu` (`--kind gpu` runs it with CUDA)"
    )

    def detect(self, facts: ModelFacts) -> bool:
        """A T5- or BART-family checkpoint."""
        return facts.model_type in SEQ2SEQ_MODEL_TYPES

    def check(self, facts: ModelFacts) -> None:
        """Only these families have a served decode loop in this version."""
        if facts.model_type not in SEQ2SEQ_MODEL_TYPES:
            raise UnsupportedModelError(
                f"text2text-generation serves {', '.join(SEQ2SEQ_MODEL_TYPES)} models; "
                f"{facts.path} is a {facts.model_type or 'model of unknown type'}"
            )

    def build(self, spec: Any, source: Any, name: str, staging: Path) -> Any:
        """See `repository/seq2seq.py`."""
        from model_repo_builder.repository.seq2seq import build_seq2seq

        return build_seq2seq(spec, source, name, staging)

    def readme_call(self, name: str, options: dict[str, Any], model: dict[str, Any], repo_dir: str) -> str:
        """How to call a generation repository and its streaming variant."""
        return _CALL.format(
            **self.call_fields(name, options, repo_dir),
            max_input_tokens=model["max_input_tokens"],
            default_max_new_tokens=model["default_max_new_tokens"],
            max_new_tokens_limit=model["max_new_tokens_limit"],
            streaming_model=model["streaming_model"],
            # Repositories built before `--batching` existed batch per request.
            batching=_BATCHING_TEXT[model.get("batching", "request")],
        )

    @staticmethod
    def _generated(outputs: dict[str, np.ndarray]) -> list[str]:
        return [row.reshape(-1)[0].decode("utf-8", errors="replace") for row in outputs[TEXT_OUTPUT]]

    def format_result(self, texts: Sequence[str], outputs: dict[str, np.ndarray]) -> list[str]:
        """Prompt → generated text, one line each."""
        return [
            f"{prompt!r} → {text!r}" for prompt, text in zip(texts, self._generated(outputs), strict=True)
        ]

    def result_json(self, texts: Sequence[str], outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        """The generated texts."""
        return {"generated": self._generated(outputs)}


TASK = register(Text2TextGeneration())
