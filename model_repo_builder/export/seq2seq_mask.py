"""Give the exported decoder-with-past a self-attention mask, so sequences at different steps share a batch.

optimum's T5 decoder-with-past has no decoder attention mask: every row's self-attention cache must
be the same length. Continuous batching puts sequences of different lengths in one batch by
left-padding the shorter caches; this adds the input that hides those padded slots.

The new input `decoder_attention_bias` [batch, 1, 1, past + 1] (float32, 0 for a real position and a
large negative number for a padded one) is added to the scores of every self-attention softmax. T5's
position bias depends only on key position minus query position, and every row's query is the last
position, so left padding leaves each real key's bias unchanged; masked slots get exactly zero weight.
With a bias of zeros the graph computes what it computed before.
"""

from __future__ import annotations

import logging
from pathlib import Path

from model_repo_builder.errors import ExportError
from model_repo_builder.templates.seq2seq.generation import SELF_ATTENTION_BIAS_INPUT

LOGGER = logging.getLogger(__name__)

_PRESENT_VALUE = ".decoder.value"


def add_self_attention_mask(path: Path) -> int:
    """Add `decoder_attention_bias` to the decoder-with-past ONNX file at `path` in place; return layers."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    graph = model.graph
    if any(item.name == SELF_ATTENTION_BIAS_INPUT for item in graph.input):
        return 0
    producers = {output: node for node in graph.node for output in node.output}
    # A self-attention softmax is the one whose weights multiply the layer's present self-attention values.
    softmaxes = []
    for node in graph.node:
        if node.op_type != "MatMul" or not any(
            name.startswith("present.") and name.endswith(_PRESENT_VALUE) for name in node.input
        ):
            continue
        weights = producers.get(node.input[0])
        if weights is None or weights.op_type != "Softmax":
            raise ExportError(f"{path}: self-attention values of {node.name} are not weighted by a Softmax")
        softmaxes.append(weights)
    layers = sum(
        1 for item in graph.output if item.name.startswith("present.") and item.name.endswith(_PRESENT_VALUE)
    )
    if not softmaxes or len(softmaxes) != layers:
        raise ExportError(
            f"{path}: found {len(softmaxes)} self-attention softmaxes for {layers} decoder layers; "
            "cannot add the self-attention mask continuous batching needs"
        )
    graph.input.append(
        helper.make_tensor_value_info(
            SELF_ATTENTION_BIAS_INPUT,
            TensorProto.FLOAT,
            ["batch_size", 1, 1, "total_decoder_sequence_length"],
        )
    )
    for index, softmax in enumerate(softmaxes):
        masked = f"{softmax.input[0]}/masked"
        graph.node.insert(
            list(graph.node).index(softmax),
            helper.make_node(
                "Add", [softmax.input[0], SELF_ATTENTION_BIAS_INPUT], [masked], name=f"/trb/self_mask_{index}"
            ),
        )
        softmax.input[0] = masked
    onnx.save(model, str(path))
    LOGGER.info("added a self-attention mask to %d decoder layers of %s", len(softmaxes), path)
    return len(softmaxes)
