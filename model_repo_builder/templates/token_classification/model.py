"""Triton python-backend model: TEXT in, labelled entity spans out (HF's "simple" aggregation).

Each text gets four outputs of one row each, as long as its number of entities (rows of a request
padded to its longest with label "" and offsets -1): ENTITY_LABELS, ENTITY_STARTS and ENTITY_ENDS
(character offsets into the text, end exclusive) and ENTITY_SCORES. A bad request in a dynamic batch
gets its own INVALID_ARG error; the others are answered from one ONNX Runtime call. Built with
trb's admission bound (the `max_queue_size` parameter), a full batch goes through trb's queue and
its worker thread (trb_runtime.TritonAdmission).
"""

import json
import os

import trb_runtime  # noqa: F401  (first: makes the virtual environment importable in the stub)

# isort: split
import numpy as np
import triton_python_backend_utils as pb_utils
from token_classifier import TokenClassifier, TokenClassifierSettings
from trb_runtime import AdmittingModel, gather_texts, model_parameters

TEXT_INPUT = "TEXT"


def _padded(rows, fill, dtype):
    width = max((len(row) for row in rows), default=0)
    return np.array([list(row) + [fill] * (width - len(row)) for row in rows], dtype=dtype).reshape(
        len(rows), width
    )


def _response(found):
    labels = [[entity.label.encode("utf-8") for entity in entities] for entities in found]
    return pb_utils.InferenceResponse(
        [
            pb_utils.Tensor("ENTITY_LABELS", _padded(labels, b"", np.object_)),
            pb_utils.Tensor(
                "ENTITY_STARTS", _padded([[e.start for e in row] for row in found], -1, np.int32)
            ),
            pb_utils.Tensor("ENTITY_ENDS", _padded([[e.end for e in row] for row in found], -1, np.int32)),
            pb_utils.Tensor(
                "ENTITY_SCORES", _padded([[e.score for e in row] for row in found], 0.0, np.float32)
            ),
        ]
    )


class TritonPythonModel(AdmittingModel):
    """Finds the entities of every text of every request in one ONNX Runtime call per execute()."""

    def initialize(self, args):
        """Load tokenizer and ONNX session from the version directory."""
        config = json.loads(args["model_config"])
        parameters = model_parameters(config)
        settings = TokenClassifierSettings.from_parameters(parameters)
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        self.classifier = TokenClassifier(
            os.path.join(version_dir, "model.onnx"), os.path.join(version_dir, "tokenizer.json"), settings
        )
        self.admit(config, parameters, args, [TEXT_INPUT])

    def respond(self, requests):
        """Answer each request (or its inputs copied out) with its rows of one batched computation."""
        responses, texts, owners = gather_texts(requests, TEXT_INPUT, self.classifier.settings.max_text_bytes)
        if texts:
            found = self.classifier.entities(texts)
            start = 0
            for index, count in owners:
                responses[index] = _response(found[start : start + count])
                start += count
        return responses
