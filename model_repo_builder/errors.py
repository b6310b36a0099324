"""Errors trb raises for people: each says what is wrong and what to do.

The CLI turns any `TrbError` into a one-line message and a non-zero exit code; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Any


class TrbError(Exception):
    """Root of every error caused by input, environment or a failed check rather than a bug."""

    exit_code = 1


class SpecError(TrbError):
    """An option or manifest field has an invalid value; the message names the field."""

    exit_code = 2


class ModelSourceError(TrbError):
    """The model could not be found, downloaded or loaded safely."""


class UnsupportedModelError(TrbError):
    """The model's task or architecture is not (yet) supported by trb."""


class ExportError(TrbError):
    """Conversion to ONNX or quantization failed."""


class VerificationError(TrbError):
    """An exported model's outputs differ from the source model's beyond tolerance.

    `report` holds everything the check measured (as a manifest would record it), when it got that far.
    """

    def __init__(self, message: str, max_diffs: dict[str, float], report: dict[str, Any] | None = None):
        super().__init__(message)
        self.max_diffs = max_diffs
        self.report = report


class RepositoryError(TrbError):
    """A model repository is missing, corrupt, or could not be written."""


class ToolNotFoundError(TrbError):
    """A required external binary (tritonserver, perf_analyzer, docker) is missing or unusable."""


class ServerError(TrbError):
    """tritonserver failed to start, to load a model, or to stay up."""


class PortInUseError(ServerError):
    """A port trb was asked to bind is already taken."""


class InferenceError(TrbError):
    """A request to a running server failed."""


class DeployError(TrbError):
    """A repository cannot be turned into deployment files as asked (or not yet)."""
