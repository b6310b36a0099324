"""Texts to the fixed-length token tensors an encoder's model step takes: ids, mask, type ids.

Every text is truncated and padded to exactly `max_length` tokens, so every request has the same
shape: Triton's dynamic batcher only batches requests of equal shape, and one TensorRT optimization
profile (1..max_batch_size × max_length) covers every batch. The cost is compute on padding for
short texts; the attention mask keeps the result exact. Pure Python and NumPy plus `tokenizers`, no
Triton import: the same code runs in the python-backend stub, in the build's verification and in tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

if __package__:  # imported from the trb package (tests, the build)
    from ..common.trb_runtime import InvalidTextError, clip_text, decode_texts
else:  # copied next to trb_runtime.py in a repository
    from trb_runtime import InvalidTextError, clip_text, decode_texts  # type: ignore[no-redef]

__all__ = ["InvalidTextError", "decode_texts", "TokenizerSettings", "TokenInputs"]

TOKEN_OUTPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class TokenizerSettings:
    """What the step needs to know; it reaches the stub through config.pbtxt parameters."""

    max_length: int = 256
    max_text_bytes: int | None = None
    pad_token: str = "[PAD]"
    pad_token_id: int = 0
    outputs: tuple[str, ...] = ("input_ids", "attention_mask")

    def to_parameters(self) -> dict[str, str]:
        """The string parameters Triton hands back to `from_parameters`."""
        return {
            "max_length": str(self.max_length),
            "max_text_bytes": str(self.max_text_bytes or ""),
            "pad_token": self.pad_token,
            "pad_token_id": str(self.pad_token_id),
            "outputs": ",".join(self.outputs),
        }

    @classmethod
    def from_parameters(cls, parameters: dict[str, str]) -> TokenizerSettings:
        """Parse the string-valued parameters of the step's config.pbtxt."""
        outputs = tuple(
            name for name in parameters.get("outputs", "input_ids,attention_mask").split(",") if name
        )
        unknown = sorted(set(outputs) - set(TOKEN_OUTPUTS))
        if unknown:
            raise ValueError(f"parameter 'outputs' names unknown tensors {unknown}; known: {TOKEN_OUTPUTS}")
        text_bytes = parameters.get("max_text_bytes")
        return cls(
            max_length=int(parameters.get("max_length", "256")),
            max_text_bytes=int(text_bytes) if text_bytes else None,
            pad_token=parameters.get("pad_token", "[PAD]"),
            pad_token_id=int(parameters.get("pad_token_id", "0")),
            outputs=outputs,
        )


class TokenInputs:
    """Tokenize texts into [batch, max_length] int64 tensors, named as the model step's inputs."""

    def __init__(self, tokenizer_path: str, settings: TokenizerSettings):
        from tokenizers import Tokenizer

        self.settings = settings
        self.tokenizer = Tokenizer.from_file(tokenizer_path)
        self.tokenizer.enable_truncation(max_length=settings.max_length)
        self.tokenizer.enable_padding(
            pad_id=settings.pad_token_id, pad_token=settings.pad_token, length=settings.max_length
        )

    def tokenize(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """The step's outputs for `texts`, rows in the order of `texts`."""
        encodings = self.tokenizer.encode_batch([clip_text(t, self.settings.max_length) for t in texts])
        columns = {
            "input_ids": [e.ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
        }
        shape = (len(encodings), self.settings.max_length)
        return {
            name: np.array(columns[name], dtype=np.int64).reshape(shape) for name in self.settings.outputs
        }
