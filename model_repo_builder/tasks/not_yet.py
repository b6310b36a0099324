"""Tasks trb recognises but does not build yet.

They are recognised so that such a model is refused with the reason, never built as something else.
"""

from __future__ import annotations

from model_repo_builder.tasks.base import ModelFacts, Task, register


class ExtractiveQuestionAnswering(Task):
    """`*ForQuestionAnswering` encoders: a question and a context in, an answer span out."""

    name = "question-answering"
    summary = "question and context in, answer span out"
    inputs = ()
    outputs = ()
    main_output = ""
    not_yet = "span extraction (start/end logits to answer text) has no served template"

    def detect(self, facts: ModelFacts) -> bool:
        """A checkpoint with a question-answering head."""
        return "QuestionAnswering" in facts.heads


QUESTION_ANSWERING = register(ExtractiveQuestionAnswering())
