"""A repository built with the default `--batching continuous` on the real tritonserver.

Requests join the running batch at the next decode step: fp32 greedy ids of staggered concurrent
requests must equal transformers' `generate`, and a short request sent while a long one is running
must come back first.
"""

# ruff: noqa: F811

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import tritonclient.http as httpclient
from seq2seq_fixtures import (  # noqa: F401  (fixtures)
    PROMPTS,
    Reference,
    generate,
    in_flight_under_load,
    launch_spec,
    session_build,
    small_reference,
    small_t5,
)

from model_repo_builder.build import BuildResult
from model_repo_builder.errors import ServerError
from model_repo_builder.repository.manifest import MANIFEST_NAME
from model_repo_builder.runtime.server import TritonServer
from model_repo_builder.runtime.status import server_status
from model_repo_builder.templates.seq2seq.generation import CROSS_CACHE_FILE

pytestmark = pytest.mark.integration

MODEL = "t5-cb"
# The longest generation a request may ask for (MAX_NEW_TOKENS_LIMIT).
LONG_TOKENS = 512


@pytest.fixture(scope="module")
def continuous_build(tmp_path_factory: pytest.TempPathFactory, small_t5: Path) -> BuildResult:
    return session_build(tmp_path_factory, small_t5, precision="fp32", name=MODEL)  # the default: continuous


@pytest.fixture(scope="module")
def continuous_server(continuous_build: BuildResult) -> Iterator[TritonServer]:
    with TritonServer(launch_spec(continuous_build.repository)) as server:
        yield server


def test_manifest_and_config_record_continuous_batching(continuous_build: BuildResult) -> None:
    config = (continuous_build.repository / MODEL / "config.pbtxt").read_text()
    assert 'key: "batching"' in config and 'string_value: "continuous"' in config
    assert (continuous_build.repository / MODEL / "1" / "continuous.py").is_file()


def test_staggered_concurrent_requests_equal_hf_generate(
    continuous_server: TritonServer, small_reference: Reference
) -> None:
    jobs = [(PROMPTS[i % len(PROMPTS)], 3 + (7 * i) % 19) for i in range(10)]
    expected = [small_reference.ids(prompt, limit) for prompt, limit in jobs]

    def one(index: int) -> list[int]:
        time.sleep(0.03 * index)  # arrivals spread over several decode steps
        prompt, limit = jobs[index]
        protocol = ("http", "grpc")[index % 2]
        limits = ("INT32", [limit])
        return generate(continuous_server, MODEL, [prompt], protocol, MAX_NEW_TOKENS=limits)[1][0]

    with ThreadPoolExecutor(len(jobs)) as pool:
        served = list(pool.map(one, range(len(jobs))))
    assert served == expected


def _executions(server: TritonServer, model: str) -> int:
    """How many batches Triton has handed the model: its own signal that a request reached it."""
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        return int(client.get_inference_statistics(model)["model_stats"][0]["execution_count"])
    finally:
        client.close()


def test_a_short_request_sent_during_a_long_one_finishes_first(
    continuous_server: TritonServer, small_reference: Reference
) -> None:
    # The long request is several prompts the model does not end early, each running the longest
    # allowed generation; the short one is sent only once the server reports the long one reached the
    # model (it is then queued for, or in, the running batch). The short needs 3 decode steps, the long
    # hundreds more: no scheduling delay on 2 busy cores spans that margin, and no sleep decides it.
    long_prompt = small_reference.endless_prompt(LONG_TOKENS)
    long_prompts = [long_prompt] * 4
    finished: list[str] = []
    before = _executions(continuous_server, MODEL)

    def run(label: str, prompts: list[str], limit: int) -> list[list[int]]:
        ids = generate(continuous_server, MODEL, prompts, MAX_NEW_TOKENS=("INT32", [limit] * len(prompts)))[1]
        finished.append(label)
        return ids

    with ThreadPoolExecutor(1) as pool:
        long_ids = pool.submit(run, "long", long_prompts, LONG_TOKENS)
        while _executions(continuous_server, MODEL) == before and not long_ids.done():
            time.sleep(0.001)  # polls the server's signal; the outcome does not depend on this pause
        short_ids = run("short", [PROMPTS[2]], 3)
        assert short_ids == [small_reference.ids(PROMPTS[2], 3)]
        assert long_ids.result() == [small_reference.ids(long_prompt, LONG_TOKENS)] * len(long_prompts)
    assert finished == ["short", "long"]


def test_requests_in_flight_are_exported_while_they_generate_and_zero_once_answered(
    continuous_server: TritonServer, small_reference: Reference
) -> None:
    # The gauge an autoscaler reads for this model: continuous batching keeps Triton's queue empty.
    clients = 3
    during, after, lengths = in_flight_under_load(
        continuous_server, MODEL, small_reference.endless_prompt(LONG_TOKENS), clients, LONG_TOKENS
    )
    assert during is not None and 0 < during <= clients  # one per request taken, never more
    assert after == 0  # every answered request left the count
    assert lengths and set(lengths) == {LONG_TOKENS}  # each ran to its limit: EOS was never reached
    models, _ = server_status(continuous_server.http_url, continuous_server.metrics_url)
    shown = {model.name: model.in_flight for model in models}
    assert shown[MODEL] == 0  # `trb status` reads the gauge (None where a model exports none)


def test_a_bad_request_is_rejected_and_the_loop_keeps_serving(
    continuous_server: TritonServer, small_reference: Reference
) -> None:
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException, match="MAX_NEW_TOKENS"):
        generate(continuous_server, MODEL, [PROMPTS[0]], MAX_NEW_TOKENS=("INT32", [0]))
    prompts = [PROMPTS[0], PROMPTS[3]]
    ids = generate(continuous_server, MODEL, prompts, MAX_NEW_TOKENS=("INT32", [5, 9]))[1]
    assert ids == [small_reference.ids(PROMPTS[0], 5), small_reference.ids(PROMPTS[3], 9)]


def test_sampling_with_a_seed_is_reproducible_while_other_requests_run(
    continuous_server: TritonServer,
) -> None:
    sampling = {
        "MAX_NEW_TOKENS": ("INT32", [10]),
        "DO_SAMPLE": ("BOOL", [True]),
        "TEMPERATURE": ("FP32", [1.3]),
        "SEED": ("INT64", [42]),
    }
    alone = generate(continuous_server, MODEL, [PROMPTS[1]], **sampling)
    with ThreadPoolExecutor(2) as pool:
        busy = pool.submit(generate, continuous_server, MODEL, [PROMPTS[4]], MAX_NEW_TOKENS=("INT32", [40]))
        time.sleep(0.05)
        assert generate(continuous_server, MODEL, [PROMPTS[1]], **sampling) == alone
        busy.result()


def test_a_beam_search_request_runs_beside_the_running_batch(
    continuous_server: TritonServer, small_reference: Reference
) -> None:
    with ThreadPoolExecutor(2) as pool:
        greedy = pool.submit(
            generate, continuous_server, MODEL, [PROMPTS[0]], MAX_NEW_TOKENS=("INT32", [LONG_TOKENS])
        )
        time.sleep(0.05)
        beams = generate(
            continuous_server,
            MODEL,
            [PROMPTS[3], PROMPTS[5]],
            NUM_BEAMS=("INT32", [3, 3]),
            MAX_NEW_TOKENS=("INT32", [15, 15]),
        )[1]
        assert beams == [
            small_reference.ids(PROMPTS[3], 15, num_beams=3),
            small_reference.ids(PROMPTS[5], 15, num_beams=3),
        ]
        assert greedy.result()[1][0] == small_reference.ids(PROMPTS[0], LONG_TOKENS)


def test_a_repository_built_without_the_cross_cache_model_fails_to_load_and_says_why(
    continuous_build: BuildResult, tmp_path: Path
) -> None:
    older = tmp_path / "repository"
    shutil.copytree(continuous_build.repository, older, ignore=shutil.ignore_patterns(MANIFEST_NAME))
    (older / MODEL / "1" / CROSS_CACHE_FILE).unlink()
    server = TritonServer(launch_spec(older)).start()
    try:
        with pytest.raises(ServerError, match=f"{CROSS_CACHE_FILE}.*rebuild the repository"):
            server.wait_ready(timeout_s=60)
    finally:
        server.stop()
