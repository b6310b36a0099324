"""ONNX export, quantization and numeric verification against the source model."""
