"""The `Task` interface and its registry: everything trb knows about one kind of served model.

A task is one object, defined and registered in its own module (`tasks/<task>.py`): its I/O contract,
how it is recognised in a model directory, how a repository is built and verified for it, the README
section of the repositories it builds, what `trb infer` prints and what the sweep needs. The build
pipeline, the client, the README writer, `trb infer` and `trb sweep` read from it, so adding a task
is adding a module that calls `register()`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from model_repo_builder.errors import UnsupportedModelError

if TYPE_CHECKING:
    from model_repo_builder.models.source import ResolvedModel
    from model_repo_builder.spec import BuildSpec

# Encoder-only model types trb exports with optimum (embeddings, classifiers, rerankers).
ENCODER_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "electra", "deberta-v2")
# The encoder tasks' default CPU layout: one single-threaded instance per core beats one instance
# with every core (bench/results/text_lengths.md and its history, MiniLM int8 on 2 cores: 2×1 serves
# 0.87–0.90 / 0.85–0.99 of the in-process ceiling on short / mixed text, 1×2 0.73–0.79 / 0.62–0.66):
# ONNX Runtime's threads synchronise on the small matrices of short texts, and one stub's Python
# (tokenizing, batching) runs while the other computes. Capped because every instance holds its own
# copy of the weights.
ENCODER_DEFAULT_CPU_INSTANCES = 4


@dataclass(frozen=True, kw_only=True)
class TensorIO:
    """One input or output of a served model, as config.pbtxt declares it (without the batch dim)."""

    name: str
    data_type: str  # TYPE_STRING, TYPE_FP32, ...
    dims: tuple[int, ...] = (1,)
    optional: bool = False
    description: str = ""

    def config(self, dims: tuple[int, ...] | None = None) -> dict[str, Any]:
        """The config.pbtxt entry (dict form), with `dims` where the task knows them only at build."""
        entry: dict[str, Any] = {
            "name": self.name,
            "data_type": self.data_type,
            "dims": list(dims or self.dims),
        }
        if self.optional:
            entry["optional"] = True
        return entry


@dataclass(frozen=True, kw_only=True)
class ModelFacts:
    """What config.json and the sentence-transformers files say about a model directory."""

    path: Path
    model_type: str
    architectures: tuple[str, ...]
    num_labels: int
    sentence_transformers_modules: tuple[str, ...]  # module types listed in modules.json
    cross_encoder_activation: str | None  # sentence-transformers CrossEncoder's saved activation

    @classmethod
    def read(cls, path: Path, config: dict[str, Any]) -> ModelFacts:
        """Facts from an already parsed config.json of the directory `path`."""
        modules_file = path / "modules.json"
        modules: tuple[str, ...] = ()
        if modules_file.is_file():
            try:
                listed = json.loads(modules_file.read_text(encoding="utf-8"))
                modules = tuple(str(m["type"]).rsplit(".", 1)[-1] for m in listed)
            except (ValueError, KeyError, TypeError) as error:
                raise UnsupportedModelError(f"{modules_file} cannot be read ({error})") from None
        id2label = config.get("id2label")
        num_labels = len(id2label) if isinstance(id2label, dict) else int(config.get("num_labels", 2))
        st_config = config.get("sentence_transformers")
        activation = st_config.get("activation_fn") if isinstance(st_config, dict) else None
        return cls(
            path=path,
            model_type=str(config.get("model_type", "")),
            architectures=tuple(str(a) for a in config.get("architectures") or ()),
            num_labels=num_labels,
            sentence_transformers_modules=modules,
            cross_encoder_activation=activation,
        )

    @property
    def heads(self) -> set[str]:
        """The heads the checkpoint's architectures name: `SequenceClassification`, … ('' = none)."""
        return {a.split("For", 1)[1] if "For" in a else "" for a in self.architectures} or {""}


class Task:
    """Base class of the registered tasks; subclasses set the class attributes and override methods."""

    name: ClassVar[str]
    summary: ClassVar[str]  # what it serves, for messages and `trb build --help`
    inputs: ClassVar[tuple[TensorIO, ...]]
    outputs: ClassVar[tuple[TensorIO, ...]]
    main_output: ClassVar[str]
    generates: ClassVar[bool] = False  # text generation: the sweep counts tokens per request
    not_yet: ClassVar[str | None] = None  # why this version recognises the task but cannot build it
    needs_tokenizer: ClassVar[bool] = True  # the build checks the tokenizer before writing anything
    pre_steps: ClassVar[bool] = False  # takes `--pre` steps (texts → texts) before the model
    # what `--post` steps take and return: text, vectors, or arrays (the named outputs)
    post_step_kind: ClassVar[str | None] = None
    # Why `--target gpu` (the ensemble around Triton's native onnxruntime backend) is not built for
    # this task yet; None where it is.
    gpu_not_yet: ClassVar[str | None] = (
        "the GPU ensemble (tokenizer step, onnxruntime-backend model step) is built for embeddings only"
    )
    # A CPU build without `--instances` runs one instance per core, at most this many (each instance
    # holds its own copy of the weights), with cores / instances ONNX Runtime threads each.
    max_default_cpu_instances: ClassVar[int] = 1

    def default_instances(self, kind: str, cores: int) -> int:
        """Instances a build without `--instances` gets: one per GPU, or per core up to the cap."""
        if kind == "gpu":
            return 1
        return max(1, min(cores, self.max_default_cpu_instances))

    @property
    def text_inputs(self) -> tuple[str, ...]:
        """The required TYPE_STRING inputs, in the order a client fills them."""
        return tuple(i.name for i in self.inputs if i.data_type == "TYPE_STRING" and not i.optional)

    def detect(self, facts: ModelFacts) -> bool:
        """Whether the directory's own files say it is this task (never a guess)."""
        raise NotImplementedError

    def check(self, facts: ModelFacts) -> None:
        """Raise `UnsupportedModelError` when the model cannot be served as this task (also when forced)."""

    def build(self, spec: BuildSpec, source: ResolvedModel, name: str, staging: Path) -> Any:
        """Export, verify and lay out the model under `staging/name`; return a `BuiltModel`."""
        raise NotImplementedError

    def readme_call(self, name: str, options: dict[str, Any], model: dict[str, Any], repo_dir: str) -> str:
        """The "Call" section of a built repository's README."""
        raise NotImplementedError

    @staticmethod
    def call_fields(name: str, options: dict[str, Any], repo_dir: str) -> dict[str, Any]:
        """What every task's call section names: the model, where it is, its batch and queue limits."""
        return {
            "name": name,
            "repo_dir": repo_dir,
            "max_batch_size": options["max_batch_size"],
            "max_queue_size": options["max_queue_size"],
        }

    def format_result(self, texts: Sequence[str], outputs: dict[str, np.ndarray]) -> list[str]:
        """Lines `trb infer` prints for one answered request."""
        raise NotImplementedError

    def result_json(self, texts: Sequence[str], outputs: dict[str, np.ndarray]) -> dict[str, Any]:
        """What `trb infer --json` prints (beside the model name)."""
        raise NotImplementedError


class EncoderTask(Task):
    """A task served by an encoder-only model: by default one single-threaded instance per core."""

    max_default_cpu_instances = ENCODER_DEFAULT_CPU_INSTANCES


_TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Make `task` known to build, infer, the README writer and sweep; its name must be new."""
    if task.name in _TASKS and type(_TASKS[task.name]) is not type(task):
        raise ValueError(f"a task named {task.name!r} is already registered")
    _TASKS[task.name] = task
    return task


def unregister(name: str) -> None:
    """Forget a task (tests register toy tasks)."""
    _TASKS.pop(name, None)


def registered() -> dict[str, Task]:
    """Every registered task by name, the built-in ones included."""
    import model_repo_builder.tasks  # noqa: F401  (the built-in tasks register on import)

    return dict(_TASKS)


def buildable_names() -> list[str]:
    """Names of the tasks this version builds, for `--task` and messages."""
    return sorted(name for name, task in registered().items() if task.not_yet is None)


def get_task(name: str) -> Task:
    """The task called `name`; an unknown name is an `UnsupportedModelError` listing the known ones."""
    task = registered().get(name)
    if task is None:
        raise UnsupportedModelError(f"unknown task {name!r}; trb builds: {', '.join(buildable_names())}")
    return task


def _refuse_not_yet(task: Task) -> Task:
    if task.not_yet is not None:
        raise UnsupportedModelError(
            f"{task.name} ({task.summary}) is not yet supported by this version of trb: {task.not_yet}; "
            f"supported today: {', '.join(buildable_names())}"
        )
    return task


def choose_task(facts: ModelFacts, requested: str | None = None) -> Task:
    """The task to build: `requested` (checked against the model), or the one the files name.

    No match, or more than one, is an error that names the supported tasks and `--task`.
    """
    if requested is not None:
        task = _refuse_not_yet(get_task(requested))
        task.check(facts)
        return task
    matches = [task for task in registered().values() if task.detect(facts)]
    what = (
        f"{facts.path / 'config.json'} (model_type {facts.model_type!r}, "
        f"architectures {list(facts.architectures)})"
    )
    if not matches:
        raise UnsupportedModelError(
            f"trb cannot tell which task {what} is for; supported tasks: {', '.join(buildable_names())} "
            "(pass `--task NAME` to choose one the model fits)"
        )
    if len(matches) > 1:
        names = ", ".join(sorted(task.name for task in matches))
        raise UnsupportedModelError(f"{what} fits several tasks ({names}); choose one with `--task`")
    task = _refuse_not_yet(matches[0])
    task.check(facts)
    return task


def task_for_inputs(names: Sequence[str]) -> Task | None:
    """The buildable task whose required text inputs are exactly `names` (for servers trb did not build)."""
    wanted = set(names)
    for task in registered().values():
        if task.not_yet is None and set(task.text_inputs) == wanted:
            return task
    return None
