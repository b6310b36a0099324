"""The real perf_analyzer against the real tritonserver serving the int8 default model."""

import socket

import pytest

from model_repo_builder.errors import InferenceError
from model_repo_builder.perf.perf_analyzer import PerfRun, run_perf_analyzer, write_text_input_data

TEXTS = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Latency percentiles matter more than averages when you size a fleet.",
    "Café prices rose by 3% — «surprising» news for the whole street.",
]


@pytest.mark.integration
def test_concurrency_run_measures_the_served_model(int8_repo, int8_server, tmp_path):
    data = write_text_input_data(tmp_path / "texts.json", "TEXT", TEXTS)
    run = PerfRun(
        model=int8_repo.name,
        url=int8_server.grpc_url,
        concurrency=2,
        input_data=data,
        # A fixed count, not stability windows: on a shared 2-core machine windows may never agree,
        # and this test is about the wiring, not about a stable number.
        request_count=300,
        timeout_s=120,
    )

    result = run_perf_analyzer(run, tmp_path / "perf")

    assert result.reported.load == 2
    assert result.throughput_rps > 0
    # perf_analyzer rounds a fixed-count run up to whole seconds; the timestamps do not.
    assert result.throughput_rps >= result.reported.throughput_rps
    assert result.requests.count == 300
    # Same requests, nearest-rank (perf_analyzer) vs interpolated (ours) percentiles. Not p99: with
    # 300 requests it sits between the 3 slowest, which a busy machine can spread far apart.
    assert result.requests.p50_ms == pytest.approx(result.reported.p50_ms, rel=0.05)
    assert result.breakdown.server_compute_infer_ms > 0
    assert result.measurement.avg_ms == pytest.approx(result.breakdown.total_ms, rel=0.05)


@pytest.mark.integration
def test_unreachable_server_is_a_clean_error(tmp_path):
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        url = f"127.0.0.1:{closed.getsockname()[1]}"
        run = PerfRun(model="minilm-int8", url=url, concurrency=1, timeout_s=60)
        with pytest.raises(InferenceError, match="failed to get model metadata: .*[Cc]onnect"):
            run_perf_analyzer(run, tmp_path)
