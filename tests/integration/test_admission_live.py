"""trb's own admission bound in the encoder templates, on the real tritonserver.

A burst far beyond the bound is answered 503 at once (before the admitted requests are computed)
and the server keeps serving; a batch with room is answered in place (trb's worker computes none of
it); trb's queue metrics are on the metrics port; with two instances both compute a share of the
requests (Triton hands each execute() call to an idle instance, and an admitting execute() returns
at once, so this is worth checking). Decided by counts and by the order of events, never by sleeping.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import metric_values, running_server

from model_repo_builder.perf.stress import run_stress
from model_repo_builder.repository.variants import Scheduling, make_variant

pytestmark = pytest.mark.integration

# A long text (truncated to the model's 256 tokens) keeps each computation well above a request's
# round trip, so a burst arrives while the first admitted requests are still computed.
LONG_TEXT = " ".join(["Triton answers every request of the burst, one way or the other."] * 40)
BOUND = 4
BURST = 48


def _post(url: str, model: str, text: str) -> tuple[int, str, float]:
    body = json.dumps(
        {"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": [text]}]}
    ).encode()
    request = urllib.request.Request(
        f"http://{url}/v2/models/{model}/infer", data=body, headers={"Content-Type": "application/json"}
    )
    sent = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            status, answer = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status, answer = error.code, error.read().decode()
    return status, answer, (time.perf_counter() - sent) * 1000


def _wait_for_answered(
    metrics_url: str, model: str, expected: int, limit_s: float = 30.0
) -> dict[str, float]:
    """The per-instance answered counters once they add up to `expected` (reported every 0.25 s)."""
    deadline = time.monotonic() + limit_s
    values = metric_values(metrics_url, "trb_answered_requests", model)
    while sum(values.values()) < expected and time.monotonic() < deadline:
        time.sleep(0.1)  # polling a counter the stub reports periodically; the assertion decides
        values = metric_values(metrics_url, "trb_answered_requests", model)
    return values


@pytest.mark.parametrize("max_batch_size", [1, 8])
def test_a_burst_beyond_the_bound_is_answered_503_at_once_and_serving_goes_on(
    int8_repo, tmp_path: Path, max_batch_size: int
) -> None:
    # Batch 8: the first call, with room, is answered in place while the burst fills Triton's queue;
    # the next, full, ones are admitted to trb's queue up to the bound and the rest refused.
    variant = make_variant(
        int8_repo.repository,
        tmp_path / "bound",
        Scheduling(instances=1, max_batch_size=max_batch_size, max_queue_delay_us=0, max_queue_size=BOUND),
    )
    model = int8_repo.name
    with running_server(variant) as server:
        outcomes: list[tuple[int, str, float, float]] = []
        start = threading.Barrier(BURST)
        lock = threading.Lock()

        def client() -> None:
            start.wait()
            status, answer, latency_ms = _post(server.http_url, model, LONG_TEXT)
            with lock:
                outcomes.append((status, answer, latency_ms, time.perf_counter()))

        threads = [threading.Thread(target=client) for _ in range(BURST)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=180)
        after = _post(server.http_url, model, "serving again")
        assert metric_values(server.metrics_url, "trb_queue_depth", model)  # the gauge is exported
        answered = _wait_for_answered(server.metrics_url, model, sum(1 for o in outcomes if o[0] == 200) + 1)
    statuses = [status for status, *_ in outcomes]
    assert len(outcomes) == BURST and set(statuses) <= {200, 503}, statuses
    ok = [o for o in outcomes if o[0] == 200]
    refused = [o for o in outcomes if o[0] == 503]
    assert refused and len(ok) >= 1
    assert all("queue is full" in answer and "retry with backoff" in answer for _, answer, _, _ in refused)
    # Refusals do not wait for the admitted requests' computation: they are answered before them.
    assert statistics.median(o[2] for o in refused) < statistics.median(o[2] for o in ok)
    assert statistics.median(o[3] for o in refused) < max(o[3] for o in ok)
    assert after[0] == 200 and json.loads(after[1])["outputs"][0]["name"] == "EMBEDDING"
    assert sum(answered.values()) >= len(ok) + 1


def test_requests_below_overload_are_answered_in_place(int8_repo, tmp_path: Path) -> None:
    """One client at a time: each batch has room, so execute() answers it and trb's worker computes none."""
    variant = make_variant(
        int8_repo.repository,
        tmp_path / "in-place",
        Scheduling(instances=1, max_batch_size=8, max_queue_delay_us=0, max_queue_size=BOUND),
    )
    model = int8_repo.name
    warmup = 1 + 8  # samples of batch 1 and batch 8; the latter fills its batch, so the worker takes it
    sent = 6
    with running_server(variant) as server:
        _wait_for_answered(server.metrics_url, model, warmup)
        before = metric_values(server.metrics_url, "trb_compute_duration_us", model)
        for index in range(sent):
            status, answer, _ = _post(server.http_url, model, f"request {index} of a single client")
            assert status == 200, answer
        answered = _wait_for_answered(server.metrics_url, model, warmup + sent)
        after = metric_values(server.metrics_url, "trb_compute_duration_us", model)
    assert sum(answered.values()) == warmup + sent
    assert sum(before.values()) > 0  # the warmup's full batch went through the worker
    assert after == before


def test_two_instances_both_compute_a_share(int8_repo, tmp_path: Path) -> None:
    variant = make_variant(
        int8_repo.repository,
        tmp_path / "two",
        Scheduling(instances=2, max_batch_size=4, max_queue_delay_us=0, max_queue_size=64),
    )
    model = int8_repo.name
    with running_server(variant) as server:
        result = run_stress(model, server.grpc_url, "TEXT", [LONG_TEXT[:400]], concurrency=8, duration_s=3)
        # warmup adds each instance's warmup samples to its count
        answered = _wait_for_answered(server.metrics_url, model, result.count("ok"))
    assert result.count("ok") > 0 and result.count("error") == 0
    assert len(answered) == 2, answered
    total = sum(answered.values())
    assert min(answered.values()) >= 0.25 * total, answered
