"""Export an encoder-decoder (T5, BART family) to four ONNX files and convert them to the served precision.

optimum's exporter (task `text2text-generation-with-past`, no post-processing) writes the encoder, the
decoder without past (first step; it also returns the cross-attention keys/values) and the decoder
with past (every later step). For continuous batching the decoder with past gets a self-attention
mask input (export/seq2seq_mask.py) and, where it embeds absolute positions (BART family), a
position input (export/seq2seq_positions.py); the cross-attention projections of the first-step
decoder become a model of their own (export/seq2seq_cross_cache.py). The decoders are kept as two files
rather than merged into one graph with an `If` node: the serving loop calls each for what it is,
and each is verified on its own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from model_repo_builder.errors import ExportError
from model_repo_builder.export.quantize import DEFAULT_INT8_SCHEME, Int8Scheme, apply_precision
from model_repo_builder.export.seq2seq_cross_cache import write_cross_cache_model
from model_repo_builder.export.seq2seq_mask import add_self_attention_mask
from model_repo_builder.export.seq2seq_positions import add_position_input
from model_repo_builder.templates.seq2seq.generation import (
    CROSS_CACHE_FILE,
    DECODER_FILE,
    DECODER_WITH_PAST_FILE,
    ENCODER_FILE,
)

LOGGER = logging.getLogger(__name__)

# optimum recommends opset ≥ 18 for T5.
OPSET = 18
EXPORT_TASK = "text2text-generation-with-past"


@dataclass(frozen=True, kw_only=True)
class Seq2SeqOnnx:
    """The ONNX files that make up a served encoder-decoder model."""

    encoder: Path
    decoder: Path
    decoder_with_past: Path
    cross_cache: Path

    @classmethod
    def in_directory(cls, directory: Path) -> Seq2SeqOnnx:
        """The files under their served names in `directory`."""
        return cls(
            encoder=directory / ENCODER_FILE,
            decoder=directory / DECODER_FILE,
            decoder_with_past=directory / DECODER_WITH_PAST_FILE,
            cross_cache=directory / CROSS_CACHE_FILE,
        )

    def files(self) -> dict[str, Path]:
        """Each part keyed by the file name the served model loads it from."""
        return {
            ENCODER_FILE: self.encoder,
            DECODER_FILE: self.decoder,
            DECODER_WITH_PAST_FILE: self.decoder_with_past,
            CROSS_CACHE_FILE: self.cross_cache,
        }


def export_seq2seq(model_dir: Path, output_dir: Path) -> Seq2SeqOnnx:
    """Write the ONNX files of a served encoder-decoder into `output_dir`; return their paths."""
    from optimum.exporters.onnx import main_export

    LOGGER.info("exporting %s to ONNX (%s, opset %d)", model_dir, EXPORT_TASK, OPSET)
    try:
        main_export(
            str(model_dir),
            output=str(output_dir),
            task=EXPORT_TASK,
            library_name="transformers",
            opset=OPSET,
            do_validation=False,
            no_post_process=True,
            trust_remote_code=False,
            device="cpu",
        )
    except Exception as error:  # optimum wraps torch/onnx failures in many types
        raise ExportError(f"ONNX export of {model_dir} failed: {type(error).__name__}: {error}") from error
    exported = Seq2SeqOnnx.in_directory(output_dir)
    missing = [
        name for name, path in exported.files().items() if name != CROSS_CACHE_FILE and not path.is_file()
    ]
    if missing:
        raise ExportError(f"ONNX export of {model_dir} did not produce {', '.join(missing)} in {output_dir}")
    add_self_attention_mask(exported.decoder_with_past)
    add_position_input(exported.decoder_with_past)
    write_cross_cache_model(exported.decoder, exported.cross_cache)
    return exported


def convert_seq2seq(
    exported: Seq2SeqOnnx,
    precision: str,
    output_dir: Path,
    keep_fp32: tuple[str, ...] = (),
    int8_scheme: Int8Scheme = DEFAULT_INT8_SCHEME,
) -> Seq2SeqOnnx:
    """Convert each part to `precision` (fp32 returns `exported` itself); `keep_fp32` names nodes to skip."""
    if precision == "fp32":
        return exported
    converted = {}
    for name, path in exported.files().items():
        part_dir = output_dir / name.removesuffix(".onnx")
        part_dir.mkdir(parents=True, exist_ok=True)
        converted[name] = apply_precision(path, precision, part_dir, keep_fp32, int8_scheme)
    return Seq2SeqOnnx(
        encoder=converted[ENCODER_FILE],
        decoder=converted[DECODER_FILE],
        decoder_with_past=converted[DECODER_WITH_PAST_FILE],
        cross_cache=converted[CROSS_CACHE_FILE],
    )
