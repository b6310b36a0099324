"""Triton python-backend model: runs an ONNX graph with ONNX Runtime on CPU, named as its config says.

`trb launch --cpu-smoke` puts it in place of a model step served by Triton's native onnxruntime
backend (which the local tritonserver lacks), with the same name, inputs and outputs, so a
GPU-target ensemble's wiring and numbers are tested on a CPU. It is not what a GPU serves.
"""

import json
import os

import trb_runtime  # first: makes the virtual environment importable in the stub

# isort: split
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """One ONNX Runtime session; every request of a batch in one run."""

    def initialize(self, args):
        """Open the session on the version directory's ONNX file (CPUExecutionProvider)."""
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        self.session = trb_runtime.onnx_session(
            os.path.join(version_dir, parameters.get("onnx_file", "model.onnx")),
            int(parameters.get("intra_op_threads", "1")),
            False,
            ("CPUExecutionProvider",),
        )
        self.inputs = [tensor["name"] for tensor in config["input"]]
        self.outputs = [tensor["name"] for tensor in config["output"]]

    def execute(self, requests):
        """Concatenate the requests' inputs, run once, split the outputs back per request."""
        arrays = [
            {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.inputs}
            for request in requests
        ]
        feeds = {name: np.concatenate([inputs[name] for inputs in arrays]) for name in self.inputs}
        results = self.session.run(self.outputs, feeds)
        responses, start = [], 0
        for inputs in arrays:
            rows = len(inputs[self.inputs[0]])
            responses.append(
                pb_utils.InferenceResponse(
                    [
                        pb_utils.Tensor(name, np.ascontiguousarray(result[start : start + rows]))
                        for name, result in zip(self.outputs, results, strict=True)
                    ]
                )
            )
            start += rows
        return responses
