"""The embedding verification's tolerance check (`export/verify.compare`) on known differences."""

from __future__ import annotations

import numpy as np
import pytest

from model_repo_builder.errors import VerificationError
from model_repo_builder.export.verify import compare


def _outputs(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    hidden = rng.standard_normal((4, 6, 8)).astype(np.float32)
    mask = np.ones((4, 6), dtype=np.int64)
    mask[1, 4:] = 0
    pooled = rng.standard_normal((4, 8)).astype(np.float32)
    return hidden, mask, pooled


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_identical_outputs_pass_fp32() -> None:
    report = compare("fp32", _outputs(), _outputs())
    assert report.min_cosine == pytest.approx(1.0, abs=1e-6)
    assert report.max_diffs == {"token_embeddings": 0.0, "sentence_embedding": 0.0}


def test_outputs_out_of_int8_tolerance_are_refused_with_every_figure() -> None:
    hidden, mask, pooled = _outputs()
    noisy = pooled + 0.25 * np.random.default_rng(1).standard_normal(pooled.shape).astype(np.float32)
    expected = _cosines(pooled, noisy)
    assert expected.mean() < 0.99  # the premise: this noise is beyond the int8 tolerance
    with pytest.raises(VerificationError, match="int8 model does not match") as caught:
        compare("int8", (hidden, mask, pooled), (hidden, mask, noisy))
    report = caught.value.report
    assert report is not None
    assert report["mean_cosine"] == pytest.approx(float(expected.mean()), abs=1e-5)
    assert report["min_cosine"] == pytest.approx(float(expected.min()), abs=1e-5)
    assert caught.value.max_diffs["sentence_embedding"] == pytest.approx(float(np.abs(noisy - pooled).max()))


def test_padding_positions_do_not_count_in_the_hidden_state_difference() -> None:
    hidden, mask, pooled = _outputs()
    changed = hidden.copy()
    changed[1, 5] += 100.0  # a padded position of row 1
    report = compare("fp32", (hidden, mask, pooled), (changed, mask, pooled))
    assert report.max_diffs["token_embeddings"] == 0.0


def test_a_tokenizer_that_pads_differently_is_refused() -> None:
    hidden, mask, pooled = _outputs()
    other_mask = mask.copy()
    other_mask[0, 5] = 0
    with pytest.raises(VerificationError, match="tokenizer disagrees"):
        compare("fp32", (hidden, mask, pooled), (hidden, other_mask, pooled))
