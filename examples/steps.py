"""Example pre- and post-processing steps for `trb build --pre/--post` (the tests use these).

    trb build minilm --pre examples/steps.py:scrub_emails --post examples/steps.py:matryoshka_128
    trb build ./flan-t5 --pre examples/steps.py:translate_prompt --post examples/steps.py:shout

Contract: a pre step (any model) and a text-generation post step take and return `list[str]` of the
same length; an embedding post step takes and returns a float32 array with one row per text. A step
that raises answers that request with HTTP 500 carrying its message; other requests are unaffected.
"""

from __future__ import annotations

import re

import numpy as np

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")


def scrub_emails(texts: list[str]) -> list[str]:
    """Replace e-mail addresses before the model sees them (PII scrubbing)."""
    return [_EMAIL.sub("[email]", text) for text in texts]


def translate_prompt(texts: list[str]) -> list[str]:
    """Prompt templating: wrap the user's text in the instruction the model was trained with."""
    return [f"translate English to German: {text}" for text in texts]


def shout(texts: list[str]) -> list[str]:
    """A visible text post step: upper-case the generated text."""
    return [text.upper() for text in texts]


def matryoshka_128(vectors: np.ndarray) -> np.ndarray:
    """Keep the first 128 dimensions and re-normalize (Matryoshka-style truncation)."""
    head = vectors[:, :128]
    return head / np.maximum(np.linalg.norm(head, axis=1, keepdims=True), 1e-12)


def refuse_secrets(texts: list[str]) -> list[str]:
    """Fails on purpose for texts that mention a secret (the tests use it to check error answers)."""
    for text in texts:
        if "secret" in text:
            raise ValueError("texts mentioning a secret are not accepted")
    return texts
