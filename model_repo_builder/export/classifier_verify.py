"""Numeric verification of classifiers and rerankers: served scores against the source model in PyTorch.

The check runs the code the repository serves (`templates/classification/sequence_classifier.py`)
on sample texts (or query/passage pairs) and compares its activated scores with
`AutoModelForSequenceClassification` plus the same activation: the largest score difference, and
whether the served model picks the same label (classification) or the same order (reranking).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model_repo_builder.errors import VerificationError
from model_repo_builder.export.verify import SAMPLE_TEXTS

LOGGER = logging.getLogger(__name__)

SAMPLE_QUERIES = (
    "what does a man eat?",
    "how many models can one GPU serve?",
    "which animal jumps over the dog?",
    "how many replicas for 500 queries per second?",
    "sur quoi les modèles de langage sont-ils entraînés ?",
    "日本の首都はどこですか？",
    "ok?",
    "does punctuation survive tokenization?",
    "what happens to long inputs?",
    "what does dynamic batching do?",
)


@dataclass(frozen=True, kw_only=True)
class ScoreTolerance:
    """Acceptance thresholds for one precision: max |score diff| and the share of agreeing decisions.

    For reranking, pairs of passages whose source scores are within `order_gap` of each other are
    not counted: a change of order among near-ties is within the score tolerance anyway.
    """

    max_score_diff: float
    min_agreement: float
    order_gap: float = 0.0


# fp32 differs only by float reordering (measured ≤ 3e-7 on random-weight BERTs); fp16 and int8 move
# scores, and random-weight heads put classes close together, so decisions may legitimately flip.
TOLERANCES = {
    "fp32": ScoreTolerance(max_score_diff=1e-4, min_agreement=1.0),
    "fp16": ScoreTolerance(max_score_diff=1e-2, min_agreement=0.9, order_gap=0.01),
    "int8": ScoreTolerance(max_score_diff=0.1, min_agreement=0.8, order_gap=0.05),
}


def reference_scores(
    model_dir: Path,
    texts: tuple[str, ...],
    queries: tuple[str, ...] | None,
    activation: str,
    max_length: int,
    allow_pickle: bool,
) -> np.ndarray:
    """The source model's activated scores [rows, labels], in PyTorch."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), use_fast=True, trust_remote_code=False)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(model_dir), use_safetensors=not allow_pickle, trust_remote_code=False
    ).eval()
    pair = (list(queries), list(texts)) if queries is not None else (list(texts),)
    batch = tokenizer(*pair, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.inference_mode():
        logits = model(**batch).logits.double()
    if activation == "softmax":
        scores = torch.softmax(logits, dim=-1)
    elif activation == "sigmoid":
        scores = torch.sigmoid(logits)
    else:
        scores = logits
    return scores.float().numpy()


def _agreement(reference: np.ndarray, candidate: np.ndarray, ranking: bool, order_gap: float) -> float:
    """Classification: share of rows with the same top label. Ranking: share of pairs ordered alike."""
    if not ranking:
        return float(np.mean(reference.argmax(axis=1) == candidate.argmax(axis=1)))
    ref, cand = reference[:, 0], candidate[:, 0]
    pairs = [
        (i, j) for i in range(len(ref)) for j in range(i + 1, len(ref)) if abs(ref[i] - ref[j]) > order_gap
    ]
    same = [np.sign(ref[i] - ref[j]) == np.sign(cand[i] - cand[j]) for i, j in pairs]
    return float(np.mean(same)) if same else 1.0


def verify_scores(
    precision: str, reference: np.ndarray, candidate: np.ndarray, ranking: bool
) -> dict[str, Any]:
    """The verification report; a `VerificationError` when out of tolerance."""
    tolerance = TOLERANCES[precision]
    diff = float(np.abs(reference - candidate).max())
    agreement = _agreement(reference, candidate, ranking, tolerance.order_gap)
    decision = "pair order" if ranking else "top label"
    report = {
        "precision": precision,
        "rows": int(reference.shape[0]),
        "max_score_diff": float(f"{diff:.3g}"),
        f"{'order' if ranking else 'label'}_agreement": round(agreement, 4),
        "summary": f"{reference.shape[0]} {'pairs' if ranking else 'texts'}: max |score diff| {diff:.2g}, "
        f"same {decision} for {agreement:.0%}",
    }
    problems = []
    if not np.isfinite(candidate).all():
        problems.append("the served model produced NaN or infinite scores")
    if diff > tolerance.max_score_diff:
        problems.append(f"max |score diff| {diff:.3g} > {tolerance.max_score_diff}")
    if agreement < tolerance.min_agreement:
        problems.append(f"same {decision} for {agreement:.0%} < {tolerance.min_agreement:.0%}")
    if problems:
        raise VerificationError(
            f"{precision} model does not match the source model: {'; '.join(problems)}",
            {"scores": diff},
            report,
        )
    LOGGER.info("%s verified: %s", precision, report["summary"])
    return report


def sample_inputs(ranking: bool) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
    """The texts (and, for ranking, the queries paired with them) verification runs on."""
    return SAMPLE_TEXTS, (SAMPLE_QUERIES if ranking else None)
