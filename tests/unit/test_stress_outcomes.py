"""How the overload client tells a bounded queue's refusal from a lost connection.

Both arrive as gRPC UNAVAILABLE; a crashed server must not read as a server refusing fast.
"""

from __future__ import annotations

import pytest

from model_repo_builder.perf.stress import is_refusal


@pytest.mark.parametrize(
    ("status", "message", "refusal"),
    [
        (
            "StatusCode.UNAVAILABLE",
            "the model's queue is full (4 waiting in this instance, 8 for the model); retry with backoff",
            True,
        ),
        ("StatusCode.UNAVAILABLE", "[request id: <id_unknown>] Exceeds maximum queue size", True),
        (
            "StatusCode.UNAVAILABLE",
            "failed to connect to all addresses; last error: UNAVAILABLE: ipv4:127.0.0.1:8001: "
            "recvmsg:Connection reset by peer (104)",
            False,
        ),
        ("StatusCode.UNAVAILABLE", "Stream removed (Socket closed)", False),
        ("StatusCode.INTERNAL", "the model's queue is full", False),
    ],
)
def test_only_a_queue_refusal_counts_as_rejected(status: str, message: str, refusal: bool) -> None:
    assert is_refusal(status, message) is refusal
