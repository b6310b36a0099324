"""Builder for text-to-text generation repositories (T5, BART, mBART, Marian): prompt in, text out.

One python-backend model holds the tokenizer and four ONNX files (encoder, decoder, decoder with
past, cross-attention cache) and runs the decode loop itself (`templates/seq2seq/generation.py`).
Dynamic batching hands the model the requests that arrived together, and `--instances N` gives N
independent copies, each with cores / N ONNX Runtime threads. By default (`--batching continuous`)
each copy runs an iteration-level loop (templates/seq2seq/continuous.py): requests join the running
batch at the next decode step. With `--batching request` each execute() generates its requests as
one batch with a KV cache, to completion.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_repo_builder.errors import UnsupportedModelError
from model_repo_builder.models.generation import SourceGeneration, read_source_generation
from model_repo_builder.models.registry import INT8_KEEP_FP32
from model_repo_builder.models.source import ResolvedModel, load_tokenizer
from model_repo_builder.repository import config as model_config
from model_repo_builder.repository.embedding import BuiltModel
from model_repo_builder.spec import BuildSpec, validate_model_name
from model_repo_builder.templates import copy_templates
from model_repo_builder.templates.common.trb_runtime import default_max_text_bytes
from model_repo_builder.templates.seq2seq.generation import (
    MAX_NEW_TOKENS_INPUT,
    PARAMETER_INPUTS,
    PROMPT_INPUT,
    TEXT_OUTPUT,
    TOKEN_IDS_OUTPUT,
)

LOGGER = logging.getLogger(__name__)

TEMPLATE_FILES = ("model.py", "generation.py", "continuous.py", "beam.py", "token_rules.py")
STREAM_SUFFIX = "_stream"
# The streaming variant answers one prompt per request, token by token; one instance of it sits
# beside the batched model's `--instances`.
STREAM_INSTANCES = 1
WARMUP_PROMPT = "translate English to German: The warm-up request loads every kernel before traffic arrives."
WARMUP_NEW_TOKENS_FILE = "warmup_max_new_tokens"
WARMUP_NEW_TOKENS = 4
DEFAULT_MAX_NEW_TOKENS = 64
MAX_NEW_TOKENS_LIMIT = 512
DEFAULT_MAX_INPUT_TOKENS = 512
# Tokenizers without a real limit report a huge model_max_length (int(1e30)); ignore those.
_SANE_TOKENIZER_LIMIT = 100_000


@dataclass(frozen=True, kw_only=True)
class GenerationConfig:
    """Token ids, token rules and limits the served decode loop needs, read from the source model."""

    source: SourceGeneration
    max_input_tokens: int
    max_new_tokens_limit: int

    def parameters(self) -> dict[str, object]:
        """As python-backend parameters."""
        return {
            "decoder_start_token_id": self.source.decoder_start_token_id,
            "eos_token_id": self.source.eos_token_id,
            "pad_token_id": self.source.pad_token_id,
            **self.source.rules.to_parameters(),
            "max_input_tokens": self.max_input_tokens,
            "default_max_new_tokens": min(DEFAULT_MAX_NEW_TOKENS, self.max_new_tokens_limit),
            "max_new_tokens_limit": self.max_new_tokens_limit,
        }


def read_generation_config(
    source: ResolvedModel, tokenizer_limit: int, max_length: int | None
) -> GenerationConfig:
    """The source's generation config and the length limits (`--max-length` sets the prompt's).

    Models with absolute position embeddings (BART family, `max_position_embeddings`) cannot take a
    prompt, or make a sequence with the decoder start token, longer than their table.
    """
    limit = tokenizer_limit if 0 < tokenizer_limit <= _SANE_TOKENIZER_LIMIT else DEFAULT_MAX_INPUT_TOKENS
    positions = source.config.get("max_position_embeddings")
    new_tokens_limit = MAX_NEW_TOKENS_LIMIT
    if isinstance(positions, int) and positions > 1:
        if max_length is not None and max_length > positions:
            raise UnsupportedModelError(
                f"--max-length {max_length} is more than the {positions} positions "
                f"{source.path.name} embeds (max_position_embeddings); use at most {positions}"
            )
        limit = min(limit, positions)
        new_tokens_limit = min(new_tokens_limit, positions - 1)  # the decoder start token takes one
    generation = read_source_generation(source.path)
    for difference in generation.differences:
        LOGGER.warning("%s: %s", source.path, difference)
    return GenerationConfig(
        source=generation, max_input_tokens=max_length or limit, max_new_tokens_limit=new_tokens_limit
    )


def warmup(max_batch_size: int) -> list[dict[str, Any]]:
    """One real prompt at batch 1 and at the largest batch, generating a few tokens each."""
    samples = model_config.text_warmup(PROMPT_INPUT, max_batch_size)
    for sample in samples:
        sample["inputs"][MAX_NEW_TOKENS_INPUT] = {
            "data_type": "TYPE_INT32",
            "dims": [1],
            "input_data_file": WARMUP_NEW_TOKENS_FILE,
        }
    return samples


def model_configuration(
    spec: BuildSpec, name: str, parameters: dict[str, object], streaming: bool = False
) -> dict[str, Any]:
    """The config.pbtxt content for a text-to-text generation model (or its streaming variant)."""
    optional = [
        {"name": item.name, "data_type": item.data_type, "dims": [1], "optional": True}
        for item in PARAMETER_INPUTS
    ]
    config: dict[str, Any] = {
        "name": name,
        "backend": "python",
        **model_config.scheduling(spec, decoupled=streaming),
        "input": [{"name": PROMPT_INPUT, "data_type": "TYPE_STRING", "dims": [1]}, *optional],
        "output": [
            {"name": TEXT_OUTPUT, "data_type": "TYPE_STRING", "dims": [1]},
            {"name": TOKEN_IDS_OUTPUT, "data_type": "TYPE_INT64", "dims": [-1]},
        ],
        "parameters": model_config.string_parameters(parameters),
    }
    if streaming:
        config["model_transaction_policy"] = {"decoupled": True}
        config["instance_group"] = [{**config["instance_group"][0], "count": STREAM_INSTANCES}]
    else:
        config["model_warmup"] = warmup(spec.max_batch_size)
    return config


def write_streaming_model(spec: BuildSpec, name: str, parameters: dict[str, object], staging: Path) -> str:
    """Lay out `<name>_stream`, the decoupled variant that reads `<name>`'s ONNX files; return its name."""
    stream_name = f"{name}{STREAM_SUFFIX}"
    validate_model_name(stream_name)
    version_dir = staging / stream_name / "1"
    version_dir.mkdir(parents=True)
    copy_templates("seq2seq", TEMPLATE_FILES, version_dir)
    stream_parameters = {**parameters, "weights_model": name}
    config = model_configuration(spec, stream_name, stream_parameters, streaming=True)
    (staging / stream_name / "config.pbtxt").write_text(model_config.render(config), encoding="utf-8")
    return stream_name


def _as_strings(parameters: dict[str, object]) -> dict[str, str]:
    return {key: value["string_value"] for key, value in model_config.string_parameters(parameters).items()}


def build_seq2seq(spec: BuildSpec, source: ResolvedModel, name: str, staging: Path) -> BuiltModel:
    """Export, convert, verify and lay out a text-to-text generation model under `staging/name`."""
    from model_repo_builder.export.seq2seq_export import convert_seq2seq, export_seq2seq
    from model_repo_builder.export.seq2seq_verify import verify_seq2seq
    from model_repo_builder.templates.seq2seq.generation import GeneratorSettings, Seq2SeqGenerator

    tokenizer = load_tokenizer(source.path)
    generation = read_generation_config(source, int(tokenizer.model_max_length), spec.max_length)
    parameters: dict[str, object] = {
        **generation.parameters(),
        "max_text_bytes": spec.max_text_bytes or default_max_text_bytes(generation.max_input_tokens),
        "intra_op_threads": spec.resolved_threads_per_instance(),
        "allow_spinning": False,
        "precision": spec.precision,
        "batching": spec.batching,
        # Continuous batching admits new sequences while fewer than this many are running.
        "max_running": spec.max_batch_size,
    }
    with tempfile.TemporaryDirectory(prefix="trb-export-") as scratch_name:
        scratch = Path(scratch_name)
        exported = export_seq2seq(source.path, scratch / "onnx")
        keep_fp32 = INT8_KEEP_FP32.get(source.model_type, ()) if spec.precision == "int8" else ()
        served = convert_seq2seq(exported, spec.precision, scratch / spec.precision, keep_fp32, spec.int8())
        tokenizer.save_pretrained(str(scratch / "tokenizer"))
        tokenizer_file = scratch / "tokenizer" / "tokenizer.json"

        generator = Seq2SeqGenerator(
            {name: str(path) for name, path in served.files().items()},
            str(tokenizer_file),
            GeneratorSettings.from_parameters(_as_strings(parameters)),
        )
        continuous = spec.batching == "continuous"
        report = verify_seq2seq(generator, source.path, spec.precision, spec.allow_pickle, continuous)
        del generator

        model_dir = staging / name
        version_dir = model_dir / "1"
        version_dir.mkdir(parents=True)
        for file_name, path in served.files().items():
            shutil.move(str(path), version_dir / file_name)
        shutil.copy2(tokenizer_file, version_dir / "tokenizer.json")
        copy_templates("seq2seq", TEMPLATE_FILES, version_dir)
    warmup_dir = model_dir / "warmup"
    warmup_dir.mkdir()
    (warmup_dir / model_config.WARMUP_FILE).write_bytes(model_config.serialize_bytes_element(WARMUP_PROMPT))
    (warmup_dir / WARMUP_NEW_TOKENS_FILE).write_bytes(WARMUP_NEW_TOKENS.to_bytes(4, "little", signed=True))
    config_text = model_config.render(model_configuration(spec, name, parameters))
    (model_dir / "config.pbtxt").write_text(config_text, encoding="utf-8")
    stream_name = write_streaming_model(spec, name, parameters, staging)
    LOGGER.info("%s: %s", name, report.as_dict()["summary"])
    return BuiltModel(
        model={
            "inputs": {
                PROMPT_INPUT: "TYPE_STRING [batch, 1] UTF-8 prompt",
                **{item.name: f"{item.data_type} [batch, 1] optional" for item in PARAMETER_INPUTS},
            },
            "outputs": {
                TEXT_OUTPUT: "TYPE_STRING [batch, 1] generated text",
                TOKEN_IDS_OUTPUT: "TYPE_INT64 [batch, -1] generated ids, padded with -1",
            },
            "max_input_tokens": generation.max_input_tokens,
            "default_max_new_tokens": parameters["default_max_new_tokens"],
            "max_new_tokens_limit": generation.max_new_tokens_limit,
            "decoder_start_token_id": generation.source.decoder_start_token_id,
            "eos_token_id": generation.source.eos_token_id,
            "token_rules": generation.source.rules.to_parameters(),
            "generation_config_differences": list(generation.source.differences),
            "files": sorted(served.files()),
            "streaming_model": stream_name,
            "batching": spec.batching,
        },
        verification=report.as_dict(),
    )
