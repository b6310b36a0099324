"""Triton python-backend model: text classification (TEXT → SCORES, LABEL) or reranking (QUERY, TEXT → SCORE).

Each request is validated on its own, so one bad request in a dynamic batch gets its own
INVALID_ARG error while the others are answered from one batched ONNX Runtime call per execute().
For reranking every batch row is one query/passage pair, so the batcher mixes pairs of many requests.
"""

import json
import os

import trb_runtime  # noqa: F401  (first: makes the virtual environment importable in the stub)

# isort: split
import numpy as np
import triton_python_backend_utils as pb_utils
from sequence_classifier import ClassifierSettings, SequenceClassifier
from trb_runtime import InvalidRequestError, decode_texts, model_parameters

QUERY_INPUT = "QUERY"
TEXT_INPUT = "TEXT"


class TritonPythonModel:
    """Scores every row of every request in one ONNX Runtime call per execute()."""

    def initialize(self, args):
        """Load tokenizer and ONNX session from the version directory."""
        config = json.loads(args["model_config"])
        parameters = model_parameters(config)
        settings = ClassifierSettings.from_parameters(parameters)
        if args["model_instance_kind"] == "GPU":
            settings = ClassifierSettings(
                **{**settings.__dict__, "providers": ("CUDAExecutionProvider", "CPUExecutionProvider")}
            )
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        self.classifier = SequenceClassifier(
            os.path.join(version_dir, "model.onnx"), os.path.join(version_dir, "tokenizer.json"), settings
        )
        self.pairs = settings.pairs

    def _parse(self, request):
        limit = self.classifier.settings.max_text_bytes
        texts = decode_texts(
            pb_utils.get_input_tensor_by_name(request, TEXT_INPUT).as_numpy(), TEXT_INPUT, limit
        )
        if not self.pairs:
            return texts, None
        queries = decode_texts(
            pb_utils.get_input_tensor_by_name(request, QUERY_INPUT).as_numpy(), QUERY_INPUT, limit
        )
        if len(queries) != len(texts):
            raise InvalidRequestError(
                f"{QUERY_INPUT} has {len(queries)} rows and {TEXT_INPUT} {len(texts)}; "
                "send one query per passage"
            )
        return texts, queries

    def _response(self, scores):
        if self.pairs:
            return pb_utils.InferenceResponse([pb_utils.Tensor("SCORE", np.ascontiguousarray(scores[:, :1]))])
        labels = np.array(
            [[label.encode("utf-8")] for label in self.classifier.labels_of(scores)], dtype=np.object_
        )
        return pb_utils.InferenceResponse(
            [pb_utils.Tensor("SCORES", np.ascontiguousarray(scores)), pb_utils.Tensor("LABEL", labels)]
        )

    def execute(self, requests):
        """Answer each request with its own rows of one batched computation."""
        responses = [None] * len(requests)
        texts, queries, owners = [], [], []
        for index, request in enumerate(requests):
            try:
                request_texts, request_queries = self._parse(request)
            except InvalidRequestError as error:
                responses[index] = pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(str(error), pb_utils.TritonError.INVALID_ARG)
                )
                continue
            texts.extend(request_texts)
            queries.extend(request_queries or ())
            owners.append((index, len(request_texts)))
        if texts:
            scores = self.classifier.scores(texts, queries if self.pairs else None)
            start = 0
            for index, count in owners:
                responses[index] = self._response(scores[start : start + count])
                start += count
        return responses
