"""token-classification: UTF-8 text in, labelled entity spans out (named entities, PII spans…)."""

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

_CALL = """
Send UTF-8 text as `TEXT` (TYPE_STRING, shape [batch, 1]); get its entities back, grouped as
transformers' pipeline does with `aggregation_strategy="simple"` (labels {labels}; `O` dropped):
`ENTITY_LABELS` (TYPE_STRING), `ENTITY_STARTS` and `ENTITY_ENDS` (INT32 character offsets into the
text, end exclusive) and `ENTITY_SCORES` (FP32, the mean of the tokens' probabilities), each
[batch, entities], rows padded to the request's longest with "" and -1.

    curl -s localhost:8000/v2/models/{name}/infer -H 'Content-Type: application/json' -d '{{
      "inputs": [{{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES",
                   "data": ["Ada Lovelace worked with Charles Babbage in London."]}}]}}'

Or: `trb infer {repo_dir} "Ada Lovelace worked with Charles Babbage in London."`

Limits: at most {max_batch_size} texts per request; at most {max_queue_size} requests wait in the
queue, beyond that the server answers 503 (HTTP) / UNAVAILABLE (gRPC) at once. Empty or non-UTF-8
text is answered with 400 / INVALID_ARGUMENT. Texts longer than {max_length} tokens are truncated.
"""


def _spans(texts: Sequence[str], outputs: dict[str, np.ndarray]) -> list[list[dict[str, Any]]]:
    rows = []
    for text, labels, starts, ends, scores in zip(
        texts,
        outputs["ENTITY_LABELS"],
        outputs["ENTITY_STARTS"],
        outputs["ENTITY_ENDS"],
        outputs["ENTITY_SCORES"],
        strict=True,
    ):
        rows.append(
            [
                {
                    "label": label.decode("utf-8"),
                    "start": int(start),
                    "end": int(end),
                    "score": round(float(score), 6),
                    "text": text[int(start) : int(end)],
                }
                for label, start, end, score in zip(labels, starts, ends, scores, strict=True)
                if int(start) >= 0
            ]
        )
    return rows


class TokenClassification(EncoderTask):
    """Per-token labels grouped into spans (`*ForTokenClassification`)."""

    name = "token-classification"
    summary = "text in, labelled entity spans out (*ForTokenClassification)"
    inputs = (TensorIO(name="TEXT", data_type="TYPE_STRING", description="UTF-8 text"),)
    outputs = (
        TensorIO(name="ENTITY_LABELS", data_type="TYPE_STRING", dims=(-1,), description="entity types"),
        TensorIO(name="ENTITY_STARTS", data_type="TYPE_INT32", dims=(-1,), description="first character"),
        TensorIO(
            name="ENTITY_ENDS", data_type="TYPE_INT32", dims=(-1,), description="end character (exclusive)"
        ),
        TensorIO(
            name="ENTITY_SCORES", data_type="TYPE_FP32", dims=(-1,), description="mean token probability"
        ),
    )
    main_output = "ENTITY_LABELS"

    def detect(self, facts: ModelFacts) -> bool:
        """An encoder with a token-classification head."""
        return facts.model_type in ENCODER_MODEL_TYPES and "TokenClassification" in facts.heads

    def check(self, facts: ModelFacts) -> None:
        """Forcing this task still needs the head."""
        if not self.detect(facts):
            raise UnsupportedModelError(
                f"token-classification needs an encoder ({', '.join(ENCODER_MODEL_TYPES)}) with a "
                f"*ForTokenClassification head; {facts.path} has architectures {list(facts.architectures)}"
            )

    def build(self, spec: Any, source: Any, name: str, staging: Path) -> Any:
        """See `repository/token_classification.py`."""
        from model_repo_builder.repository.token_classification import build_token_classifier

        return build_token_classifier(spec, source, name, staging, self)

    def readme_call(self, name: str, options: dict[str, Any], model: dict[str, Any], repo_dir: str) -> str:
        """How to call a token-classification repository."""
        return _CALL.format(
            **self.call_fields(name, options, repo_dir),
            labels=", ".join(f"`{label}`" for label in model["labels"]),
            max_length=model["max_length"],
        )

    def format_result(self, texts: Sequence[str], outputs: dict[str, np.ndarray]) -> list[str]:
        """Each text, then its entities."""
        lines = []
        for text, spans in zip(texts, _spans(texts, outputs), strict=True):
            lines.append(repr(text[:80]))
            lines += [
                f"  {s['label']:<10} {s['start']:>5}-{s['end']:<5} {s['score']:.4f}  {s['text']!r}"
                for s in spans
            ]
        return lines

    def result_json(self, texts: Sequence[str], outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        """Entities per text."""
        return {"entities": _spans(texts, outputs)}


TASK = register(TokenClassification())
