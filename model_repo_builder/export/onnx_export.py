"""Export a Hugging Face encoder to ONNX with optimum, as the bare transformer (token embeddings).

Pooling and normalization are done by the served model, from the sentence-transformers config, so
one export path serves every encoder, with or without a sentence-transformers wrapper.
"""

from __future__ import annotations

import logging
from pathlib import Path

from model_repo_builder.errors import ExportError

LOGGER = logging.getLogger(__name__)

OPSET = 17


def export_encoder(model_dir: Path, output_dir: Path) -> Path:
    """Write `output_dir/model.onnx` with dynamic batch and sequence axes; return its path."""
    from optimum.exporters.onnx import main_export

    LOGGER.info("exporting %s to ONNX (opset %d)", model_dir, OPSET)
    try:
        main_export(
            str(model_dir),
            output=str(output_dir),
            task="feature-extraction",
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
