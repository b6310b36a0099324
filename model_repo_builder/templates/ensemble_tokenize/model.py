"""Triton python-backend model: the tokenizer step of a GPU-target ensemble (TEXT in, token tensors out).

Each request is validated on its own, so one bad request in a dynamic batch gets its own
INVALID_ARG error (the ensemble answers it with 400) while the others are answered normally.
"""

import json
import os

import trb_runtime  # noqa: F401  (first: makes the virtual environment importable in the stub)

# isort: split
import triton_python_backend_utils as pb_utils
from token_inputs import TokenInputs, TokenizerSettings
from trb_runtime import gather_texts

INPUT_NAME = "TEXT"


class TritonPythonModel:
    """Tokenizes every text of every request in one call per execute()."""

    def initialize(self, args):
        """Load the tokenizer from the version directory."""
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        settings = TokenizerSettings.from_parameters(parameters)
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        self.tokens = TokenInputs(os.path.join(version_dir, "tokenizer.json"), settings)

    def execute(self, requests):
        """Answer each request with its own rows of one batched tokenization."""
        responses, texts, owners = gather_texts(requests, INPUT_NAME, self.tokens.settings.max_text_bytes)
        if texts:
            tensors = self.tokens.tokenize(texts)
            start = 0
            for index, count in owners:
                responses[index] = pb_utils.InferenceResponse(
                    [pb_utils.Tensor(name, array[start : start + count]) for name, array in tensors.items()]
                )
                start += count
        return responses
