"""Cut the cross-attention key/value projections out of the first-step decoder into a model of their own.

The decoder without past computes every layer's cross-attention keys and values from the encoder's
hidden states, and runs the first decoder step with them. Continuous batching wants the first part
alone: with the cross-attention cache of a new sequence in hand, its first step is just one more row
of the running batch's decoder-with-past call (an empty self-attention cache, fully masked), instead
of a separate decoder call per group of newcomers that costs about as much as a step of the whole
batch, because on CPU a decoder call at small batch is bound by reading the weights.

The new graph takes `encoder_hidden_states` [batch, encoder_length, d_model] and returns
`past_key_values.<layer>.encoder.{key,value}` [batch, heads, encoder_length, head_dim], named as the
decoder-with-past's inputs. It reuses the decoder's own projection weights (and biases, which BART's
projections have and T5's do not) and reshapes.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from model_repo_builder.errors import ExportError

LOGGER = logging.getLogger(__name__)

HIDDEN_INPUT = "encoder_hidden_states"
_CROSS_OUTPUT = re.compile(r"^present\.(\d+)\.encoder\.(key|value)$")


def write_cross_cache_model(decoder_path: Path, output_path: Path) -> int:
    """Write the cross-attention cache model of the decoder at `decoder_path`; return its tensor count."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    decoder = onnx.load(str(decoder_path))
    graph = decoder.graph
    producers = {output: node for node in graph.node for output in node.output}
    initializers = {item.name: item for item in graph.initializer}
    cross_outputs = [(item, match) for item in graph.output if (match := _CROSS_OUTPUT.match(item.name))]
    if not cross_outputs:
        raise ExportError(f"{decoder_path} returns no present.<layer>.encoder.* cross-attention cache")

    nodes, weights, outputs = [], [], []
    for output, match in cross_outputs:
        weight, bias = _projection(output.name, producers, initializers, decoder_path)
        dims = [dim.dim_value for dim in output.type.tensor_type.shape.dim]
        if len(dims) != 4 or not dims[1] or not dims[3]:
            raise ExportError(f"{decoder_path}: {output.name} is not [batch, heads, length, head_dim]")
        heads, head_dim = dims[1], dims[3]
        layer, kind = match.groups()
        served = f"past_key_values.{layer}.encoder.{kind}"  # the decoder-with-past input it feeds
        stem = f"cross_{layer}_{kind}"
        weights.append(weight)
        nodes.append(helper.make_node("MatMul", [HIDDEN_INPUT, weight.name], [f"{stem}_projected"]))
        if bias is not None:
            bias_copy = numpy_helper.from_array(numpy_helper.to_array(bias), f"{stem}_bias")
            weights.append(bias_copy)
            nodes.append(helper.make_node("Add", [f"{stem}_projected", bias_copy.name], [f"{stem}_biased"]))
        projected = f"{stem}_biased" if bias is not None else f"{stem}_projected"
        nodes += [
            helper.make_node("Reshape", [projected, "heads_shape"], [f"{stem}_split"]),
            helper.make_node("Transpose", [f"{stem}_split"], [served], perm=[0, 2, 1, 3]),
        ]
        outputs.append(
            helper.make_tensor_value_info(
                served, TensorProto.FLOAT, ["batch_size", heads, "encoder_sequence_length", head_dim]
            )
        )
    hidden_type = next(item for item in graph.input if item.name == HIDDEN_INPUT)
    heads_shape = numpy_helper.from_array(np.array([0, -1, heads, head_dim], dtype=np.int64), "heads_shape")
    model = helper.make_model(
        helper.make_graph(nodes, "cross_attention_cache", [hidden_type], outputs, [heads_shape, *weights]),
        opset_imports=list(decoder.opset_import),
        ir_version=decoder.ir_version,
    )
    onnx.checker.check_model(model)
    onnx.save(model, str(output_path))
    LOGGER.info("wrote the cross-attention cache model (%d tensors) to %s", len(outputs), output_path)
    return len(outputs)


def _projection(
    output: str, producers: dict[str, Any], initializers: dict[str, Any], decoder_path: Path
) -> tuple[Any, Any | None]:
    """Weight and bias (None without one) projecting the encoder states into `output`.

    The chain is Transpose(Reshape(MatMul(states, weight))) or, with a bias, Transpose(Reshape(
    Add(MatMul(states, weight), bias))); the exporter may route a bias through an Identity when two
    layers' biases hold equal values.
    """
    chain: list[str] = []
    bias = None
    name = output
    while name in producers and len(chain) < 5:
        node = producers[name]
        chain.append(node.op_type)
        if node.op_type == "Add" and chain == ["Transpose", "Reshape", "Add"]:
            operands = [_constant(item, producers, initializers) for item in node.input]
            constant = [index for index, value in enumerate(operands) if value is not None]
            if len(constant) != 1:
                break
            bias = operands[constant[0]]
            name = node.input[1 - constant[0]]
            continue
        if node.op_type == "MatMul":
            projects = node.input[0] == HIDDEN_INPUT and node.input[1] in initializers
            expected = ["Transpose", "Reshape", *(["Add"] if bias is not None else []), "MatMul"]
            if projects and chain == expected:
                return initializers[node.input[1]], bias
            break
        name = node.input[0]
    raise ExportError(
        f"{decoder_path}: {output} is not computed as Transpose(Reshape(MatMul({HIDDEN_INPUT}, weight) "
        f"[+ bias])) (found {' ← '.join(chain) or 'nothing'}); this decoder cannot be served with "
        "--batching continuous, build with --batching request"
    )


def _constant(name: str, producers: dict[str, Any], initializers: dict[str, Any]) -> Any | None:
    """The initializer `name` is, directly or through Identity nodes; None for a computed tensor."""
    while name not in initializers and name in producers and producers[name].op_type == "Identity":
        name = producers[name].input[0]
    return initializers.get(name)
