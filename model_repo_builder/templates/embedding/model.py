"""Triton python-backend model: TYPE_STRING texts in, FP32 sentence embeddings out.

Each request is validated on its own, so one bad request in a dynamic batch gets its own
INVALID_ARG error while the others in the same batch are answered normally. Built with trb's
admission bound (the `max_queue_size` parameter), execute() answers a batch with room in place and
admits a full one to trb's queue, whose worker answers it (trb_runtime.TritonAdmission); otherwise
execute() answers every batch.
"""

import json
import os

import trb_runtime  # noqa: F401  (first: makes the virtual environment importable in the stub)

# isort: split
import numpy as np
import triton_python_backend_utils as pb_utils
from text_embedding import EmbedderSettings, InvalidTextError, TextEmbedder
from trb_runtime import AdmittingModel, Sidecars, StepError, error_response, model_parameters, request_texts

INPUT_NAME = "TEXT"
OUTPUT_NAME = "EMBEDDING"


class TritonPythonModel(AdmittingModel):
    """Embeds every text of every request in one ONNX Runtime call per execute()."""

    def initialize(self, args):
        """Load tokenizer and ONNX session from the version directory."""
        config = json.loads(args["model_config"])
        parameters = model_parameters(config)
        settings = EmbedderSettings.from_parameters(parameters)
        if args["model_instance_kind"] == "GPU":
            settings = EmbedderSettings(
                **{**settings.__dict__, "providers": ("CUDAExecutionProvider", "CPUExecutionProvider")}
            )
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        self.embedder = TextEmbedder(
            os.path.join(version_dir, parameters.get("onnx_file", "model.onnx")),
            os.path.join(version_dir, "tokenizer.json"),
            settings,
        )
        steps_file = os.path.join(args["model_repository"], "sidecars", "steps.json")
        self.sidecars = Sidecars.for_model(args["model_name"], steps_file)
        self.admit(config, parameters, args, [INPUT_NAME])

    def respond(self, requests):
        """Answer each request with its own rows of one batched embedding computation.

        `requests` are Triton requests or their inputs copied out by the admission queue. Pre and
        post steps (sidecars) run once per batch; when a step fails, it runs again per request so
        that only the requests it fails on get its error.
        """
        responses = [None] * len(requests)
        decoded = {}
        for index, request in enumerate(requests):
            try:
                decoded[index] = request_texts(request, INPUT_NAME, self.embedder.settings.max_text_bytes)
            except InvalidTextError as error:
                responses[index] = error_response(error)
        prepared = dict(zip(decoded, self.sidecars.run_each("pre", list(decoded.values())), strict=True))
        texts, owners = [], []
        for index, outcome in prepared.items():
            if isinstance(outcome, StepError):
                responses[index] = error_response(outcome)
                continue
            texts.extend(outcome)
            owners.append((index, len(outcome)))
        if texts:
            embeddings = self.embedder.embed(texts)
            rows, start = [], 0
            for _, count in owners:
                rows.append(np.ascontiguousarray(embeddings[start : start + count]))
                start += count
            for (index, _), outcome in zip(owners, self.sidecars.run_each("post", rows), strict=True):
                if isinstance(outcome, StepError):
                    responses[index] = error_response(outcome)
                    continue
                responses[index] = pb_utils.InferenceResponse(
                    [pb_utils.Tensor(OUTPUT_NAME, np.ascontiguousarray(outcome, dtype=np.float32))]
                )
        return responses
