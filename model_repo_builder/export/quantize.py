"""Reduce an fp32 ONNX model to int8 (ONNX Runtime dynamic quantization) or fp16.

int8 uses per-channel QInt8 weights: per-tensor scales (the ONNX Runtime default) cost MiniLM's
embeddings about 4% cosine similarity, per-channel keeps them above 0.99 at the same speed. Embedding
tables (Gather) are quantized too: MiniLM's int8 repository holds 25 MB of ONNX instead of 60, at the
same speed, for a mean cosine of 0.9922 instead of 0.9927 (bench/results/startup.md).
"""

from __future__ import annotations

import logging
from pathlib import Path

from model_repo_builder.errors import ExportError

LOGGER = logging.getLogger(__name__)


def quantize_int8(source: Path, target: Path, keep_fp32: tuple[str, ...] = ()) -> Path:
    """Dynamic int8 quantization of MatMul/Gemm weights (per output channel) and embedding tables.

    Nodes named in `keep_fp32` stay fp32.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    LOGGER.info("quantizing %s to int8 (dynamic, per-channel)", source.name)
    try:
        quantize_dynamic(
            str(source),
            str(target),
            per_channel=True,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Gemm", "Gather"],
            nodes_to_exclude=list(keep_fp32),
        )
    except Exception as error:  # onnxruntime.quantization raises plain Exceptions
        raise ExportError(f"int8 quantization of {source} failed: {error}") from error
    return target


def convert_fp16(source: Path, target: Path, keep_fp32: tuple[str, ...] = ()) -> Path:
    """Convert weights and compute to fp16; inputs and outputs keep their types."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    LOGGER.info("converting %s to fp16", source.name)
    try:
        model = onnx.load(str(source))
        converted = convert_float_to_float16(
            model, keep_io_types=True, node_block_list=list(keep_fp32) or None
        )
        onnx.save(converted, str(target))
    except Exception as error:  # onnx raises plain Exceptions
        raise ExportError(f"fp16 conversion of {source} failed: {error}") from error
    return target


CONVERTERS = {"int8": quantize_int8, "fp16": convert_fp16}


def apply_precision(
    fp32_model: Path, precision: str, output_dir: Path, keep_fp32: tuple[str, ...] = ()
) -> Path:
    """Return the model file for `precision`: the fp32 file itself, or a converted copy."""
    if precision == "fp32":
        return fp32_model
    return CONVERTERS[precision](fp32_model, output_dir / f"model.{precision}.onnx", keep_fp32)
