"""A python-backend ONNX Runtime runner that stands in for a native onnxruntime model on CPU."""
