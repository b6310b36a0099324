"""Beam search with transformers' `generate(num_beams=k)` semantics (length_penalty 1, early_stopping False).

Each prompt keeps `k` running beams and the `k` best finished hypotheses. At every step the 2k best
continuations of all running beams are scored; those ending in EOS (or at the length limit) and
ranked in the top k join the finished set, length-normalised, and the k best that did not end keep
running. A prompt's search stops when its length limit is reached, or when all k finished slots are
taken and the best running beam's score, normalised by the current length, cannot beat the worst
finished one. The answer is the best finished hypothesis.

Scores stay float32 and candidates are ranked best first, lower index first on ties, as
`torch.topk` does on the values that matter (the -1e9 placeholders only ever tie with each other).
Pure NumPy; copied next to `model.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PLACEHOLDER = np.float32(-1e9)  # the score of a slot that holds no hypothesis yet
LENGTH_PENALTY = 1.0


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log softmax over the last axis, in float32."""
    logits = logits.astype(np.float32, copy=False)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _best_first(scores: np.ndarray, count: int) -> np.ndarray:
    return np.argsort(-scores, kind="stable")[:count]


@dataclass
class BeamSearch:
    """The search state of one prompt; `advance()` takes each step's log-probabilities of its beams."""

    num_beams: int
    max_new_tokens: int
    eos_token_id: int
    generated: int = 0
    running: np.ndarray = field(init=False)
    running_scores: np.ndarray = field(init=False)
    parents: np.ndarray = field(init=False)  # the beam each running beam continues, after advance()
    tokens: np.ndarray = field(init=False)  # the token each running beam was extended by
    finished: list[np.ndarray] = field(init=False)
    finished_scores: np.ndarray = field(init=False)
    is_finished: np.ndarray = field(init=False)
    improvable: bool = True

    def __post_init__(self) -> None:
        k = self.num_beams
        self.running = np.zeros((k, 0), dtype=np.int64)
        self.running_scores = np.full(k, PLACEHOLDER, dtype=np.float32)
        self.running_scores[0] = 0.0  # every beam starts as the same sequence: count it once
        self.parents = np.arange(k)
        self.tokens = np.zeros(k, dtype=np.int64)
        self.finished = [np.zeros(0, dtype=np.int64)] * k
        self.finished_scores = np.full(k, PLACEHOLDER, dtype=np.float32)
        self.is_finished = np.zeros(k, dtype=bool)

    def advance(self, log_probs: np.ndarray) -> bool:
        """Extend the beams by one token from `log_probs` [num_beams, vocab]; True when the search is over."""
        k, vocab = log_probs.shape
        scores = (log_probs + self.running_scores[:, None]).reshape(-1)
        top = _best_first(scores, 2 * k)
        top_scores = scores[top]
        parents, tokens = top // vocab, top % vocab
        candidates = np.concatenate([self.running[parents], tokens[:, None]], axis=1)
        self.generated += 1
        ends = (tokens == self.eos_token_id) | (self.generated >= self.max_new_tokens)

        # The best k candidates that did not end keep running.
        running_scores = top_scores + ends.astype(np.float32) * PLACEHOLDER
        keep = _best_first(running_scores, k)
        self.running, self.running_scores = candidates[keep], running_scores[keep]
        self.parents, self.tokens = parents[keep], tokens[keep]

        # Candidates that ended within the top k compete with the finished set, length-normalised.
        ended = ends & (np.arange(2 * k) < k)
        final = top_scores / (self.generated**LENGTH_PENALTY)
        final = final + np.float32(0.0 if self.improvable else PLACEHOLDER)
        final = final + (~ended).astype(np.float32) * PLACEHOLDER
        merged_scores = np.concatenate([self.finished_scores, final])
        merged = self.finished + list(candidates)
        merged_finished = np.concatenate([self.is_finished, ended])
        best = _best_first(merged_scores, k)
        self.finished = [merged[index] for index in best]
        self.finished_scores, self.is_finished = merged_scores[best], merged_finished[best]

        # Stop once no running beam can beat the worst finished hypothesis (at the current length).
        worst = np.where(self.is_finished, self.finished_scores.min(), PLACEHOLDER)
        best_running = self.running_scores[0] / (self.generated**LENGTH_PENALTY)
        self.improvable = self.improvable and bool(np.any(best_running > worst))
        return not self.improvable or bool(ends.all())

    def best(self) -> list[int]:
        """The generated ids of the best finished hypothesis."""
        return [int(token) for token in self.finished[0]]
