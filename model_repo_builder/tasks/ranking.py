"""text-ranking: a cross-encoder reranker, one query/passage pair per batch row, a relevance score out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from model_repo_builder.tasks.base import ModelFacts, TensorIO, register
from model_repo_builder.tasks.classification import SequenceClassificationTask

_CALL = """
Send one query/passage pair per row: `QUERY` and `TEXT` (TYPE_STRING, both shape [batch, 1]); get
`SCORE` (FP32, [batch, 1], {activation} of the cross-encoder's logit: higher is more relevant) back.
Rows are independent, so the server batches pairs of many requests together.

    curl -s localhost:8000/v2/models/{name}/infer -H 'Content-Type: application/json' -d '{{
      "inputs": [{{"name": "QUERY", "shape": [2, 1], "datatype": "BYTES",
                   "data": ["how do I bake bread?", "how do I bake bread?"]}},
                 {{"name": "TEXT", "shape": [2, 1], "datatype": "BYTES",
                   "data": ["Knead the dough, let it rise, bake at 220 °C.", "Trains leave every hour."]}}]}}'

Or: `trb infer {repo_dir} --query "how do I bake bread?" "Knead the dough…" "Trains leave…"`
(prints the passages sorted by score).

Limits: at most {max_batch_size} pairs per request; at most {max_queue_size} requests wait in the
queue, beyond that the server answers 503 (HTTP) / UNAVAILABLE (gRPC) at once. Empty or non-UTF-8
text, or a different number of queries and passages, is answered with 400 / INVALID_ARGUMENT. Pairs
longer than {max_length} tokens are truncated longest-first, as the source model does.
"""


class TextRanking(SequenceClassificationTask):
    """Rerank retrieved passages for a query (sentence-transformers CrossEncoder, or one-label heads)."""

    name = "text-ranking"
    summary = "query + passage in, relevance score out (cross-encoder, *ForSequenceClassification, 1 label)"
    inputs = (
        TensorIO(name="QUERY", data_type="TYPE_STRING", description="UTF-8 query"),
        TensorIO(name="TEXT", data_type="TYPE_STRING", description="UTF-8 passage"),
    )
    outputs = (TensorIO(name="SCORE", data_type="TYPE_FP32", description="relevance score"),)
    main_output = "SCORE"
    pairs = True
    label_rule = "and exactly 1 label"

    def _fits(self, facts: ModelFacts) -> bool:
        return facts.num_labels == 1

    def readme_call(self, name: str, options: dict[str, Any], model: dict[str, Any], repo_dir: str) -> str:
        """How to call a reranking repository."""
        return _CALL.format(
            **self.call_fields(name, options, repo_dir),
            activation=model["activation"],
            max_length=model["max_length"],
        )

    def ranked(self, texts: Sequence[str], outputs: dict[str, np.ndarray]) -> list[tuple[float, str]]:
        """(score, passage), best first."""
        scores = outputs[self.main_output].reshape(-1)
        return sorted(zip(scores.tolist(), texts, strict=True), key=lambda pair: -pair[0])

    def format_result(self, texts: Sequence[str], outputs: dict[str, np.ndarray]) -> list[str]:
        """Passages sorted by score."""
        return [f"{score:.4f}  {text[:100]!r}" for score, text in self.ranked(texts, outputs)]

    def result_json(self, texts: Sequence[str], outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        """Passages with their scores, best first."""
        return {
            "ranked": [
                {"score": round(score, 6), "text": text} for score, text in self.ranked(texts, outputs)
            ]
        }


TASK = register(TextRanking())
