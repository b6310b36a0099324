"""Tasks trb recognises but does not build yet.

They are recognised so that such a model is refused with the reason, never built as something else.
"""

from __future__ import annotations

from model_repo_builder.tasks.base import ENCODER_MODEL_TYPES, ModelFacts, Task, register


class TokenClassification(Task):
    """Named entities and other per-token labels (`*ForTokenClassification`)."""

    name = "token-classification"
    summary = "text in, labelled entity spans out (*ForTokenClassification)"
    inputs = ()
    outputs = ()
    main_output = ""
    not_yet = "its served span aggregation is not written yet"

    def detect(self, facts: ModelFacts) -> bool:
        """An encoder with a token-classification head."""
        return facts.model_type in ENCODER_MODEL_TYPES and "TokenClassification" in facts.heads


class BartFamilyGeneration(Task):
    """BART, mBART and Marian translation / summarization models."""

    name = "text2text-generation-bart"
    summary = "prompt in, generated text out (BART, mBART, Marian)"
    inputs = ()
    outputs = ()
    main_output = ""
    not_yet = "the served decode loop covers the T5 family only"

    def detect(self, facts: ModelFacts) -> bool:
        """A BART-family checkpoint."""
        return facts.model_type in ("bart", "mbart", "marian")


TOKEN_CLASSIFICATION = register(TokenClassification())
BART = register(BartFamilyGeneration())
