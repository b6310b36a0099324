"""Builder for text-classification and text-ranking (cross-encoder) repositories: one python-backend model.

The served model tokenizes, runs the exported encoder with its classification head in ONNX Runtime
and applies the activation the source applies: softmax over labels (sigmoid for multi-label
checkpoints) for classifiers; for rerankers the activation a sentence-transformers CrossEncoder
saved, or its default, sigmoid.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from model_repo_builder.errors import UnsupportedModelError
from model_repo_builder.models.source import ResolvedModel, load_tokenizer
from model_repo_builder.repository import config as model_config
from model_repo_builder.repository.embedding import BuiltModel
from model_repo_builder.repository.writer import lay_out_model
from model_repo_builder.spec import BuildSpec
from model_repo_builder.templates.common.trb_runtime import default_max_text_bytes

LOGGER = logging.getLogger(__name__)

TEMPLATE_FILES = ("model.py", "sequence_classifier.py")
WARMUP_TEXT = "Warm-up request: a short English sentence to load every kernel before traffic arrives."
# Tokenizers without a real limit report a huge model_max_length (int(1e30)); ignore those.
_SANE_TOKENIZER_LIMIT = 100_000
_CROSS_ENCODER_ACTIVATIONS = {"Sigmoid": "sigmoid", "Identity": "identity"}


def classification_activation(config: dict[str, Any]) -> str:
    """Softmax over labels, or sigmoid per label for multi-label checkpoints (as HF's pipeline)."""
    if config.get("problem_type") == "multi_label_classification":
        return "sigmoid"
    if config.get("problem_type") == "regression":
        return "identity"
    return "softmax"


def ranking_activation(saved: str | None) -> str:
    """The CrossEncoder's saved activation (`torch.nn...Sigmoid`), or its default for one label: sigmoid."""
    if saved is None:
        return "sigmoid"
    activation = _CROSS_ENCODER_ACTIVATIONS.get(saved.rsplit(".", 1)[-1])
    if activation is None:
        raise UnsupportedModelError(
            f"the cross-encoder's activation {saved!r} is not supported; trb serves "
            f"{', '.join(_CROSS_ENCODER_ACTIVATIONS)}"
        )
    return activation


def labels_of(config: dict[str, Any]) -> tuple[str, ...]:
    """The head's labels in id order, from config.json's id2label."""
    id2label = config.get("id2label") or {}
    return tuple(str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(len(id2label)))


def window_length(source: ResolvedModel, tokenizer_limit: int, requested: int | None) -> int:
    """Tokens the encoder reads: its position limit, the tokenizer's if smaller, `--max-length` if set."""
    limit = int(source.config.get("max_position_embeddings", 512))
    if 0 < tokenizer_limit <= _SANE_TOKENIZER_LIMIT:
        limit = min(limit, tokenizer_limit)
    return min(requested or limit, limit)


def head_model_inputs(spec: BuildSpec, source: ResolvedModel) -> tuple[Any, dict[str, Any]]:
    """The padded tokenizer and the settings every encoder-with-head template shares (window, cap...)."""
    tokenizer = load_tokenizer(source.path)
    if tokenizer.pad_token is None:
        raise UnsupportedModelError(f"the tokenizer of {source.path} has no padding token")
    max_length = window_length(source, int(tokenizer.model_max_length), spec.max_length)
    return tokenizer, {
        "max_length": max_length,
        "max_text_bytes": spec.max_text_bytes or default_max_text_bytes(max_length),
        "pad_token": tokenizer.pad_token,
        "pad_token_id": int(tokenizer.pad_token_id),
        "intra_op_threads": spec.resolved_threads_per_instance(),
    }


def export_with_head(
    spec: BuildSpec, source: ResolvedModel, tokenizer: Any, optimum_task: str, scratch: Path
) -> tuple[Path, Path]:
    """The encoder with its head in `spec.precision`, and the tokenizer.json the template loads."""
    from model_repo_builder.export.onnx_export import export_encoder
    from model_repo_builder.export.quantize import apply_precision

    fp32_model = export_encoder(source.path, scratch / "onnx", task=optimum_task)
    served_model = apply_precision(fp32_model, spec.precision, scratch, int8_scheme=spec.int8())
    tokenizer.save_pretrained(str(scratch / "tokenizer"))
    return served_model, scratch / "tokenizer" / "tokenizer.json"


def model_configuration(
    spec: BuildSpec, name: str, task: Any, num_labels: int, parameters: dict[str, str]
) -> dict[str, Any]:
    """The config.pbtxt content, as a dict: the task's inputs, its outputs sized to the labels."""
    outputs = [output.config((num_labels,) if output.name == "SCORES" else None) for output in task.outputs]
    warmup = model_config.text_warmup(task.text_inputs[0], spec.max_batch_size)
    for sample in warmup:
        for input_name in task.text_inputs[1:]:
            sample["inputs"][input_name] = sample["inputs"][task.text_inputs[0]]
    return {
        "name": name,
        "backend": "python",
        **model_config.scheduling(spec, admission=True),
        "input": [item.config() for item in task.inputs],
        "output": outputs,
        "parameters": {
            **{key: {"string_value": value} for key, value in parameters.items()},
            **model_config.string_parameters(model_config.admission_parameters(spec)),
        },
        "model_warmup": warmup,
    }


def build_classifier(
    spec: BuildSpec, source: ResolvedModel, name: str, staging: Path, task: Any
) -> BuiltModel:
    """Export, convert, verify and lay out a classifier or reranker (`task.pairs`) under `staging/name`."""
    from model_repo_builder.export.classifier_verify import reference_scores, sample_inputs, verify_scores
    from model_repo_builder.templates.classification.sequence_classifier import (
        ClassifierSettings,
        SequenceClassifier,
    )

    tokenizer, shared = head_model_inputs(spec, source)
    labels = labels_of(source.config)
    if task.pairs:
        activation = ranking_activation(source.facts.cross_encoder_activation)
    else:
        activation = classification_activation(source.config)
    settings = ClassifierSettings(activation=activation, labels=labels, pairs=task.pairs, **shared)
    parameters = {**settings.to_parameters(), "precision": spec.precision}
    with tempfile.TemporaryDirectory(prefix="trb-export-") as scratch_name:
        scratch = Path(scratch_name)
        served_model, tokenizer_file = export_with_head(
            spec, source, tokenizer, "text-classification", scratch
        )

        texts, queries = sample_inputs(task.pairs)
        candidate = SequenceClassifier(str(served_model), str(tokenizer_file), settings).scores(
            texts, queries
        )
        reference = reference_scores(
            source.path, texts, queries, activation, settings.max_length, spec.allow_pickle
        )
        report = verify_scores(spec.precision, reference, candidate, ranking=task.pairs)

        model_dir = staging / name
        files = {"model.onnx": served_model, "tokenizer.json": tokenizer_file}
        lay_out_model(model_dir, files, "classification", TEMPLATE_FILES, WARMUP_TEXT)
    config = model_configuration(spec, name, task, len(labels), parameters)
    (model_dir / "config.pbtxt").write_text(model_config.render(config), encoding="utf-8")
    return BuiltModel(
        model={
            "inputs": {item.name: f"{item.data_type} [batch, 1] {item.description}" for item in task.inputs},
            "outputs": {
                item.name: f"{item.data_type} [batch, {len(labels) if item.name == 'SCORES' else 1}] "
                f"{item.description}"
                for item in task.outputs
            },
            "labels": list(labels),
            "activation": activation,
            "max_length": settings.max_length,
        },
        verification=report,
    )
