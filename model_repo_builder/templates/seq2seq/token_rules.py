"""Which next tokens a model's generation config allows, as transformers' logits processors decide it.

BART-family checkpoints ship rules with their weights: Marian never generates its padding token
(`bad_words_ids`), BART forces EOS as the last token when the length limit is reached
(`forced_eos_token_id`) and some summarizers forbid repeated trigrams (`no_repeat_ngram_size`) or
short outputs (`min_length`). `generate()` applies them on every call, so a served loop that left
them out would produce other text than the source model. Each rule is applied exactly as the
matching transformers processor applies it, in the order `generate()` builds them: bans first, then
forced tokens (which override everything), then suppressed tokens.

The rules change scores only by setting entries to -inf (or forcing one token to 0 and every other
to -inf); greedy and sampled decoding apply them to the logits, beam search to the log-probabilities,
as `generate()` does. Pure NumPy, copied next to `generation.py` in a repository.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

RULE_PARAMETERS = (
    "forced_bos_token_id",
    "forced_eos_token_id",
    "suppressed_token_ids",
    "banned_token_ids",
    "min_length",
    "min_new_tokens",
    "no_repeat_ngram_size",
)
_COUNTS = ("min_length", "min_new_tokens", "no_repeat_ngram_size")


@dataclass(frozen=True, kw_only=True)
class TokenRules:
    """The token rules of one model; the defaults allow every token at every step.

    `banned_token_ids` are single-token `bad_words_ids`; `suppressed_token_ids` are
    `suppress_tokens` (applied after forced tokens, as transformers orders them). `min_length`
    counts the decoder start token, as transformers' `min_length` does for encoder-decoders.
    """

    eos_token_id: int
    decoder_start_token_id: int
    forced_bos_token_id: int | None = None
    forced_eos_token_id: int | None = None
    banned_token_ids: tuple[int, ...] = ()
    suppressed_token_ids: tuple[int, ...] = ()
    min_length: int = 0
    min_new_tokens: int = 0
    no_repeat_ngram_size: int = 0

    @property
    def empty(self) -> bool:
        """Whether no rule applies (T5): scores pass through untouched."""
        return (
            self.forced_bos_token_id is None
            and self.forced_eos_token_id is None
            and not self.banned_token_ids
            and not self.suppressed_token_ids
            and self.min_length <= 1
            and self.min_new_tokens <= 0
            and self.no_repeat_ngram_size <= 0
        )

    def to_parameters(self) -> dict[str, str]:
        """As python-backend parameters (only the rules that are set)."""
        values: dict[str, str] = {}
        for name in RULE_PARAMETERS:
            value = getattr(self, name)
            if isinstance(value, tuple):
                if value:
                    values[name] = ",".join(str(item) for item in value)
            elif value is not None and not (name in _COUNTS and value == 0):  # token id 0 is an id
                values[name] = str(value)
        return values

    @classmethod
    def from_parameters(
        cls, parameters: dict[str, str], eos_token_id: int, decoder_start_token_id: int
    ) -> TokenRules:
        """Parse what `to_parameters` wrote; absent parameters (repositories built earlier) mean no rule."""

        def optional(name: str) -> int | None:
            value = parameters.get(name, "")
            return int(value) if value else None

        def ids(name: str) -> tuple[int, ...]:
            return tuple(int(item) for item in parameters.get(name, "").split(",") if item)

        return cls(
            eos_token_id=eos_token_id,
            decoder_start_token_id=decoder_start_token_id,
            forced_bos_token_id=optional("forced_bos_token_id"),
            forced_eos_token_id=optional("forced_eos_token_id"),
            banned_token_ids=ids("banned_token_ids"),
            suppressed_token_ids=ids("suppressed_token_ids"),
            min_length=optional("min_length") or 0,
            min_new_tokens=optional("min_new_tokens") or 0,
            no_repeat_ngram_size=optional("no_repeat_ngram_size") or 0,
        )

    def apply(
        self, scores: np.ndarray, generated: Sequence[Sequence[int]], limits: Sequence[int]
    ) -> np.ndarray:
        """Scores [rows, vocab] with the rules applied; row i made `generated[i]` of `limits[i]` tokens."""
        if self.empty:
            return scores
        scores = np.array(scores, dtype=np.float32, copy=True)
        for row, (tokens, limit) in enumerate(zip(generated, limits, strict=True)):
            self._apply_row(scores[row], tokens, int(limit))
        return scores

    def _apply_row(self, scores: np.ndarray, tokens: Sequence[int], limit: int) -> None:
        made = len(tokens)
        if self.no_repeat_ngram_size > 0:
            scores[
                _repeated_ngram_endings([self.decoder_start_token_id, *tokens], self.no_repeat_ngram_size)
            ] = -np.inf
        if self.banned_token_ids:
            scores[list(self.banned_token_ids)] = -np.inf
        # transformers counts the decoder start token in `min_length`, not in `min_new_tokens`.
        if made + 1 < self.min_length or made < self.min_new_tokens:
            scores[self.eos_token_id] = -np.inf
        if self.forced_bos_token_id is not None and made == 0:
            _force(scores, self.forced_bos_token_id)
        if self.forced_eos_token_id is not None and made == limit - 1:
            _force(scores, self.forced_eos_token_id)
        if self.suppressed_token_ids:
            scores[list(self.suppressed_token_ids)] = -np.inf


def _force(scores: np.ndarray, token: int) -> None:
    scores[:] = -np.inf
    scores[token] = 0.0


def _repeated_ngram_endings(sequence: Sequence[int], size: int) -> list[int]:
    """Tokens that would complete an n-gram of `size` already in `sequence` (NoRepeatNGramLogitsProcessor)."""
    if len(sequence) + 1 < size:
        return []
    prefix = tuple(sequence[len(sequence) - size + 1 :])
    return [
        sequence[start + size - 1]
        for start in range(len(sequence) - size + 1)
        if tuple(sequence[start : start + size - 1]) == prefix
    ]
