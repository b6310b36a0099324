"""Reduce an fp32 ONNX model to int8 (ONNX Runtime dynamic quantization) or fp16.

int8 uses per-channel weights: per-tensor scales (the ONNX Runtime default) cost MiniLM's
embeddings about 4% cosine similarity, per-channel keeps them above 0.99 at the same speed; the
`Int8Scheme` below decides their type and range so that every x86 CPU computes the same. Embedding
tables (Gather) are quantized too: MiniLM's int8 repository holds 25 MB of ONNX instead of 60, at the
same speed, for a mean cosine of 0.9922 instead of 0.9927 (bench/results/startup.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from model_repo_builder.errors import ExportError

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Int8Scheme:
    """How weights are quantized, and whether the integer products can saturate on some CPUs.

    Activations are always quantized to uint8 at run time. With int8 weights (U8S8) ONNX Runtime's
    x86 kernels without VNNI multiply with VPMADDUBSW, which adds pairs of u8×s8 products into a
    saturating int16: two products of 255 × 127 overflow it, so the same model computes different
    numbers on an AVX2 or AVX-512 CPU without VNNI than on one with it. 7-bit weights
    (`reduce_range`) or uint8 weights (U8U8, widened to int16 before multiplying) cannot overflow,
    so every x86 kernel path computes exactly the same integers.
    """

    name: str
    weight_type: str  # onnxruntime.quantization.QuantType member name
    reduce_range: bool
    saturation_free: bool


INT8_SCHEMES = {
    scheme.name: scheme
    for scheme in (
        Int8Scheme(name="s8", weight_type="QInt8", reduce_range=False, saturation_free=False),
        Int8Scheme(name="s8-reduced", weight_type="QInt8", reduce_range=True, saturation_free=True),
        Int8Scheme(name="u8", weight_type="QUInt8", reduce_range=False, saturation_free=True),
    )
}
# `--int8-scheme auto` tries these in order and keeps the first that passes verification. Measured
# (bench/results/int8_portability.md, MiniLM batch 8, 2 threads, VNNI CPU, a shared machine):
# fp32 566 texts/s, s8 838, s8-reduced 880, u8 774; flan-t5-small's parts 0.50× fp32's time with
# s8-reduced, 0.86× with u8. u8 keeps more accuracy (top-1 agreement 0.90 vs 0.85-0.88 on T5s).
# Both compute the same integers on every x86 CPU, so the verified figures hold everywhere.
AUTO_INT8_SCHEMES = ("s8-reduced", "u8")
INT8_SCHEME_CHOICES = ("auto", *INT8_SCHEMES)
DEFAULT_INT8_SCHEME = INT8_SCHEMES[AUTO_INT8_SCHEMES[0]]


def quantize_int8(
    source: Path, target: Path, keep_fp32: tuple[str, ...] = (), scheme: Int8Scheme = DEFAULT_INT8_SCHEME
) -> Path:
    """Dynamic int8 quantization of MatMul/Gemm weights (per output channel) and embedding tables.

    Nodes named in `keep_fp32` stay fp32.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    LOGGER.info("quantizing %s to int8 (dynamic, per-channel, %s weights)", source.name, scheme.name)
    try:
        quantize_dynamic(
            str(source),
            str(target),
            per_channel=True,
            reduce_range=scheme.reduce_range,
            weight_type=QuantType[scheme.weight_type],
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


def apply_precision(
    fp32_model: Path,
    precision: str,
    output_dir: Path,
    keep_fp32: tuple[str, ...] = (),
    int8_scheme: Int8Scheme = DEFAULT_INT8_SCHEME,
) -> Path:
    """Return the model file for `precision`: the fp32 file itself, or a converted copy."""
    target = output_dir / f"model.{precision}.onnx"
    if precision == "fp32":
        return fp32_model
    if precision == "int8":
        return quantize_int8(fp32_model, target, keep_fp32, int8_scheme)
    return convert_fp16(fp32_model, target, keep_fp32)
