"""Export a Hugging Face encoder to ONNX with optimum: the bare transformer, or with its classification head.

For embeddings the export is the bare transformer (token embeddings): pooling and normalization are
done by the served model, from the sentence-transformers config, so one export path serves every
encoder, with or without a sentence-transformers wrapper. Classifiers and rerankers export their head
too (`logits`); the activation is applied by the served model.
"""

from __future__ import annotations

import logging
from pathlib import Path

from model_repo_builder.errors import ExportError

LOGGER = logging.getLogger(__name__)

OPSET = 17


def export_encoder(model_dir: Path, output_dir: Path, task: str = "feature-extraction") -> Path:
    """Write `output_dir/model.onnx` (optimum `task`), dynamic batch and sequence axes; return its path."""
    from optimum.exporters.onnx import main_export

    LOGGER.info("exporting %s to ONNX (%s, opset %d)", model_dir, task, OPSET)
    try:
        main_export(
            str(model_dir),
            output=str(output_dir),
            task=task,
            library_name="transformers",
            opset=OPSET,
            do_validation=False,
            trust_remote_code=False,
            device="cpu",
        )
    except Exception as error:  # optimum wraps torch/onnx failures in many types
        raise ExportError(f"ONNX export of {model_dir} failed: {type(error).__name__}: {error}") from error
    onnx_path = output_dir / "model.onnx"
    if not onnx_path.is_file():
        raise ExportError(f"ONNX export of {model_dir} produced no model.onnx in {output_dir}")
    return onnx_path
