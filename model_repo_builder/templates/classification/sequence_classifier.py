"""Texts (or query/passage pairs) in, class scores out: tokenization, ONNX Runtime, the head's activation.

Serves text-classification (one text per row, a score per label) and text-ranking (a cross-encoder:
one query/passage pair per row, one relevance score). Pure Python and NumPy with no Triton import, so
the same code runs in the python-backend stub and in tests. Copied next to `model.py` and
`trb_runtime.py` in each repository.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

if __package__:  # imported from the trb package (tests)
    from ..common.trb_runtime import (
        clip_text,
        encoder_feeds,
        encoder_parameters,
        encoder_runtime,
        parse_encoder_parameters,
        run_by_length,
    )
else:  # copied next to trb_runtime.py in a repository
    from trb_runtime import (  # type: ignore[no-redef]
        clip_text,
        encoder_feeds,
        encoder_parameters,
        encoder_runtime,
        parse_encoder_parameters,
        run_by_length,
    )

ACTIVATIONS = ("softmax", "sigmoid", "identity")


def activate(logits: np.ndarray, activation: str) -> np.ndarray:
    """Scores from logits [batch, labels] as the source model's pipeline computes them (float32)."""
    logits = logits.astype(np.float64)
    if activation == "softmax":
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        scores = shifted / shifted.sum(axis=1, keepdims=True)
    elif activation == "sigmoid":
        scores = 1.0 / (1.0 + np.exp(-logits))
    elif activation == "identity":
        scores = logits
    else:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    return scores.astype(np.float32)


@dataclass(frozen=True)
class ClassifierSettings:
    """What the served model needs to know; it reaches the stub through config.pbtxt parameters."""

    activation: str = "softmax"
    labels: tuple[str, ...] = ()
    pairs: bool = False
    max_length: int = 512
    max_text_bytes: int | None = None  # larger texts are refused (400) before any work
    pad_token: str = "[PAD]"
    pad_token_id: int = 0
    intra_op_threads: int = 1
    allow_spinning: bool = False
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    length_bucketing: bool = True  # run a batch's rows in groups of similar length

    def to_parameters(self) -> dict[str, str]:
        """The string-valued parameters config.pbtxt carries (labels as a JSON list)."""
        return {
            "activation": self.activation,
            "labels": json.dumps(list(self.labels), ensure_ascii=False),
            "pairs": str(self.pairs).lower(),
            **encoder_parameters(self),
        }

    @classmethod
    def from_parameters(cls, parameters: dict[str, str]) -> ClassifierSettings:
        """Parse the parameters Triton hands to a python-backend model (the inverse of `to_parameters`)."""
        activation = parameters.get("activation", "softmax")
        if activation not in ACTIVATIONS:
            raise ValueError(f"parameter 'activation' must be one of {ACTIVATIONS}, got {activation!r}")
        return cls(
            activation=activation,
            labels=tuple(str(label) for label in json.loads(parameters.get("labels") or "[]")),
            pairs=parameters.get("pairs", "false").lower() == "true",
            **parse_encoder_parameters(parameters, max_length=512),
        )


class SequenceClassifier:
    """Tokenize (pairs truncated longest-first, as transformers does), run the ONNX model, activate."""

    def __init__(self, onnx_path: str, tokenizer_path: str, settings: ClassifierSettings):
        self.settings = settings
        self.tokenizer, self.session, self._output_name = encoder_runtime(onnx_path, tokenizer_path, settings)

    def logits(self, texts: Sequence[str], queries: Sequence[str] | None = None) -> np.ndarray:
        """Raw head outputs [batch, labels]; with `queries`, row i scores the pair (queries[i], texts[i])."""
        texts = [clip_text(text, self.settings.max_length) for text in texts]
        if queries is not None:
            queries = [clip_text(query, self.settings.max_length) for query in queries]
            encodings = self.tokenizer.encode_batch(list(zip(queries, texts, strict=True)))
        else:
            encodings = self.tokenizer.encode_batch(texts)
        feeds, mask = encoder_feeds(self.session, encodings)
        logits: np.ndarray | None = None
        for rows, part, _ in run_by_length(self.session, self._output_name, feeds, mask, self.settings):
            if logits is None:
                logits = np.empty((len(encodings), *part.shape[1:]), dtype=part.dtype)
            logits[rows] = part
        if logits is None:
            raise ValueError("no texts given")
        return logits

    def scores(self, texts: Sequence[str], queries: Sequence[str] | None = None) -> np.ndarray:
        """Activated scores [batch, labels] in the order of `texts`."""
        return activate(self.logits(texts, queries), self.settings.activation)

    def labels_of(self, scores: np.ndarray) -> list[str]:
        """The highest-scoring label of each row."""
        return [self.settings.labels[int(index)] for index in scores.argmax(axis=1)]
