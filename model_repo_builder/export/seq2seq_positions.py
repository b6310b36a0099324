"""Give a decoder-with-past with absolute position embeddings (BART, mBART, Marian) one position per row.

optimum's BART-family decoder-with-past derives the new token's position from the length of the
self-attention cache (`Range(past, past + 1)`, plus BART's offset of 2, then a Gather from the
position-embedding table), so every row of a batch gets the same position. Continuous batching
left-pads the shorter caches, and a row that joined later would be embedded at the wrong position.
This replaces the derived position with an input, `decoder_position_ids` [batch, 1] (int64): the
number of real tokens already in that row's cache. Fed the cache length, the graph computes what it
computed before. T5 needs none of this: its position bias is relative (see export/seq2seq_mask.py).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from model_repo_builder.errors import ExportError
from model_repo_builder.templates.seq2seq.generation import POSITION_IDS_INPUT

LOGGER = logging.getLogger(__name__)

_POSITION_TABLE = "embed_positions"


def add_position_input(path: Path) -> bool:
    """Feed the position embedding of the decoder-with-past at `path` from `decoder_position_ids`.

    Rewrites the file in place; returns False when the graph has no position-embedding table (T5).
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    graph = model.graph
    if any(item.name == POSITION_IDS_INPUT for item in graph.input):
        return True
    gathers = _position_gathers(graph)
    if not gathers:
        return False
    if len(gathers) != 1:
        raise ExportError(f"{path}: {len(gathers)} position-embedding lookups; expected one")
    producers = {output: node for node in graph.node for output in node.output}
    initializers = {item.name for item in graph.initializer}
    consumer, slot = _position_consumer(gathers[0], producers, initializers, path)
    consumer.input[slot] = POSITION_IDS_INPUT
    graph.input.append(
        helper.make_tensor_value_info(POSITION_IDS_INPUT, TensorProto.INT64, ["batch_size", 1])
    )
    onnx.save(model, str(path))
    LOGGER.info("the position embedding of %s now reads %s", path, POSITION_IDS_INPUT)
    return True


def _position_gathers(graph: Any) -> list[Any]:
    initializers = {item.name for item in graph.initializer}
    return [
        node
        for node in graph.node
        if node.op_type == "Gather" and node.input[0] in initializers and _POSITION_TABLE in node.input[0]
    ]


def _position_consumer(
    gather: Any, producers: dict[str, Any], initializers: set[str], path: Path
) -> tuple[Any, int]:
    """The node and input slot where the cache-derived positions enter the lookup.

    The lookup's indices are the positions, possibly unsqueezed and offset by constants
    (`Add(Unsqueeze(Range(...)), 2)` for BART, `Range(...)` for Marian); the positions tensor is
    the one just below the constant offsets, and it must come from a Range.
    """
    consumer, slot = gather, 1
    name = gather.input[1]
    while (node := producers.get(name)) is not None and node.op_type == "Add":
        constant = [
            index for index, item in enumerate(node.input) if _is_constant(item, producers, initializers)
        ]
        if len(constant) != 1:
            break
        consumer, slot = node, 1 - constant[0]
        name = node.input[slot]
    source = producers.get(name)
    if source is not None and source.op_type == "Unsqueeze":
        source = producers.get(source.input[0])
    if source is None or source.op_type != "Range":
        raise ExportError(
            f"{path}: the decoder's positions are not derived from the cache length "
            f"(found {source.op_type if source else 'an input'}); cannot give each row its own position"
        )
    return consumer, slot


def _is_constant(name: str, producers: dict[str, Any], initializers: set[str]) -> bool:
    return name in initializers or (name in producers and producers[name].op_type == "Constant")
