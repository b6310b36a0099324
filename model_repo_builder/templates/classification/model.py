"""Triton python-backend model: text classification (TEXT → SCORES, LABEL) or reranking (QUERY, TEXT → SCORE).

Each request is validated on its own, so one bad request in a dynamic batch gets its own
INVALID_ARG error while the others are answered from one batched ONNX Runtime call per execute().
For reranking every batch row is one query/passage pair, so the batcher mixes pairs of many requests.
Pre steps (sidecars) rewrite every TEXT and QUERY; post steps take and return the named outputs. Each
runs once per batch and again per request when it fails, so only the requests it fails on get its
error (500). Built with trb's admission bound (the `max_queue_size` parameter), a full batch goes
through trb's queue and its worker thread (trb_runtime.TritonAdmission).
"""

import json
import os

import trb_runtime  # noqa: F401  (first: makes the virtual environment importable in the stub)

# isort: split
import numpy as np
import triton_python_backend_utils as pb_utils
from sequence_classifier import ClassifierSettings, SequenceClassifier
from trb_runtime import (
    AdmittingModel,
    InvalidRequestError,
    Sidecars,
    StepError,
    error_response,
    model_parameters,
    request_texts,
)

QUERY_INPUT = "QUERY"
TEXT_INPUT = "TEXT"


class TritonPythonModel(AdmittingModel):
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
        steps_file = os.path.join(args["model_repository"], "sidecars", "steps.json")
        self.sidecars = Sidecars.for_model(args["model_name"], steps_file)
        self.admit(config, parameters, args, [QUERY_INPUT, TEXT_INPUT] if self.pairs else [TEXT_INPUT])

    def _parse(self, request):
        limit = self.classifier.settings.max_text_bytes
        texts = request_texts(request, TEXT_INPUT, limit)
        if not self.pairs:
            return texts, None
        queries = request_texts(request, QUERY_INPUT, limit)
        if len(queries) != len(texts):
            raise InvalidRequestError(
                f"{QUERY_INPUT} has {len(queries)} rows and {TEXT_INPUT} {len(texts)}; "
                "send one query per passage"
            )
        return texts, queries

    def _outputs(self, scores):
        """The named outputs of one request's rows."""
        if self.pairs:
            return {"SCORE": np.ascontiguousarray(scores[:, :1])}
        labels = np.array(
            [[label.encode("utf-8")] for label in self.classifier.labels_of(scores)], dtype=np.object_
        )
        return {"SCORES": np.ascontiguousarray(scores), "LABEL": labels}

    def _prepare(self, parsed):
        """Each request's texts and queries after the pre steps (a StepError for those they fail on)."""
        indices = list(parsed)
        # One pre-step call for every text and query of the batch: queries after texts, per request.
        joined = [texts + (queries or []) for texts, queries in parsed.values()]
        prepared = {}
        for index, outcome in zip(indices, self.sidecars.run_each("pre", joined), strict=True):
            if isinstance(outcome, StepError):
                prepared[index] = outcome
                continue
            count = len(parsed[index][0])
            prepared[index] = (outcome[:count], outcome[count:] if self.pairs else None)
        return prepared

    def respond(self, requests):
        """Answer each request (or its inputs copied out) with its rows of one batched computation."""
        responses = [None] * len(requests)
        parsed = {}
        for index, request in enumerate(requests):
            try:
                parsed[index] = self._parse(request)
            except InvalidRequestError as error:
                responses[index] = error_response(error)
        texts, queries, owners = [], [], []
        for index, outcome in self._prepare(parsed).items():
            if isinstance(outcome, StepError):
                responses[index] = error_response(outcome)
                continue
            texts.extend(outcome[0])
            queries.extend(outcome[1] or ())
            owners.append((index, len(outcome[0])))
        if not texts:
            return responses
        scores = self.classifier.scores(texts, queries if self.pairs else None)
        groups, start = [], 0
        for _, count in owners:
            groups.append(self._outputs(scores[start : start + count]))
            start += count
        for (index, _), outcome in zip(owners, self.sidecars.run_each("post", groups), strict=True):
            if isinstance(outcome, StepError):
                responses[index] = error_response(outcome)
                continue
            responses[index] = pb_utils.InferenceResponse(
                [pb_utils.Tensor(name, np.ascontiguousarray(value)) for name, value in outcome.items()]
            )
        return responses
