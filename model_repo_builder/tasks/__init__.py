"""The tasks trb serves, one module each; importing this package registers the built-in ones.

Built-in tasks register through the same `register()` a plugin would call (see `tasks/base.py`).
"""

from model_repo_builder.tasks import (  # noqa: F401  (each registers its task)
    classification,
    embedding,
    not_yet,
    ranking,
    seq2seq,
    token_classification,
)
from model_repo_builder.tasks.base import (
    ModelFacts,
    Task,
    TensorIO,
    buildable_names,
    choose_task,
    get_task,
    register,
    registered,
    task_for_inputs,
    unregister,
)

__all__ = [
    "ModelFacts",
    "Task",
    "TensorIO",
    "buildable_names",
    "choose_task",
    "get_task",
    "register",
    "registered",
    "task_for_inputs",
    "unregister",
]
