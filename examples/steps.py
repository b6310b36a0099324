"""Example pre- and post-processing steps for `trb build --pre/--post` (the tests use these).

    trb build minilm --pre examples/steps.py:scrub_emails --post examples/steps.py:matryoshka_128
    trb build ./flan-t5 --pre examples/steps.py:translate_prompt --post examples/steps.py:shout

    trb build ./my-classifier --post examples/steps.py:abstain_when_unsure
    trb build ./my-reranker --post examples/steps.py:calibrate_relevance

Contract: a pre step (any model but token classifiers, whose character offsets must refer to the
client's text) and a text-generation post step take and return `list[str]` of the same length; an
embedding post step takes and returns a float32 array with one row per text. A classifier's or a
reranker's post step is a callable on named arrays, as PyTriton's are: it takes the model's outputs
by name (`{"SCORES": float32 [n, labels], "LABEL": bytes [n, 1]}`, or `{"SCORE": float32 [n, 1]}`)
and returns the same names with the same number of rows. A step that raises answers that request
with HTTP 500 carrying its message; other requests are unaffected.
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


UNSURE = b"uncertain"
UNSURE_BELOW = 0.5


def abstain_when_unsure(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A classifier post step: answer LABEL "uncertain" when no label reaches UNSURE_BELOW."""
    labels = outputs["LABEL"].copy()
    labels[outputs["SCORES"].max(axis=1) < UNSURE_BELOW] = UNSURE
    return {"SCORES": outputs["SCORES"], "LABEL": labels}


def calibrate_relevance(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A reranker post step: a calibrated probability of relevance, sigmoid(2 × score − 1)."""
    return {"SCORE": (1.0 / (1.0 + np.exp(-(2.0 * outputs["SCORE"] - 1.0)))).astype(np.float32)}
