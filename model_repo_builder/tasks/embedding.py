"""feature-extraction: UTF-8 text in, the source model's sentence embedding out."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model_repo_builder.errors import UnsupportedModelError
from model_repo_builder.tasks.base import (
    ENCODER_MODEL_TYPES,
    EncoderTask,
    ModelFacts,
    TensorIO,
    register,
)

# Heads that carry no task of their own: the encoder's token states are what the checkpoint is for.
_BARE_HEADS = {"", "MaskedLM", "PreTraining"}

_CALL = """
Send UTF-8 text as `TEXT` (TYPE_STRING, shape [batch, 1]); get `EMBEDDING` back
(FP32, shape [batch, {dimension}]{normalized}).

    curl -s localhost:8000/v2/models/{name}/infer -H 'Content-Type: application/json' -d '{{
      "inputs": [{{"name": "TEXT", "shape": [2, 1], "datatype": "BYTES",
                   "data": ["A man is eating food.", "Triton serves many models."]}}]}}'

Or: `trb infer {repo_dir} "A man is eating food."`

Limits: at most {max_batch_size} texts per request; at most {max_queue_size} requests wait in the
queue, beyond that the server answers 503 (HTTP) / UNAVAILABLE (gRPC) at once. Empty or
non-UTF-8 text is answered with 400 / INVALID_ARGUMENT. Texts longer than {max_length} tokens are
truncated, as the source model does.
"""


class FeatureExtraction(EncoderTask):
    """Sentence embeddings, pooled and normalized as the sentence-transformers pipeline does."""

    name = "feature-extraction"
    summary = "text in, sentence embedding out (sentence-transformers / BERT-family encoders)"
    inputs = (TensorIO(name="TEXT", data_type="TYPE_STRING", description="UTF-8 text"),)
    outputs = (TensorIO(name="EMBEDDING", data_type="TYPE_FP32", dims=(-1,), description="embedding"),)
    main_output = "EMBEDDING"
    pre_steps = True
    post_step_kind = "vectors"
    gpu_not_yet = None

    def detect(self, facts: ModelFacts) -> bool:
        """A sentence-transformers bi-encoder, or a bare encoder checkpoint with no task head."""
        if facts.model_type not in ENCODER_MODEL_TYPES:
            return False
        return facts.heads <= _BARE_HEADS

    def check(self, facts: ModelFacts) -> None:
        """Any encoder can be embedded when asked: a task head, if any, is left out (and said so)."""
        if facts.model_type not in ENCODER_MODEL_TYPES:
            raise UnsupportedModelError(
                f"feature-extraction needs an encoder ({', '.join(ENCODER_MODEL_TYPES)}); "
                f"{facts.path} is a {facts.model_type or 'model of unknown type'}"
            )

    def build(self, spec: Any, source: Any, name: str, staging: Path) -> Any:
        """See `repository/embedding.py`, and `repository/gpu_embedding.py` for `--target gpu`."""
        if spec.target == "gpu":
            from model_repo_builder.repository.gpu_embedding import build_gpu_embedding

            return build_gpu_embedding(spec, source, name, staging)
        from model_repo_builder.repository.embedding import build_embedding

        return build_embedding(spec, source, name, staging)

    def readme_call(self, name: str, options: dict[str, Any], model: dict[str, Any], repo_dir: str) -> str:
        """How to call an embedding repository."""
        return _CALL.format(
            **self.call_fields(name, options, repo_dir),
            dimension=model["dimension"],
            normalized=", L2-normalized" if model["normalize"] else "",
            max_length=model["max_length"],
        )

    def format_result(self, texts: Sequence[str], outputs: dict[str, np.ndarray]) -> list[str]:
        """One line per text: dimension, norm and the first values."""
        lines = []
        for text, vector in zip(texts, outputs[self.main_output], strict=True):
            head = ", ".join(f"{value:+.4f}" for value in vector[:4])
            norm = float((vector**2).sum() ** 0.5)
            lines.append(f"{text[:48]!r:52} dim={vector.shape[0]} norm={norm:.4f} [{head}, …]")
        return lines

    def result_json(self, texts: Sequence[str], outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        """The embeddings, rounded to 6 decimals."""
        return {"embeddings": outputs[self.main_output].round(6).tolist()}


TASK = register(FeatureExtraction())
