"""Builder for GPU-target embedding repositories: an ensemble around Triton's native onnxruntime backend.

    <name>            ensemble: TEXT → EMBEDDING, the contract CPU repositories serve
      <name>_tokenize python backend, KIND_CPU: TEXT → input_ids, attention_mask(, token_type_ids)
      <name>_model    onnxruntime backend, KIND_GPU, TensorRT accelerator: token tensors → EMBEDDING

Pooling and normalization are nodes of the ONNX graph (`export/pooling_graph.py`), so the GPU step
outputs the embedding itself and no token states cross back to the CPU. The graph is fp32 ONNX;
with `--precision fp16` TensorRT builds an FP16 engine from it when the model loads on the GPU.
What the build verifies, on CPU, is that graph run by ONNX Runtime behind the served tokenizer
step, against the source model in PyTorch; the TensorRT engine itself is only built on a GPU.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from model_repo_builder.errors import UnsupportedModelError
from model_repo_builder.models.source import ResolvedModel, load_tokenizer
from model_repo_builder.repository import config as model_config
from model_repo_builder.repository.embedding import (
    INPUT_NAME,
    OUTPUT_NAME,
    WARMUP_SENTENCE,
    BuiltModel,
    embedding_facts,
    read_pipeline_settings,
)
from model_repo_builder.repository.writer import lay_out_model
from model_repo_builder.spec import BuildSpec
from model_repo_builder.templates.common.trb_runtime import default_max_text_bytes

LOGGER = logging.getLogger(__name__)

TOKENIZE_TEMPLATES = ("model.py", "token_inputs.py")
INT8_NOT_YET = (
    "not yet: `--precision int8 --target gpu` needs a statically quantized (QDQ) ONNX model with "
    "calibration data, which trb does not produce yet; build fp16 (TensorRT FP16 engine) or fp32"
)


def tokenize_step_name(name: str) -> str:
    """The ensemble's tokenizer step."""
    return f"{name}_tokenize"


def model_step_name(name: str) -> str:
    """The ensemble's model step (native onnxruntime backend)."""
    return f"{name}_model"


def token_tensors(names: list[str], length: int) -> list[dict[str, Any]]:
    """Config entries of the token tensors between the two steps."""
    return [{"name": name, "data_type": "TYPE_INT64", "dims": [length]} for name in names]


def tokenize_configuration(
    spec: BuildSpec, name: str, outputs: list[str], parameters: dict[str, str]
) -> dict[str, Any]:
    """config.pbtxt of the tokenizer step (python backend, on CPU: tokenizers is CPU code)."""
    scheduling = model_config.scheduling(spec)
    return {
        "name": tokenize_step_name(name),
        "backend": "python",
        **scheduling,
        "instance_group": [{"count": spec.instance_count, "kind": model_config.INSTANCE_KINDS["cpu"]}],
        "input": [{"name": INPUT_NAME, "data_type": "TYPE_STRING", "dims": [1]}],
        "output": token_tensors(outputs, int(parameters["max_length"])),
        "parameters": model_config.string_parameters(dict(parameters)),
        "model_warmup": model_config.text_warmup(INPUT_NAME, spec.max_batch_size),
    }


def model_step_configuration(
    spec: BuildSpec, name: str, inputs: list[str], length: int, dimension: int
) -> dict[str, Any]:
    """config.pbtxt of the model step: onnxruntime backend, KIND_GPU, TensorRT accelerator."""
    tensors = token_tensors(inputs, length)
    return {
        "name": model_step_name(name),
        "backend": "onnxruntime",
        "default_model_filename": "model.onnx",
        **model_config.scheduling(spec),
        "instance_group": model_config.gpu_instance_group(spec),
        "input": tensors,
        "output": [{"name": OUTPUT_NAME, "data_type": "TYPE_FP32", "dims": [dimension]}],
        "optimization": model_config.tensorrt_accelerator(
            model_name=model_step_name(name),
            precision=spec.precision,
            inputs=inputs,
            max_batch_size=spec.max_batch_size,
            sequence_length=length,
        ),
        "model_warmup": model_config.zero_warmup(tensors, spec.max_batch_size),
    }


def ensemble_configuration(spec: BuildSpec, name: str, tokens: list[str], dimension: int) -> dict[str, Any]:
    """config.pbtxt of the ensemble clients call: TEXT in, EMBEDDING out, under the model's name."""
    identity = {tensor: tensor for tensor in tokens}
    return {
        "name": name,
        "platform": "ensemble",
        "max_batch_size": spec.max_batch_size,
        "input": [{"name": INPUT_NAME, "data_type": "TYPE_STRING", "dims": [1]}],
        "output": [{"name": OUTPUT_NAME, "data_type": "TYPE_FP32", "dims": [dimension]}],
        "ensemble_scheduling": {
            "step": [
                model_config.ensemble_step(tokenize_step_name(name), {INPUT_NAME: INPUT_NAME}, identity),
                model_config.ensemble_step(model_step_name(name), identity, {OUTPUT_NAME: OUTPUT_NAME}),
            ]
        },
    }


def build_gpu_embedding(spec: BuildSpec, source: ResolvedModel, name: str, staging: Path) -> BuiltModel:
    """Export with pooling in the graph, verify on CPU, and lay out the three models under `staging`."""
    from model_repo_builder.export.onnx_export import export_encoder
    from model_repo_builder.export.pooling_graph import append_pooling
    from model_repo_builder.export.verify import SAMPLE_TEXTS, compare_pooled, reference_embeddings
    from model_repo_builder.templates.common.trb_runtime import onnx_session
    from model_repo_builder.templates.ensemble_tokenize.token_inputs import TokenInputs, TokenizerSettings

    if spec.precision == "int8":
        raise UnsupportedModelError(INT8_NOT_YET)
    if spec.pre or spec.post:
        raise UnsupportedModelError("not yet: `--pre` / `--post` steps with `--target gpu`")
    pipeline = read_pipeline_settings(source, spec.max_length)
    tokenizer = load_tokenizer(source.path)
    if tokenizer.pad_token is None:
        raise UnsupportedModelError(f"the tokenizer of {source.path} has no padding token")
    with tempfile.TemporaryDirectory(prefix="trb-export-") as scratch_name:
        scratch = Path(scratch_name)
        exported = export_encoder(source.path, scratch / "onnx")
        pooled_model = append_pooling(
            exported, scratch / "pooled.onnx", pipeline.pooling, pipeline.normalize, OUTPUT_NAME
        )
        tokenizer.save_pretrained(str(scratch / "tokenizer"))
        tokenizer_file = scratch / "tokenizer" / "tokenizer.json"
        session = onnx_session(str(pooled_model), 0, False, ("CPUExecutionProvider",))
        inputs = [tensor.name for tensor in session.get_inputs()]
        settings = TokenizerSettings(
            max_length=pipeline.max_length,
            max_text_bytes=spec.max_text_bytes or default_max_text_bytes(pipeline.max_length),
            pad_token=tokenizer.pad_token,
            pad_token_id=int(tokenizer.pad_token_id),
            outputs=tuple(inputs),
        )
        tensors = TokenInputs(str(tokenizer_file), settings).tokenize(SAMPLE_TEXTS)
        (embeddings,) = session.run([OUTPUT_NAME], tensors)
        reference = reference_embeddings(
            source.path,
            SAMPLE_TEXTS,
            pipeline.pooling,
            pipeline.normalize,
            pipeline.max_length,
            spec.allow_pickle,
        )
        # The graph is fp32 whatever TensorRT later makes of it: it is held to fp32's tolerance.
        report = compare_pooled("fp32", reference, tensors["attention_mask"], embeddings)
        dimension = int(embeddings.shape[1])

        tokenize_dir = staging / tokenize_step_name(name)
        lay_out_model(
            tokenize_dir,
            {"tokenizer.json": tokenizer_file},
            "ensemble_tokenize",
            TOKENIZE_TEMPLATES,
            WARMUP_SENTENCE,
        )
        model_dir = staging / model_step_name(name)
        (model_dir / "1").mkdir(parents=True)
        shutil.copy2(pooled_model, model_dir / "1" / "model.onnx")
        (staging / name / "1").mkdir(parents=True)  # an ensemble's version folder is empty
    configs = {
        tokenize_dir: tokenize_configuration(spec, name, inputs, settings.to_parameters()),
        model_dir: model_step_configuration(spec, name, inputs, pipeline.max_length, dimension),
        staging / name: ensemble_configuration(spec, name, inputs, dimension),
    }
    for folder, configuration in configs.items():
        (folder / "config.pbtxt").write_text(model_config.render(configuration), encoding="utf-8")
    precision_mode = model_config.TENSORRT_PRECISIONS[spec.precision]
    return BuiltModel(
        model={
            **embedding_facts(pipeline, dimension),
            "target": "gpu",
            "ensemble": [tokenize_step_name(name), model_step_name(name)],
            "model_step": {
                "backend": "onnxruntime",
                "accelerator": "tensorrt",
                "precision_mode": precision_mode,
                "token_inputs": inputs,
            },
        },
        verification={
            **report.as_dict(),
            "verified_graph": "fp32 ONNX with pooling, ONNX Runtime CPU, behind the served tokenizer step",
            "gpu_engine": f"TensorRT {precision_mode} engine, built on the GPU when the model loads; "
            "not verified by the build (scripts/gpu_check.sh compares it with the CPU reference)",
        },
    )
