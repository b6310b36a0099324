"""Text in, labelled entity spans out: tokenization with offsets, ONNX Runtime, HF's "simple" aggregation.

What transformers' `TokenClassificationPipeline(aggregation_strategy="simple")` does, in NumPy: a
softmax per token, each token labelled by its best class, consecutive tokens of one entity type
grouped (a `B-` tag starts a new group), each group scored by the mean of its tokens' scores, and
`O` groups dropped. Spans are character offsets into the text. No Triton import: the python-backend
stub and the tests run this same code. Copied next to `model.py` and `trb_runtime.py`.
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


@dataclass(frozen=True)
class Entity:
    """One labelled span of a text."""

    label: str
    start: int
    end: int
    score: float


@dataclass(frozen=True)
class TokenClassifierSettings:
    """What the served model needs; it reaches the stub through config.pbtxt parameters."""

    labels: tuple[str, ...] = ()
    ignore_labels: tuple[str, ...] = ("O",)
    max_length: int = 512
    max_text_bytes: int | None = None
    pad_token: str = "[PAD]"
    pad_token_id: int = 0
    intra_op_threads: int = 1
    allow_spinning: bool = False
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    length_bucketing: bool = True  # run a batch's rows in groups of similar length

    def to_parameters(self) -> dict[str, str]:
        """String-valued parameters for config.pbtxt (label lists as JSON)."""
        return {
            "labels": json.dumps(list(self.labels), ensure_ascii=False),
            "ignore_labels": json.dumps(list(self.ignore_labels), ensure_ascii=False),
            **encoder_parameters(self),
        }

    @classmethod
    def from_parameters(cls, parameters: dict[str, str]) -> TokenClassifierSettings:
        """The inverse of `to_parameters`."""
        return cls(
            labels=tuple(json.loads(parameters.get("labels") or "[]")),
            ignore_labels=tuple(json.loads(parameters.get("ignore_labels") or '["O"]')),
            **parse_encoder_parameters(parameters, max_length=512),
        )


def softmax(logits: np.ndarray) -> np.ndarray:
    """Per-token class probabilities, computed as the pipeline does (float32 NumPy)."""
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _tag(label: str) -> tuple[str, str]:
    """("B" or "I", entity type) of a label, as the pipeline reads BIO tags (no prefix counts as I)."""
    if label.startswith("B-"):
        return "B", label[2:]
    if label.startswith("I-"):
        return "I", label[2:]
    return "I", label


def group_simple(
    labels: Sequence[str], scores: Sequence[float], offsets: Sequence[tuple[int, int]], ignore: Sequence[str]
) -> list[Entity]:
    """HF's "simple" aggregation over the labelled non-special tokens of one text."""
    entities: list[Entity] = []
    group: list[int] = []
    group_type = ""

    def close() -> None:
        if group and group_type not in ignore:
            entities.append(
                Entity(
                    label=group_type,
                    start=int(offsets[group[0]][0]),
                    end=int(offsets[group[-1]][1]),
                    score=float(np.mean([scores[i] for i in group])),
                )
            )

    for index, label in enumerate(labels):
        bi, entity_type = _tag(label)
        if group and entity_type == group_type and bi != "B":
            group.append(index)
            continue
        close()
        group, group_type = [index], entity_type
    close()
    return entities


class TokenClassifier:
    """Tokenize with offsets, run the ONNX model, aggregate entities per text."""

    def __init__(self, onnx_path: str, tokenizer_path: str, settings: TokenClassifierSettings):
        self.settings = settings
        self.tokenizer, self.session, self._output_name = encoder_runtime(onnx_path, tokenizer_path, settings)

    def token_probabilities(
        self, texts: Sequence[str]
    ) -> tuple[list[np.ndarray], list[list[tuple[int, int]]]]:
        """Per text: probabilities [tokens, labels] of its non-special tokens, and their character offsets."""
        encodings = self.tokenizer.encode_batch([clip_text(text, self.settings.max_length) for text in texts])
        feeds, mask = encoder_feeds(self.session, encodings)
        logits_of: dict[int, np.ndarray] = {}
        for rows, part, _ in run_by_length(self.session, self._output_name, feeds, mask, self.settings):
            logits_of.update(zip(rows.tolist(), part, strict=True))
        probabilities, offsets = [], []
        for row, encoding in enumerate(encodings):
            keep = [
                index
                for index, (special, mask) in enumerate(
                    zip(encoding.special_tokens_mask, encoding.attention_mask, strict=True)
                )
                if not special and mask
            ]
            probabilities.append(softmax(logits_of[row][keep].astype(np.float32)))
            offsets.append([encoding.offsets[index] for index in keep])
        return probabilities, offsets

    def entities(self, texts: Sequence[str]) -> list[list[Entity]]:
        """The entity spans of each text."""
        probabilities, offsets = self.token_probabilities(texts)
        found = []
        for probs, spans in zip(probabilities, offsets, strict=True):
            best = probs.argmax(axis=-1) if len(probs) else np.zeros(0, dtype=np.int64)
            labels = [self.settings.labels[int(i)] for i in best]
            scores = [float(probs[t, int(i)]) for t, i in enumerate(best)]
            found.append(group_simple(labels, scores, spans, self.settings.ignore_labels))
        return found
