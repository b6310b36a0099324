"""Iteration-level ("continuous") batching: sequences join and leave the running batch at every step.

Request-level batching decodes one batch to completion, so a request that arrives meanwhile waits for
the slowest sequence in it. Here each call of `step()` runs one decoder-with-past call over every
running sequence, whatever step each is at; `admit()` encodes newcomers and computes their
cross-attention cache, and they make their first token in the next `step()`, as rows with an empty
self-attention cache. Finished sequences leave at once.

Rows whose self-attention caches hold different numbers of tokens share the call by left-padding the
shorter caches and masking the padding (`decoder_attention_bias`, added at export by
export/seq2seq_mask.py). T5's position bias depends only on relative position, so each row computes
what it would alone; BART-family decoders embed absolute positions, so each row is given its own
(`decoder_position_ids`, export/seq2seq_positions.py). The cross-attention caches are right-padded
and masked like the encoder batch.
Pure NumPy over `Seq2SeqGenerator`, so tests drive it in-process. Copied next to `model.py`.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np

if __package__:  # imported from the trb package (tests)
    from .generation import (
        CROSS_CACHE_FILE,
        MASKED,
        GenerationParams,
        Seq2SeqGenerator,
        choose_tokens,
        is_self_attention,
        self_attention_length,
    )
else:  # copied next to generation.py in a repository
    from generation import (  # type: ignore[no-redef]
        CROSS_CACHE_FILE,
        MASKED,
        GenerationParams,
        Seq2SeqGenerator,
        choose_tokens,
        is_self_attention,
        self_attention_length,
    )


@dataclass
class _Running:
    tag: Hashable
    params: GenerationParams
    rng: np.random.Generator | None
    encoder_length: int
    tokens: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class StepEvent:
    """One token made for the sequence `tag`; `done` when it ended the sequence (then `tokens` is all)."""

    tag: Hashable
    token: int
    done: bool
    tokens: tuple[int, ...]


class ContinuousBatch:
    """The running batch: its sequences, their KV caches and the next input token of each."""

    def __init__(self, generator: Seq2SeqGenerator):
        if not generator.accepts_self_attention_mask or generator.cross_cache_model is None:
            raise ValueError(
                "continuous batching needs a decoder-with-past with a self-attention mask and the "
                f"cross-attention cache model ({CROSS_CACHE_FILE}); rebuild the repository with this "
                "version of trb"
            )
        self.generator = generator
        self._rows: list[_Running] = []
        self._lengths = np.zeros(0, dtype=np.int64)  # real self-attention cache tokens of each row
        self._next = np.zeros(0, dtype=np.int64)
        self._encoder_mask = np.zeros((0, 0), dtype=np.int64)
        self._cache: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def admit(
        self, token_ids: Sequence[Sequence[int]], params: Sequence[GenerationParams], tags: Sequence[Hashable]
    ) -> None:
        """Encode new prompts; they join the running batch and make their first token in the next step()."""
        if not token_ids:
            return
        hidden, mask = self.generator.encode(token_ids)
        rows = [
            _Running(
                tag=tag,
                params=row_params,
                rng=np.random.default_rng(row_params.seed) if row_params.do_sample else None,
                encoder_length=len(ids),
            )
            for tag, row_params, ids in zip(tags, params, token_ids, strict=True)
        ]
        self._join(rows, mask, self.generator.cross_cache(hidden))

    def step(self) -> list[StepEvent]:
        """One decoder-with-past call over every running sequence; return the token each made."""
        if not self._rows:
            return []
        past = self_attention_length(self._cache)
        bias = np.zeros((len(self._rows), 1, 1, past + 1), dtype=np.float32)
        for index, length in enumerate(self._lengths):
            bias[index, 0, 0, : past - int(length)] = MASKED
        logits, self._cache = self.generator.next_step(
            self._next, self._encoder_mask, self._cache, bias, positions=self._lengths
        )
        self._lengths = self._lengths + 1
        rows = self._rows
        scores = self.generator.rules.apply(
            logits[:, -1, :], [r.tokens for r in rows], [r.params.max_new_tokens for r in rows]
        )
        tokens = choose_tokens(scores, [r.params for r in rows], [r.rng for r in rows])
        events, done = self._record(self._rows, tokens)
        self._next = tokens
        if done.any():
            self._keep(~done)
        return events

    def _record(self, rows: Sequence[_Running], tokens: np.ndarray) -> tuple[list[StepEvent], np.ndarray]:
        eos = self.generator.settings.eos_token_id
        events, done = [], np.zeros(len(rows), dtype=bool)
        for index, (row, token) in enumerate(zip(rows, tokens, strict=True)):
            row.tokens.append(int(token))
            done[index] = int(token) == eos or len(row.tokens) >= row.params.max_new_tokens
            events.append(StepEvent(row.tag, int(token), bool(done[index]), tuple(row.tokens)))
        return events, done

    def _join(self, rows: list[_Running], mask: np.ndarray, cross: dict[str, np.ndarray]) -> None:
        """Add `rows` with their cross-attention cache and an empty (fully masked) self-attention cache."""
        # An empty batch keeps one masked slot, so the self-attention cache never has length zero.
        past = self_attention_length(self._cache) if self._rows else 1
        self_cache = {}
        for name, value in cross.items():
            batch, heads, _, head_dim = value.shape
            self_cache[name.replace(".encoder.", ".decoder.")] = np.zeros(
                (batch, heads, past, head_dim), dtype=value.dtype
            )
        start = np.full(len(rows), self.generator.settings.decoder_start_token_id, dtype=np.int64)
        if not self._rows:
            self._cache, self._encoder_mask = {**self_cache, **cross}, mask
            self._rows, self._next, self._lengths = rows, start, np.zeros(len(rows), dtype=np.int64)
            return
        encoder = max(self._encoder_mask.shape[1], mask.shape[1])
        merged = {}
        for name, value in self._cache.items():
            if is_self_attention(name):
                merged[name] = np.concatenate([value, self_cache[name]])
            else:
                merged[name] = np.concatenate([_pad_right(value, encoder), _pad_right(cross[name], encoder)])
        self._cache = merged
        self._encoder_mask = np.concatenate(
            [_pad_mask(self._encoder_mask, encoder), _pad_mask(mask, encoder)]
        )
        self._rows = self._rows + rows
        self._next = np.concatenate([self._next, start])
        self._lengths = np.concatenate([self._lengths, np.zeros(len(rows), dtype=np.int64)])

    def _keep(self, keep: np.ndarray) -> None:
        """Drop finished rows, then the cache columns no remaining row uses."""
        self._rows = [row for row, kept in zip(self._rows, keep, strict=True) if kept]
        self._next, self._lengths = self._next[keep], self._lengths[keep]
        if not self._rows:
            self._cache, self._encoder_mask = {}, np.zeros((0, 0), dtype=np.int64)
            return
        past = self_attention_length(self._cache)
        longest = int(self._lengths.max())
        encoder = max(row.encoder_length for row in self._rows)
        self._encoder_mask = self._encoder_mask[keep, :encoder]
        self._cache = {
            name: value[keep, :, past - longest :, :]
            if is_self_attention(name)
            else value[keep, :, :encoder, :]
            for name, value in self._cache.items()
        }


def generate_staggered(
    generator: Seq2SeqGenerator, token_ids: Sequence[Sequence[int]], params: Sequence[GenerationParams]
) -> list[list[int]]:
    """Admit prompt i before step i, so every row sits at another position; the ids of each prompt.

    This is the arrival pattern continuous batching exists for, and the one that tests its padding:
    each row's self-attention cache is left-padded to the longest and its position is its own.
    """
    batch = ContinuousBatch(generator)
    results: dict[Hashable, list[int]] = {}
    waiting = list(range(len(token_ids)))
    while waiting or len(batch):
        if waiting:
            index = waiting.pop(0)
            batch.admit([token_ids[index]], [params[index]], [index])
        results.update((event.tag, list(event.tokens)) for event in batch.step() if event.done)
    return [results[index] for index in range(len(token_ids))]


def _pad_right(value: np.ndarray, length: int) -> np.ndarray:
    missing = length - value.shape[2]
    return value if missing == 0 else np.pad(value, ((0, 0), (0, 0), (0, missing), (0, 0)))


def _pad_mask(mask: np.ndarray, length: int) -> np.ndarray:
    missing = length - mask.shape[1]
    return mask if missing == 0 else np.pad(mask, ((0, 0), (0, missing)))
