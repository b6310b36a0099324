"""Numeric verification: the served computation against the source model in PyTorch.

The check runs the exact code the repository will serve (`templates/embedding/text_embedding.py`)
on sample texts and compares with transformers + a PyTorch pooling written independently here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_repo_builder.errors import VerificationError

LOGGER = logging.getLogger(__name__)

SAMPLE_TEXTS = (
    "A man is eating food.",
    "Triton serves many models on one GPU.",
    "The quick brown fox jumps over the lazy dog.",
    "How many replicas do we need for 500 queries per second?",
    "Les modèles de langage sont entraînés sur de grands corpus.",
    "東京は日本の首都です。",
    "ok",
    "Emoji survive tokenization 🚀🔥 and so does punctuation?!",
    " ".join(["Long inputs are truncated to the model's maximum sequence length."] * 40),
    "Dynamic batching groups concurrent requests into one execution on the server.",
)


@dataclass(frozen=True, kw_only=True)
class Tolerance:
    """Acceptance thresholds for one precision."""

    min_cosine: float
    mean_cosine: float
    max_hidden_diff: float | None


TOLERANCES = {
    "fp32": Tolerance(min_cosine=0.9999, mean_cosine=0.9999, max_hidden_diff=1e-3),
    "fp16": Tolerance(min_cosine=0.999, mean_cosine=0.999, max_hidden_diff=None),
    "int8": Tolerance(min_cosine=0.95, mean_cosine=0.99, max_hidden_diff=None),
}


@dataclass(frozen=True, kw_only=True)
class VerificationReport:
    """What the check measured; stored in the manifest."""

    precision: str
    texts: int
    min_cosine: float
    mean_cosine: float
    max_diffs: dict[str, float]

    def as_dict(self) -> dict[str, object]:
        """Plain data for YAML."""
        return {
            "precision": self.precision,
            "texts": self.texts,
            "min_cosine": round(self.min_cosine, 6),
            "mean_cosine": round(self.mean_cosine, 6),
            "max_abs_diff": {k: float(f"{v:.3g}") for k, v in self.max_diffs.items()},
            "summary": f"{self.texts} texts, cosine to the source model min {self.min_cosine:.5f}, "
            f"mean {self.mean_cosine:.5f}",
        }


def reference_embeddings(
    model_dir: Path,
    texts: tuple[str, ...],
    pooling: str,
    normalize: bool,
    max_length: int,
    allow_pickle: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source-model token embeddings, attention mask and pooled sentence embeddings, in PyTorch."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), use_fast=True, trust_remote_code=False)
    model = AutoModel.from_pretrained(
        str(model_dir), use_safetensors=not allow_pickle, trust_remote_code=False
    )
    model.eval()
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    if pooling == "cls":
        pooled = hidden[:, 0]
    elif pooling == "max":
        pooled = hidden.masked_fill(mask == 0, -1e9).max(dim=1).values
    else:
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        if pooling == "mean_sqrt_len":
            pooled = pooled * mask.sum(dim=1).clamp(min=1e-9) / mask.sum(dim=1).clamp(min=1e-9).sqrt()
    if normalize:
        pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
    return hidden.numpy(), batch["attention_mask"].numpy(), pooled.numpy()


def compare(
    precision: str,
    reference: tuple[np.ndarray, np.ndarray, np.ndarray],
    candidate: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> VerificationReport:
    """Compare (hidden, mask, pooled) triples and raise `VerificationError` when out of tolerance."""
    ref_hidden, ref_mask, ref_pooled = reference
    cand_hidden, cand_mask, cand_pooled = candidate
    if ref_mask.shape != cand_mask.shape or not np.array_equal(ref_mask, cand_mask):
        raise VerificationError(
            "the served tokenizer disagrees with the source tokenizer (attention masks differ)",
            {"attention_mask": float(np.abs(ref_mask.sum() - cand_mask.sum()))},
        )
    valid = ref_mask.astype(bool)
    hidden_diff = float(np.abs(ref_hidden[valid] - cand_hidden[valid].astype(np.float32)).max())
    pooled_diff = float(np.abs(ref_pooled - cand_pooled).max())
    cosines = np.sum(ref_pooled * cand_pooled, axis=1) / (
        np.linalg.norm(ref_pooled, axis=1) * np.linalg.norm(cand_pooled, axis=1)
    )
    report = VerificationReport(
        precision=precision,
        texts=len(cosines),
        min_cosine=float(cosines.min()),
        mean_cosine=float(cosines.mean()),
        max_diffs={"token_embeddings": hidden_diff, "sentence_embedding": pooled_diff},
    )
    tolerance = TOLERANCES[precision]
    problems = []
    if report.min_cosine < tolerance.min_cosine:
        problems.append(f"min cosine {report.min_cosine:.5f} < {tolerance.min_cosine}")
    if report.mean_cosine < tolerance.mean_cosine:
        problems.append(f"mean cosine {report.mean_cosine:.5f} < {tolerance.mean_cosine}")
    if tolerance.max_hidden_diff is not None and hidden_diff > tolerance.max_hidden_diff:
        problems.append(f"token_embeddings max |diff| {hidden_diff:.3g} > {tolerance.max_hidden_diff}")
    if problems:
        diffs = ", ".join(f"{name}: {value:.3g}" for name, value in report.max_diffs.items())
        raise VerificationError(
            f"{precision} model does not match the source model: {'; '.join(problems)} "
            f"(max |diff| per output: {diffs})",
            report.max_diffs,
            report.as_dict(),
        )
    LOGGER.info("%s verified: min cosine %.6f, max |diff| %s", precision, report.min_cosine, report.max_diffs)
    return report


def compare_pooled(
    precision: str,
    reference: tuple[np.ndarray, np.ndarray, np.ndarray],
    candidate_mask: np.ndarray,
    candidate_pooled: np.ndarray,
) -> VerificationReport:
    """Compare a graph that outputs sentence embeddings (pooled in the graph) with the source model.

    The candidate's tokens are padded to a fixed length: its mask must equal the reference's (padded
    to the longest text) on the reference's positions and be zero after them.
    """
    _, ref_mask, ref_pooled = reference
    width = ref_mask.shape[1]
    if (
        candidate_mask.shape[0] != ref_mask.shape[0]
        or candidate_mask.shape[1] < width
        or not np.array_equal(candidate_mask[:, :width], ref_mask)
        or candidate_mask[:, width:].any()
    ):
        raise VerificationError(
            "the served tokenizer disagrees with the source tokenizer (attention masks differ)",
            {"attention_mask": float(np.abs(ref_mask.sum() - candidate_mask.sum()))},
        )
    pooled_diff = float(np.abs(ref_pooled - candidate_pooled).max())
    cosines = np.sum(ref_pooled * candidate_pooled, axis=1) / (
        np.linalg.norm(ref_pooled, axis=1) * np.linalg.norm(candidate_pooled, axis=1)
    )
    report = VerificationReport(
        precision=precision,
        texts=len(cosines),
        min_cosine=float(cosines.min()),
        mean_cosine=float(cosines.mean()),
        max_diffs={"sentence_embedding": pooled_diff},
    )
    tolerance = TOLERANCES[precision]
    problems = []
    if report.min_cosine < tolerance.min_cosine:
        problems.append(f"min cosine {report.min_cosine:.5f} < {tolerance.min_cosine}")
    if report.mean_cosine < tolerance.mean_cosine:
        problems.append(f"mean cosine {report.mean_cosine:.5f} < {tolerance.mean_cosine}")
    if problems:
        raise VerificationError(
            f"{precision} model does not match the source model: {'; '.join(problems)} "
            f"(max |diff| per output: sentence_embedding: {pooled_diff:.3g})",
            report.max_diffs,
            report.as_dict(),
        )
    LOGGER.info("%s verified: min cosine %.6f, max |diff| %.3g", precision, report.min_cosine, pooled_diff)
    return report
