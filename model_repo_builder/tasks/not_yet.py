"""Tasks trb recognises but does not build yet.

They are recognised so that such a model is refused with the reason, never built as something else.
"""

from __future__ import annotations

from model_repo_builder.tasks.base import ModelFacts, Task, register


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


BART = register(BartFamilyGeneration())
