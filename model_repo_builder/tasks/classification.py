"""text-classification: UTF-8 text in, a score per label and the top label out.

Scores are the softmax over labels, or a sigmoid per label for multi-label checkpoints. The shared
`SequenceClassificationTask` also carries the reranker (`tasks/ranking.py`).
"""

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
Send UTF-8 text as `TEXT` (TYPE_STRING, shape [batch, 1]); get `SCORES` (FP32, [batch, {num_labels}],
{activation} over the labels {labels}) and the top `LABEL` (TYPE_STRING, [batch, 1]) back.

    curl -s localhost:8000/v2/models/{name}/infer -H 'Content-Type: application/json' -d '{{
      "inputs": [{{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES",
                   "data": ["The service was quick and friendly."]}}]}}'

Or: `trb infer {repo_dir} "The service was quick and friendly."`

Limits: at most {max_batch_size} texts per request; at most {max_queue_size} requests wait in the
queue, beyond that the server answers 503 (HTTP) / UNAVAILABLE (gRPC) at once. Empty or
non-UTF-8 text is answered with 400 / INVALID_ARGUMENT. Texts longer than {max_length} tokens are
truncated, as the source model does.
"""


class SequenceClassificationTask(EncoderTask):
    """Shared by classifiers and rerankers: an encoder with a `*ForSequenceClassification` head."""

    pairs = False
    pre_steps = True  # on every TEXT (and, for rerankers, every QUERY)
    post_step_kind = "arrays"  # the named outputs: {"SCORES", "LABEL"} or {"SCORE"}

    def _fits(self, facts: ModelFacts) -> bool:
        raise NotImplementedError

    def detect(self, facts: ModelFacts) -> bool:
        """The checkpoint's head is a sequence classifier with the label count this task serves."""
        return (
            facts.model_type in ENCODER_MODEL_TYPES
            and "SequenceClassification" in facts.heads
            and self._fits(facts)
        )

    def check(self, facts: ModelFacts) -> None:
        """Forcing this task still needs the head: trb never invents one."""
        if not self.detect(facts):
            raise UnsupportedModelError(
                f"{self.name} needs an encoder ({', '.join(ENCODER_MODEL_TYPES)}) with a "
                f"*ForSequenceClassification head {self.label_rule}; {facts.path} has model_type "
                f"{facts.model_type!r}, architectures {list(facts.architectures)}, "
                f"{facts.num_labels} label(s)"
            )

    label_rule = ""

    def build(self, spec: Any, source: Any, name: str, staging: Path) -> Any:
        """See `repository/classification.py`."""
        from model_repo_builder.repository.classification import build_classifier

        return build_classifier(spec, source, name, staging, self)


class TextClassification(SequenceClassificationTask):
    """Sentiment, topic, intent…: one label per text."""

    name = "text-classification"
    summary = "text in, label scores and the top label out (*ForSequenceClassification, 2+ labels)"
    inputs = (TensorIO(name="TEXT", data_type="TYPE_STRING", description="UTF-8 text"),)
    outputs = (
        TensorIO(name="SCORES", data_type="TYPE_FP32", dims=(-1,), description="score per label"),
        TensorIO(name="LABEL", data_type="TYPE_STRING", description="the top label"),
    )
    main_output = "SCORES"
    label_rule = "and at least 2 labels"

    def _fits(self, facts: ModelFacts) -> bool:
        return facts.num_labels >= 2

    def readme_call(self, name: str, options: dict[str, Any], model: dict[str, Any], repo_dir: str) -> str:
        """How to call a classification repository."""
        return _CALL.format(
            **self.call_fields(name, options, repo_dir),
            num_labels=len(model["labels"]),
            labels=", ".join(f"`{label}`" for label in model["labels"]),
            activation=model["activation"],
            max_length=model["max_length"],
        )

    def format_result(self, texts: Sequence[str], outputs: dict[str, np.ndarray]) -> list[str]:
        """Text → top label (score)."""
        labels = [row.reshape(-1)[0].decode("utf-8") for row in outputs["LABEL"]]
        return [
            f"{text[:60]!r:64} {label} ({scores.max():.4f})"
            for text, label, scores in zip(texts, labels, outputs["SCORES"], strict=True)
        ]

    def result_json(self, texts: Sequence[str], outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        """Labels and scores per text."""
        return {
            "labels": [row.reshape(-1)[0].decode("utf-8") for row in outputs["LABEL"]],
            "scores": outputs["SCORES"].round(6).tolist(),
        }


TASK = register(TextClassification())
