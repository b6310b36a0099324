"""Append sentence-transformers pooling (and L2 normalization) to an exported encoder's ONNX graph.

For the GPU target the model step is Triton's native onnxruntime backend, which runs a graph and
nothing else. With pooling inside the graph that step outputs EMBEDDING directly: one GPU step
instead of a GPU step plus a python-backend step that would copy [batch, seq, dim] token states to
the CPU and back through the ensemble, and TensorRT fuses the reductions into the engine. The nodes
are the ones `templates/embedding/text_embedding.pool` computes in NumPy; unit tests compare both.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from model_repo_builder.errors import ExportError

LOGGER = logging.getLogger(__name__)

HIDDEN_OUTPUT = "last_hidden_state"
MASK_INPUT = "attention_mask"


def append_pooling(source: Path, target: Path, pooling: str, normalize: bool, output_name: str) -> Path:
    """Write `target`: `source` whose only output is the pooled (normalized) embedding `output_name`."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    outputs = {output.name: output for output in graph.output}
    if HIDDEN_OUTPUT not in outputs or MASK_INPUT not in {i.name for i in graph.input}:
        raise ExportError(
            f"{source} has no {HIDDEN_OUTPUT!r} output or {MASK_INPUT!r} input to pool; "
            f"outputs: {sorted(outputs)}"
        )
    hidden_shape = outputs[HIDDEN_OUTPUT].type.tensor_type.shape.dim
    dimension = hidden_shape[-1].dim_value if hidden_shape else 0
    if hidden_shape and outputs[HIDDEN_OUTPUT].type.tensor_type.elem_type != TensorProto.FLOAT:
        raise ExportError(f"{source}: {HIDDEN_OUTPUT!r} must be float32 to pool in the graph")

    def constant(name: str, value: np.ndarray) -> str:
        graph.initializer.append(numpy_helper.from_array(value, name=f"trb_pool/{name}"))
        return f"trb_pool/{name}"

    nodes = []

    def node(op: str, inputs: list[str], name: str, **attributes: Any) -> str:
        nodes.append(
            helper.make_node(op, inputs, [f"trb_pool/{name}"], name=f"trb_pool/{name}", **attributes)
        )
        return f"trb_pool/{name}"

    mask = node("Cast", [MASK_INPUT], "mask", to=TensorProto.FLOAT)  # [batch, seq]
    mask3 = node("Unsqueeze", [mask, constant("last_axis", np.array([-1], np.int64))], "mask3")
    seq_axis = constant("seq_axis", np.array([1], np.int64))
    if pooling in ("mean", "mean_sqrt_len"):
        summed = node(
            "ReduceSum", [node("Mul", [HIDDEN_OUTPUT, mask3], "masked"), seq_axis], "sum", keepdims=0
        )
        count = node("ReduceSum", [mask, seq_axis], "count", keepdims=1)
        count = node("Max", [count, constant("tiny", np.array(1e-9, np.float32))], "count_clamped")
        if pooling == "mean_sqrt_len":
            count = node("Sqrt", [count], "sqrt_count")
        pooled = node("Div", [summed, count], "pooled")
    elif pooling == "cls":
        pooled = node("Gather", [HIDDEN_OUTPUT, constant("first", np.array(0, np.int64))], "pooled", axis=1)
    elif pooling == "max":
        kept = node("Greater", [mask3, constant("zero", np.array(0.0, np.float32))], "kept")
        floor = constant("floor", np.array(-1e9, np.float32))
        masked = node("Where", [kept, HIDDEN_OUTPUT, floor], "masked")
        pooled = node("ReduceMax", [masked], "pooled", axes=[1], keepdims=0)  # opset 17: axes attribute
    else:
        raise ExportError(f"pooling {pooling!r} cannot be expressed in the graph")
    if normalize:
        norm = node("ReduceL2", [pooled], "norm", axes=[1], keepdims=1)
        norm = node("Max", [norm, constant("epsilon", np.array(1e-12, np.float32))], "norm_clamped")
        pooled = node("Div", [pooled, norm], "normalized")
    nodes.append(helper.make_node("Identity", [pooled], [output_name], name="trb_pool/output"))
    graph.node.extend(nodes)
    batch = hidden_shape[0].dim_param or "batch_size" if hidden_shape else "batch_size"
    embedding = helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [batch, dimension or None])
    del graph.output[:]
    graph.output.append(embedding)
    try:
        onnx.checker.check_model(model)
        onnx.save(model, str(target))
    except Exception as error:  # onnx raises plain Exceptions
        raise ExportError(f"adding {pooling} pooling to {source} failed: {error}") from error
    LOGGER.info(
        "pooling (%s%s) added to the graph: %s", pooling, ", normalized" if normalize else "", target.name
    )
    return target
