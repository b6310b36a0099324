"""Text in, vectors out: tokenization, ONNX Runtime inference and sentence-transformers pooling.

Pure Python and NumPy (plus `tokenizers` and `onnxruntime`), with no Triton import, so the same code
runs inside the python-backend stub and in tests. Copied next to `model.py` and `trb_runtime.py` in
each repository.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

if __package__:  # imported from the trb package (tests)
    from ..common.trb_runtime import (
        InvalidTextError,
        clip_text,
        decode_texts,
        encoder_feeds,
        encoder_runtime,
        parse_encoder_parameters,
        run_by_length,
    )
else:  # copied next to trb_runtime.py in a repository
    from trb_runtime import (  # type: ignore[no-redef]
        InvalidTextError,
        clip_text,
        decode_texts,
        encoder_feeds,
        encoder_runtime,
        parse_encoder_parameters,
        run_by_length,
    )

__all__ = ["InvalidTextError", "decode_texts", "EmbedderSettings", "TextEmbedder", "pool"]

POOLING_MODES = ("mean", "cls", "max", "mean_sqrt_len")


def _pool_mean(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    summed = np.einsum("bsd,bs->bd", hidden, mask)
    return summed / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)


def _pool_mean_sqrt_len(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    summed = np.einsum("bsd,bs->bd", hidden, mask)
    return summed / np.sqrt(np.maximum(mask.sum(axis=1, keepdims=True), 1e-9))


def _pool_cls(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return hidden[:, 0, :]


def _pool_max(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    masked = np.where(mask[:, :, None] > 0, hidden, np.float32(-1e9))
    return masked.max(axis=1)


_POOLERS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "mean": _pool_mean,
    "mean_sqrt_len": _pool_mean_sqrt_len,
    "cls": _pool_cls,
    "max": _pool_max,
}


def pool(hidden: np.ndarray, attention_mask: np.ndarray, mode: str, normalize: bool) -> np.ndarray:
    """Reduce token embeddings [batch, seq, dim] to sentence embeddings [batch, dim] (float32)."""
    mask = attention_mask.astype(np.float32)
    pooled = _POOLERS[mode](hidden.astype(np.float32, copy=False), mask)
    if normalize:
        pooled = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return pooled.astype(np.float32, copy=False)


@dataclass(frozen=True)
class EmbedderSettings:
    """What the served model needs to know; it reaches the stub through config.pbtxt parameters."""

    pooling: str = "mean"
    normalize: bool = True
    max_length: int = 256
    max_text_bytes: int | None = None  # larger texts are refused (400) before any work
    pad_token: str = "[PAD]"
    pad_token_id: int = 0
    intra_op_threads: int = 1
    allow_spinning: bool = False
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    length_bucketing: bool = True  # run a batch's rows in groups of similar length

    @classmethod
    def from_parameters(cls, parameters: dict[str, str]) -> EmbedderSettings:
        """Parse the string-valued parameters Triton hands to a python-backend model."""
        pooling = parameters.get("pooling", "mean")
        if pooling not in POOLING_MODES:
            raise ValueError(f"parameter 'pooling' must be one of {POOLING_MODES}, got {pooling!r}")
        return cls(
            pooling=pooling,
            normalize=parameters.get("normalize", "true").lower() == "true",
            **parse_encoder_parameters(parameters, max_length=256),
        )


class TextEmbedder:
    """Tokenize, run the ONNX encoder, pool: the whole served computation for one batch of texts."""

    def __init__(self, onnx_path: str, tokenizer_path: str, settings: EmbedderSettings):
        self.settings = settings
        self.tokenizer, self.session, self._output_name = encoder_runtime(onnx_path, tokenizer_path, settings)

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Return token embeddings [batch, seq, dim] and the attention mask [batch, seq]."""
        clipped = [clip_text(text, self.settings.max_length) for text in texts]
        feeds, mask = encoder_feeds(self.session, self.tokenizer.encode_batch(clipped))
        (hidden,) = self.session.run([self._output_name], feeds)
        return hidden, mask

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return float32 embeddings [len(texts), dim] in the order of `texts`.

        The served computation: rows of similar length run together (`length_bucketing`).
        """
        clipped = [clip_text(text, self.settings.max_length) for text in texts]
        feeds, mask = encoder_feeds(self.session, self.tokenizer.encode_batch(clipped))
        embeddings: np.ndarray | None = None
        for rows, hidden, rows_mask in run_by_length(
            self.session, self._output_name, feeds, mask, self.settings
        ):
            pooled = pool(hidden, rows_mask, self.settings.pooling, self.settings.normalize)
            if embeddings is None:
                embeddings = np.empty((len(texts), pooled.shape[1]), dtype=np.float32)
            embeddings[rows] = pooled
        if embeddings is None:
            raise ValueError("no texts given")
        return embeddings
