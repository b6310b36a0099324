"""Built text-to-text repositories on the real tritonserver, against transformers' `generate` in-process.

Models are random-weight T5s (no Hub here): a 2+2-layer one for most checks and one with exactly
flan-t5-small's architecture. fp32 greedy ids must equal `generate(do_sample=False, num_beams=1)`
exactly, alone and in concurrent, dynamically batched requests of different lengths.
"""

# Fixtures are imported from seq2seq_fixtures (tests/conftest.py belongs to the embedding tests), so
# pytest finds them here; their names then reappear as test arguments.
# ruff: noqa: F811

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from click.testing import CliRunner
from seq2seq_fixtures import (  # noqa: F401  (fixtures)
    PROMPTS,
    Reference,
    flan_t5_small_arch,
    generate,
    in_flight_under_load,
    launch_spec,
    request_inputs,
    session_build,
    small_reference,
    small_t5,
    stream,
)
from tritonclient.utils import InferenceServerException

from model_repo_builder.build import BuildResult
from model_repo_builder.cli import main
from model_repo_builder.perf.sweep import run_sweep
from model_repo_builder.repository.manifest import read_manifest
from model_repo_builder.runtime.server import TritonServer
from model_repo_builder.spec import SweepSpec
from model_repo_builder.templates.seq2seq.generation import MODEL_FILES

pytestmark = pytest.mark.integration

# Measured on the 2+2-layer random T5: served int8 greedy output equals fp32 `generate` at 0.69 of
# token positions (6 prompts × 16 tokens; every position after a first difference counts as unequal),
# and the build's teacher-forced top-1 agreement is 0.93.
INT8_MIN_TOKEN_AGREEMENT = 0.5


def _statistics(server: TritonServer, model: str) -> tuple[int, int]:
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        stats = client.get_inference_statistics(model)["model_stats"][0]
    finally:
        client.close()
    return int(stats["inference_count"]), int(stats["execution_count"])


@pytest.fixture(scope="module")
def small_fp32(tmp_path_factory: pytest.TempPathFactory, small_t5: Path) -> BuildResult:
    # Request-level batching: these tests count batched executions; the default, continuous batching,
    # is covered by test_seq2seq_continuous_e2e.py and the flan-t5-small test below.
    return session_build(
        tmp_path_factory, small_t5, precision="fp32", instances=2, name="t5-small", batching="request"
    )


@pytest.fixture(scope="module")
def small_server(small_fp32: BuildResult) -> Iterator[TritonServer]:
    with TritonServer(launch_spec(small_fp32.repository)) as server:
        yield server


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_single_requests_equal_hf_generate(
    small_server: TritonServer, small_reference: Reference, protocol: str
) -> None:
    for prompt in PROMPTS:
        texts, ids = generate(small_server, "t5-small", [prompt], protocol, MAX_NEW_TOKENS=("INT32", [12]))
        expected = small_reference.ids(prompt, 12)
        assert ids == [expected], prompt
        assert texts == [small_reference.text(expected)]
        assert texts[0].strip()


def test_request_batching_exports_the_requests_it_generates_as_in_flight(
    small_server: TritonServer, small_reference: Reference
) -> None:
    limit = 256
    during, after, lengths = in_flight_under_load(
        small_server, "t5-small", small_reference.endless_prompt(limit), 3, limit
    )
    assert during is not None and 0 < during <= 3
    assert after == 0
    assert lengths and set(lengths) == {limit}


def test_concurrent_requests_of_different_lengths_are_batched_and_exact(
    small_server: TritonServer, small_reference: Reference
) -> None:
    jobs = [(PROMPTS[i % len(PROMPTS)], 4 + (5 * i) % 13) for i in range(16)]
    expected = [small_reference.ids(prompt, limit) for prompt, limit in jobs]
    requests_before, executions_before = _statistics(small_server, "t5-small")
    barrier = threading.Barrier(len(jobs))

    def one(job: tuple[str, int]) -> list[int]:
        barrier.wait()
        return generate(small_server, "t5-small", [job[0]], MAX_NEW_TOKENS=("INT32", [job[1]]))[1][0]

    with ThreadPoolExecutor(len(jobs)) as pool:
        served = list(pool.map(one, jobs))
    assert served == expected
    requests_after, executions_after = _statistics(small_server, "t5-small")
    assert requests_after - requests_before == len(jobs)
    # Dynamic batching put several requests into one decode loop at least once.
    assert executions_after - executions_before < len(jobs)


def test_one_request_with_several_prompts_pads_ids_with_minus_one(
    small_server: TritonServer, small_reference: Reference
) -> None:
    prompts = [PROMPTS[0], PROMPTS[2], PROMPTS[4]]
    client = httpclient.InferenceServerClient(small_server.http_url)
    try:
        result = client.infer(
            "t5-small", request_inputs(httpclient, prompts, MAX_NEW_TOKENS=("INT32", [3, 9, 6]))
        )
    finally:
        client.close()
    ids = result.as_numpy("TOKEN_IDS")
    assert ids.shape == (3, 9) and ids.dtype == np.int64
    for row, prompt, limit in zip(ids.tolist(), prompts, [3, 9, 6], strict=True):
        assert row == small_reference.ids(prompt, limit) + [-1] * (9 - limit)
    assert result.as_numpy("TEXT").shape == (3, 1)


def test_beam_search_requests_equal_hf_beam_search(
    small_server: TritonServer, small_reference: Reference
) -> None:
    # One request mixing beam widths and greedy decoding, then a beam request over gRPC.
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[4]]
    ids = generate(
        small_server,
        "t5-small",
        prompts,
        NUM_BEAMS=("INT32", [4, 1, 2]),
        MAX_NEW_TOKENS=("INT32", [12, 12, 20]),
    )[1]
    assert ids == [
        small_reference.ids(PROMPTS[0], 12, num_beams=4),
        small_reference.ids(PROMPTS[1], 12),
        small_reference.ids(PROMPTS[4], 20, num_beams=2),
    ]
    texts, (alone,) = generate(
        small_server,
        "t5-small",
        [PROMPTS[2]],
        "grpc",
        NUM_BEAMS=("INT32", [3]),
        MAX_NEW_TOKENS=("INT32", [9]),
    )
    assert alone == small_reference.ids(PROMPTS[2], 9, num_beams=3)
    assert texts == [small_reference.text(alone)]


def test_sampling_with_a_seed_is_reproducible(small_server: TritonServer) -> None:
    sampling = {
        "MAX_NEW_TOKENS": ("INT32", [10]),
        "DO_SAMPLE": ("BOOL", [True]),
        "TEMPERATURE": ("FP32", [1.3]),
        "TOP_P": ("FP32", [0.95]),
    }
    first = generate(small_server, "t5-small", [PROMPTS[1]], SEED=("INT64", [42]), **sampling)
    again = generate(small_server, "t5-small", [PROMPTS[1]], SEED=("INT64", [42]), **sampling)
    assert first == again
    others = [
        generate(small_server, "t5-small", [PROMPTS[1]], SEED=("INT64", [s]), **sampling) for s in (1, 2, 3)
    ]
    assert any(other != first for other in others)


BAD_REQUESTS = {
    "empty prompt": ([""], {}, "PROMPT[0] is empty"),
    "blank prompt among good ones": (["fine", "   "], {}, "PROMPT[1] is empty"),
    "prompt over the limit": (["the weather builds quiet evenings " * 120], {}, "accepts at most 512"),
    "zero new tokens": (
        ["ok"],
        {"MAX_NEW_TOKENS": ("INT32", [0])},
        "MAX_NEW_TOKENS must be between 1 and 512",
    ),
    "negative new tokens": (["ok"], {"MAX_NEW_TOKENS": ("INT32", [-5])}, "got -5"),
    "absurd new tokens": (["ok"], {"MAX_NEW_TOKENS": ("INT32", [2**31 - 1])}, "got 2147483647"),
    "too many beams": (["ok"], {"NUM_BEAMS": ("INT32", [64])}, "NUM_BEAMS must be between 1 and 8"),
    "zero temperature": (
        ["ok"],
        {"DO_SAMPLE": ("BOOL", [True]), "TEMPERATURE": ("FP32", [0.0])},
        "TEMPERATURE must be",
    ),
    "top_p above one": (["ok"], {"DO_SAMPLE": ("BOOL", [True]), "TOP_P": ("FP32", [2.0])}, "TOP_P must be"),
    "max_new_tokens as FP32": (["ok"], {"MAX_NEW_TOKENS": ("FP32", [5.0])}, "MAX_NEW_TOKENS"),
    "prompt as INT32": (None, {"PROMPT": ("INT32", [7])}, "PROMPT"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_requests_get_invalid_argument_and_the_server_keeps_serving(
    small_server: TritonServer, small_reference: Reference, case: str
) -> None:
    prompts, parameters, message = BAD_REQUESTS[case]
    client = httpclient.InferenceServerClient(small_server.http_url)
    try:
        with pytest.raises(InferenceServerException) as caught:
            client.infer("t5-small", request_inputs(httpclient, prompts, **parameters))
    finally:
        client.close()
    assert caught.value.status() == "400", caught.value
    assert message in caught.value.message()
    _, ids = generate(small_server, "t5-small", ["ok"], MAX_NEW_TOKENS=("INT32", [3]))
    assert ids == [small_reference.ids("ok", 3)]


def test_non_utf8_prompt_is_rejected(small_server: TritonServer) -> None:
    client = grpcclient.InferenceServerClient(small_server.grpc_url)
    try:
        prompt = grpcclient.InferInput("PROMPT", [1, 1], "BYTES")
        prompt.set_data_from_numpy(np.array([[b"\xff\xfeok"]], dtype=np.object_))
        with pytest.raises(InferenceServerException) as caught:
            client.infer("t5-small", [prompt])
    finally:
        client.close()
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "not valid UTF-8" in caught.value.message()


def test_manifest_records_task_verification_and_files(small_fp32: BuildResult) -> None:
    manifest = read_manifest(small_fp32.repository)
    assert manifest.task == "text2text-generation"
    assert manifest.verification["top1_agreement"] == 1.0
    assert set(manifest.verification["max_abs_diff"]) == {
        "encoder.last_hidden_state",
        "decoder.logits",
        "decoder_with_past.logits",
        "cross_cache",
    }
    for part in (*MODEL_FILES, "generation.py", "continuous.py", "beam.py", "token_rules.py"):
        assert f"t5-small/1/{part}" in manifest.files
    streaming_files = sorted(path for path in manifest.files if path.startswith("t5-small_stream/"))
    assert streaming_files == [
        "t5-small_stream/1/beam.py",
        "t5-small_stream/1/continuous.py",
        "t5-small_stream/1/generation.py",
        "t5-small_stream/1/model.py",
        "t5-small_stream/1/token_rules.py",
        "t5-small_stream/1/trb_runtime.py",
        "t5-small_stream/config.pbtxt",
    ]
    assert manifest.model["streaming_model"] == "t5-small_stream"
    assert "PROMPT" in (small_fp32.repository / "README.md").read_text(encoding="utf-8")


def test_streaming_sends_each_token_as_made_and_matches_the_batched_model(
    small_server: TritonServer, small_reference: Reference
) -> None:
    jobs = [(PROMPTS[0], 12), (PROMPTS[4], 5), (PROMPTS[2], 9)]
    with ThreadPoolExecutor(len(jobs)) as pool:
        streamed = list(pool.map(lambda job: stream(small_server, "t5-small_stream", [job[0]], job[1]), jobs))
    for (prompt, limit), (deltas, ids) in zip(jobs, streamed, strict=True):
        expected = small_reference.ids(prompt, limit)
        assert ids == expected, prompt
        texts, _ = generate(small_server, "t5-small", [prompt], MAX_NEW_TOKENS=("INT32", [limit]))
        assert "".join(deltas) == texts[0]
        assert len(deltas) == len(ids) > 1


def test_streaming_rejects_several_prompts_in_one_request(small_server: TritonServer) -> None:
    with pytest.raises(InferenceServerException) as caught:
        stream(small_server, "t5-small_stream", [PROMPTS[0], PROMPTS[1]], 4)
    assert "exactly one prompt" in caught.value.message()
    assert stream(small_server, "t5-small_stream", [PROMPTS[3]], 2)[1]


def test_streaming_refuses_beam_search(small_server: TritonServer) -> None:
    with pytest.raises(InferenceServerException) as caught:
        stream(small_server, "t5-small_stream", [PROMPTS[0]], 4, NUM_BEAMS=("INT32", [2]))
    assert "beam search cannot stream" in caught.value.message()
    assert stream(small_server, "t5-small_stream", [PROMPTS[3]], 2)[1]


def test_int8_stays_close_to_fp32(
    tmp_path_factory: pytest.TempPathFactory,
    small_t5: Path,
    small_reference: Reference,
) -> None:
    built = session_build(tmp_path_factory, small_t5, precision="int8", name="t5-small-int8")
    assert built.manifest.verification["top1_agreement"] >= 0.75
    limit = 16
    expected = [small_reference.ids(prompt, limit) for prompt in PROMPTS]
    with TritonServer(launch_spec(built.repository)) as server:
        limits = ("INT32", [limit] * len(PROMPTS))
        _, served = generate(server, "t5-small-int8", list(PROMPTS), MAX_NEW_TOKENS=limits)
    equal = sum(
        a == b
        for ours, theirs in zip(served, expected, strict=True)
        for a, b in zip(ours, theirs, strict=False)
    )
    agreement = equal / sum(len(row) for row in expected)
    print(f"int8 position-wise token agreement with fp32 greedy: {agreement:.3f}")
    assert agreement >= INT8_MIN_TOKEN_AGREEMENT


def test_flan_t5_small_architecture_is_served_exactly(
    tmp_path_factory: pytest.TempPathFactory,
    flan_t5_small_arch: Path,
) -> None:
    built = session_build(tmp_path_factory, flan_t5_small_arch, precision="fp32", instances=2, name="flan-t5")
    reference = Reference(flan_t5_small_arch)
    limits = [8, 16, 4, 12]
    prompts = list(PROMPTS[: len(limits)])
    expected = [reference.ids(prompt, limit) for prompt, limit in zip(prompts, limits, strict=True)]
    with TritonServer(launch_spec(built.repository)) as server:
        assert generate(server, "flan-t5", [prompts[1]], MAX_NEW_TOKENS=("INT32", [16]))[1] == [expected[1]]
        with ThreadPoolExecutor(len(prompts)) as pool:
            served = list(
                pool.map(
                    lambda job: generate(server, "flan-t5", [job[0]], MAX_NEW_TOKENS=("INT32", [job[1]]))[1][
                        0
                    ],
                    zip(prompts, limits, strict=True),
                )
            )
    assert served == expected


def test_sweep_reports_tokens_per_second_for_a_generation_model(
    small_fp32: BuildResult, tmp_path: Path
) -> None:
    spec = SweepSpec(
        repository=small_fp32.repository,
        concurrency=(1, 4),
        max_new_tokens=6,
        measurement_interval_ms=1000,
        output=tmp_path,
    )
    results = run_sweep(spec).results
    data = json.loads((tmp_path / "raw" / "input_data_PROMPT.json").read_text())
    assert all(step["MAX_NEW_TOKENS"] == {"content": [6], "shape": [1]} for step in data["data"])
    generation = results["generation"]
    assert 1 <= generation["tokens_per_request"] <= 6 and generation["prompts"] == 8
    levels = results["configs"][0]["levels"]
    assert len(levels) == 2
    for level in levels:
        assert level["tokens_per_s"] == pytest.approx(
            level["throughput_rps"] * generation["tokens_per_request"]
        )
    assert "generated tokens per request" in results["summary"]


def test_trb_infer_sends_generation_options(
    small_fp32: BuildResult, small_server: TritonServer, small_reference: Reference
) -> None:
    arguments = ["infer", str(small_fp32.repository), PROMPTS[0], PROMPTS[2], "--url", small_server.http_url]
    result = CliRunner().invoke(main, [*arguments, "--max-new-tokens", "7", "--num-beams", "3", "--json"])
    assert result.exit_code == 0, result.output
    expected = [
        small_reference.text(small_reference.ids(p, 7, num_beams=3)) for p in (PROMPTS[0], PROMPTS[2])
    ]
    assert json.loads(result.output)["generated"] == expected
    refused = CliRunner().invoke(main, [*arguments, "--num-beams", "99"])
    assert refused.exit_code != 0 and "NUM_BEAMS must be between 1 and 8" in refused.output
