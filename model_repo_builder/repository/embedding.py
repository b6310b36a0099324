"""Builder for text-embedding repositories: one python-backend model, text in, vectors out.

The served model tokenizes, runs the ONNX encoder with ONNX Runtime and pools exactly as the
source sentence-transformers pipeline does (pooling mode and normalization read from its config).
Everything runs in one model, so a request costs one trip through Triton, not three.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_repo_builder.errors import UnsupportedModelError
from model_repo_builder.models.registry import INT8_KEEP_FP32
from model_repo_builder.models.source import ResolvedModel, load_tokenizer
from model_repo_builder.repository import config as model_config
from model_repo_builder.repository.writer import lay_out_model
from model_repo_builder.spec import BuildSpec
from model_repo_builder.templates.common.trb_runtime import default_max_text_bytes

LOGGER = logging.getLogger(__name__)

INPUT_NAME = "TEXT"
OUTPUT_NAME = "EMBEDDING"
TEMPLATE_FILES = ("model.py", "text_embedding.py")
WARMUP_SENTENCE = "Warm-up request: a short English sentence to load every kernel before traffic arrives."
_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_mean_tokens": "mean",
}
_SUPPORTED_MODULES = {"Transformer", "Pooling", "Normalize"}


@dataclass(frozen=True, kw_only=True)
class PipelineSettings:
    """How the source model turns token embeddings into a sentence embedding."""

    pooling: str
    normalize: bool
    max_length: int
    from_sentence_transformers: bool


def _load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def read_pipeline_settings(model: ResolvedModel, max_length: int | None) -> PipelineSettings:
    """Read pooling, normalization and max length from sentence-transformers files, if present."""
    limit = int(model.config.get("max_position_embeddings", 512))
    modules_file = model.path / "modules.json"
    if not modules_file.is_file():
        LOGGER.warning("%s has no modules.json: using mean pooling without normalization", model.path)
        return PipelineSettings(
            pooling="mean",
            normalize=False,
            max_length=min(max_length or limit, limit),
            from_sentence_transformers=False,
        )
    modules = _load_json(modules_file)
    kinds = {m["type"].rsplit(".", 1)[-1]: m for m in modules}
    unsupported = sorted(set(kinds) - _SUPPORTED_MODULES)
    if unsupported:
        raise UnsupportedModelError(
            f"sentence-transformers modules {', '.join(unsupported)} are not supported yet "
            f"(supported: {', '.join(sorted(_SUPPORTED_MODULES))})"
        )
    pooling = "mean"
    if "Pooling" in kinds:
        pooling_config = _load_json(model.path / kinds["Pooling"]["path"] / "config.json")
        enabled = [mode for key, mode in _POOLING_KEYS.items() if pooling_config.get(key)]
        if len(enabled) != 1:
            raise UnsupportedModelError(
                f"pooling must use exactly one mode, the model enables {enabled or 'none'}"
            )
        pooling = enabled[0]
    st_config_file = model.path / "sentence_bert_config.json"
    st_length = _load_json(st_config_file).get("max_seq_length") if st_config_file.is_file() else None
    length = min(max_length or st_length or limit, limit)
    return PipelineSettings(
        pooling=pooling, normalize="Normalize" in kinds, max_length=length, from_sentence_transformers=True
    )


def model_configuration(
    spec: BuildSpec, name: str, dimension: int, parameters: dict[str, object]
) -> dict[str, Any]:
    """The config.pbtxt content for an embedding model, as a dict."""
    return {
        "name": name,
        "backend": "python",
        **model_config.scheduling(spec, admission=True),
        "input": [{"name": INPUT_NAME, "data_type": "TYPE_STRING", "dims": [1]}],
        # post steps may change the dimension (Matryoshka truncation): then it is the steps' to say
        "output": [{"name": OUTPUT_NAME, "data_type": "TYPE_FP32", "dims": [-1 if spec.post else dimension]}],
        "parameters": model_config.string_parameters(
            {**parameters, **model_config.admission_parameters(spec)}
        ),
        "model_warmup": model_config.text_warmup(INPUT_NAME, spec.max_batch_size),
    }


@dataclass(frozen=True, kw_only=True)
class BuiltModel:
    """What a builder reports back for the manifest."""

    model: dict[str, Any]
    verification: dict[str, Any]


def build_embedding(spec: BuildSpec, source: ResolvedModel, name: str, staging: Path) -> BuiltModel:
    """Export, convert, verify and lay out an embedding model under `staging/name`."""
    from model_repo_builder.export.onnx_export import export_encoder
    from model_repo_builder.export.quantize import apply_precision
    from model_repo_builder.export.verify import SAMPLE_TEXTS, compare, reference_embeddings
    from model_repo_builder.templates.embedding.text_embedding import EmbedderSettings, TextEmbedder

    pipeline = read_pipeline_settings(source, spec.max_length)
    tokenizer = load_tokenizer(source.path)
    if tokenizer.pad_token is None:
        raise UnsupportedModelError(f"the tokenizer of {source.path} has no padding token")
    parameters: dict[str, object] = {
        "pooling": pipeline.pooling,
        "normalize": pipeline.normalize,
        "max_length": pipeline.max_length,
        "max_text_bytes": spec.max_text_bytes or default_max_text_bytes(pipeline.max_length),
        "pad_token": tokenizer.pad_token,
        "pad_token_id": tokenizer.pad_token_id,
        "intra_op_threads": spec.resolved_threads_per_instance(),
        "allow_spinning": False,
        "length_bucketing": True,
        "precision": spec.precision,
    }
    with tempfile.TemporaryDirectory(prefix="trb-export-") as scratch_name:
        scratch = Path(scratch_name)
        fp32_model = export_encoder(source.path, scratch / "onnx")
        keep_fp32 = INT8_KEEP_FP32.get(source.model_type, ()) if spec.precision == "int8" else ()
        served_model = apply_precision(fp32_model, spec.precision, scratch, keep_fp32, spec.int8())
        tokenizer.save_pretrained(str(scratch / "tokenizer"))
        tokenizer_file = scratch / "tokenizer" / "tokenizer.json"

        settings = EmbedderSettings.from_parameters(
            {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in parameters.items()}
        )
        embedder = TextEmbedder(str(served_model), str(tokenizer_file), settings)
        candidate_hidden, candidate_mask = embedder.encode(SAMPLE_TEXTS)
        candidate = (candidate_hidden, candidate_mask, embedder.embed(SAMPLE_TEXTS))  # the served path
        reference = reference_embeddings(
            source.path,
            SAMPLE_TEXTS,
            pipeline.pooling,
            pipeline.normalize,
            pipeline.max_length,
            spec.allow_pickle,
        )
        report = compare(spec.precision, reference, candidate)
        dimension = int(candidate[2].shape[1])

        model_dir = staging / name
        files = {"model.onnx": served_model, "tokenizer.json": tokenizer_file}
        lay_out_model(model_dir, files, "embedding", TEMPLATE_FILES, WARMUP_SENTENCE)
    config_text = model_config.render(model_configuration(spec, name, dimension, parameters))
    (model_dir / "config.pbtxt").write_text(config_text, encoding="utf-8")
    return BuiltModel(model=embedding_facts(pipeline, dimension), verification=report.as_dict())


def embedding_facts(pipeline: Any, dimension: int) -> dict[str, Any]:
    """What trb.yaml records of a served embedding model, on either target."""
    return {
        "inputs": {INPUT_NAME: "TYPE_STRING [batch, 1] UTF-8 text"},
        "outputs": {OUTPUT_NAME: f"TYPE_FP32 [batch, {dimension}]"},
        "dimension": dimension,
        "pooling": pipeline.pooling,
        "normalize": pipeline.normalize,
        "max_length": pipeline.max_length,
        "pipeline_from_sentence_transformers": pipeline.from_sentence_transformers,
    }
