"""Builder for token-classification (named entity) repositories: one python-backend model.

The served model tokenizes with character offsets, runs the exported encoder with its token
classification head and groups labelled tokens into entity spans as transformers' pipeline does with
`aggregation_strategy="simple"` (templates/token_classification/token_classifier.py). Verification
compares the served per-token probabilities with the source model in PyTorch.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from model_repo_builder.errors import UnsupportedModelError
from model_repo_builder.models.source import ResolvedModel, load_tokenizer
from model_repo_builder.repository import config as model_config
from model_repo_builder.repository.classification import export_with_head, head_model_inputs, labels_of
from model_repo_builder.repository.embedding import BuiltModel
from model_repo_builder.repository.writer import lay_out_model
from model_repo_builder.spec import BuildSpec

TEMPLATE_FILES = ("model.py", "token_classifier.py")
WARMUP_TEXT = "Warm-up request: Ada Lovelace wrote programs for Charles Babbage in London."


def reference_token_probabilities(
    model_dir: Path, texts: tuple[str, ...], max_length: int, allow_pickle: bool
) -> list[np.ndarray]:
    """The source model's per-token softmax for each text's non-special tokens, in PyTorch."""
    import torch
    from transformers import AutoModelForTokenClassification

    tokenizer = load_tokenizer(model_dir)
    model = AutoModelForTokenClassification.from_pretrained(
        str(model_dir), use_safetensors=not allow_pickle, trust_remote_code=False
    ).eval()
    batch = tokenizer(
        list(texts),
        padding=True,
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
        return_special_tokens_mask=True,
    )
    special = batch.pop("special_tokens_mask")
    with torch.inference_mode():
        probabilities = torch.softmax(model(**batch).logits.double(), dim=-1).float().numpy()
    keep = (special == 0) & (batch["attention_mask"] == 1)
    return [probabilities[row][keep[row].numpy()] for row in range(len(texts))]


def build_token_classifier(
    spec: BuildSpec, source: ResolvedModel, name: str, staging: Path, task: Any
) -> BuiltModel:
    """Export, convert, verify and lay out a token classifier under `staging/name`."""
    from model_repo_builder.export.classifier_verify import verify_scores
    from model_repo_builder.export.verify import SAMPLE_TEXTS
    from model_repo_builder.templates.token_classification.token_classifier import (
        TokenClassifier,
        TokenClassifierSettings,
    )

    tokenizer, shared = head_model_inputs(spec, source)
    labels = labels_of(source.config)
    settings = TokenClassifierSettings(labels=labels, **shared)
    max_length = settings.max_length
    with tempfile.TemporaryDirectory(prefix="trb-export-") as scratch_name:
        scratch = Path(scratch_name)
        served_model, tokenizer_file = export_with_head(
            spec, source, tokenizer, "token-classification", scratch
        )

        served, _ = TokenClassifier(str(served_model), str(tokenizer_file), settings).token_probabilities(
            SAMPLE_TEXTS
        )
        reference = reference_token_probabilities(source.path, SAMPLE_TEXTS, max_length, spec.allow_pickle)
        if [len(p) for p in served] != [len(p) for p in reference]:
            raise UnsupportedModelError(
                "the served tokenizer splits the sample texts differently from the source"
            )
        report = verify_scores(
            spec.precision, np.concatenate(reference), np.concatenate(served), ranking=False
        )
        model_dir = staging / name
        files = {"model.onnx": served_model, "tokenizer.json": tokenizer_file}
        lay_out_model(model_dir, files, "token_classification", TEMPLATE_FILES, WARMUP_TEXT)
    parameters = {**settings.to_parameters(), "precision": spec.precision}
    config = {
        "name": name,
        "backend": "python",
        **model_config.scheduling(spec, admission=True),
        "input": [item.config() for item in task.inputs],
        "output": [item.config() for item in task.outputs],
        "parameters": {
            **{key: {"string_value": value} for key, value in parameters.items()},
            **model_config.string_parameters(model_config.admission_parameters(spec)),
        },
        "model_warmup": model_config.text_warmup(task.text_inputs[0], spec.max_batch_size),
    }
    (model_dir / "config.pbtxt").write_text(model_config.render(config), encoding="utf-8")
    return BuiltModel(
        model={
            "inputs": {"TEXT": "TYPE_STRING [batch, 1] UTF-8 text"},
            "outputs": {
                item.name: f"{item.data_type} [batch, entities] {item.description}" for item in task.outputs
            },
            "labels": list(labels),
            "aggregation": "simple",
            "max_length": max_length,
        },
        verification={
            **report,
            "summary": "per-token probabilities of " + report["summary"].replace("texts", "tokens"),
        },
    )
