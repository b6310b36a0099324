"""BART, Marian and mBART repositories on the real tritonserver, against transformers' `generate`.

Random-weight models of each family with the token rules real checkpoints ship (BART: forced BOS
and EOS, no repeated trigram, a minimum length; Marian: never the padding token) and a position table
shorter than the tokenizer's limit. fp32 greedy and beam-search ids must equal `generate` exactly,
over HTTP, gRPC and streaming, with requests joining the continuous batch at different steps.
"""

# ruff: noqa: F811

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from seq2seq_fixtures import (
    PROMPTS,
    Reference,
    generate,
    launch_spec,
    session_bart_family,
    session_build,
    stream,
)
from tritonclient.utils import InferenceServerException

from model_repo_builder.build import BuildResult
from model_repo_builder.repository.manifest import read_manifest
from model_repo_builder.runtime.server import TritonServer
from model_repo_builder.templates.seq2seq.continuous import generate_staggered
from model_repo_builder.templates.seq2seq.generation import (
    GenerationParams,
    GeneratorSettings,
    Seq2SeqGenerator,
)

pytestmark = pytest.mark.integration

SERVED = ("bart", "marian")
POSITIONS = 128  # BART_FAMILY_SIZE["max_position_embeddings"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {family: session_bart_family(tmp_path_factory, family) for family in (*SERVED, "mbart")}


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory, models: dict[str, Path]) -> dict[str, BuildResult]:
    return {
        family: session_build(tmp_path_factory, path, precision="fp32", name=family)  # continuous
        for family, path in models.items()
    }


@pytest.fixture(scope="module")
def references(models: dict[str, Path]) -> dict[str, Reference]:
    return {family: Reference(path) for family, path in models.items()}


@pytest.fixture(scope="module", params=SERVED)
def served(
    request: pytest.FixtureRequest, builds: dict[str, BuildResult]
) -> Iterator[tuple[str, TritonServer]]:
    family = request.param
    with TritonServer(launch_spec(builds[family].repository)) as server:
        yield family, server


def _version_dir(build: BuildResult, family: str) -> Path:
    return build.repository / family / "1"


def _generator(build: BuildResult, family: str) -> Seq2SeqGenerator:
    parameters = read_manifest(build.repository)
    settings = GeneratorSettings.from_parameters(
        {
            "decoder_start_token_id": str(parameters.model["decoder_start_token_id"]),
            "eos_token_id": str(parameters.model["eos_token_id"]),
            "max_input_tokens": str(parameters.model["max_input_tokens"]),
            **parameters.model["token_rules"],
        }
    )
    return Seq2SeqGenerator.from_directory(str(_version_dir(build, family)), settings)


def test_the_build_records_the_rules_limits_and_what_the_served_model_does_differently(
    builds: dict[str, BuildResult], models: dict[str, Path]
) -> None:
    manifest = read_manifest(builds["bart"].repository)
    assert manifest.task == "text2text-generation"
    rules = manifest.model["token_rules"]
    assert {"forced_bos_token_id", "forced_eos_token_id", "no_repeat_ngram_size", "min_length"} <= set(rules)
    assert (manifest.model["max_input_tokens"], manifest.model["max_new_tokens_limit"]) == (128, 127)
    differences = " ".join(manifest.model["generation_config_differences"])
    assert "num_beams=4" in differences and "length_penalty=2.0" in differences
    marian = read_manifest(builds["marian"].repository).model["token_rules"]
    assert marian["banned_token_ids"] == "0"  # the padding token, id 0
    for family, build in builds.items():
        verification = read_manifest(build.repository).verification
        assert verification["greedy_exact"] == 1.0 and verification["top1_agreement"] == 1.0, family


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_greedy_requests_equal_hf_generate(
    served: tuple[str, TritonServer], references: dict[str, Reference], protocol: str
) -> None:
    family, server = served
    reference = references[family]
    for prompt in PROMPTS:
        texts, ids = generate(server, family, [prompt], protocol, MAX_NEW_TOKENS=("INT32", [12]))
        expected = reference.ids(prompt, 12)
        assert ids == [expected], prompt
        assert texts == [reference.text(expected)]
    if family == "bart":  # the forced first and last tokens
        assert (
            expected[0] == reference.tokenizer.bos_token_id
            and expected[-1] == reference.tokenizer.eos_token_id
        )


def test_requests_joining_the_running_batch_at_different_steps_equal_hf_generate(
    served: tuple[str, TritonServer], references: dict[str, Reference]
) -> None:
    family, server = served
    jobs = [(PROMPTS[i % len(PROMPTS)], 3 + (7 * i) % 20) for i in range(12)]
    expected = [references[family].ids(prompt, limit) for prompt, limit in jobs]
    barrier = threading.Barrier(len(jobs))

    def one(job: tuple[str, int]) -> list[int]:
        barrier.wait()
        return generate(server, family, [job[0]], MAX_NEW_TOKENS=("INT32", [job[1]]))[1][0]

    with ThreadPoolExecutor(len(jobs)) as pool:
        assert list(pool.map(one, jobs)) == expected


def test_beam_search_equals_hf_beam_search(
    served: tuple[str, TritonServer], references: dict[str, Reference]
) -> None:
    family, server = served
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[4]]
    ids = generate(
        server, family, prompts, NUM_BEAMS=("INT32", [3, 1, 2]), MAX_NEW_TOKENS=("INT32", [12, 12, 16])
    )[1]
    reference = references[family]
    assert ids == [
        reference.ids(PROMPTS[0], 12, num_beams=3),
        reference.ids(PROMPTS[1], 12),
        reference.ids(PROMPTS[4], 16, num_beams=2),
    ]


def test_streaming_sends_the_same_tokens(
    served: tuple[str, TritonServer], references: dict[str, Reference]
) -> None:
    family, server = served
    deltas, ids = stream(server, f"{family}_stream", [PROMPTS[1]], 10)
    assert ids == references[family].ids(PROMPTS[1], 10)
    assert "".join(deltas) == generate(server, family, [PROMPTS[1]], MAX_NEW_TOKENS=("INT32", [10]))[0][0]


def test_limits_come_from_the_position_table(served: tuple[str, TritonServer]) -> None:
    family, server = served
    cases = [
        (["the weather builds quiet evenings " * 40], {}, f"accepts at most {POSITIONS}"),
        (["ok"], {"MAX_NEW_TOKENS": ("INT32", [POSITIONS])}, f"between 1 and {POSITIONS - 1}"),
    ]
    for prompts, parameters, message in cases:
        with pytest.raises(InferenceServerException) as caught:
            generate(server, family, prompts, **parameters)
        assert caught.value.status() == "400" and message in caught.value.message()
    assert generate(server, family, ["ok"], MAX_NEW_TOKENS=("INT32", [POSITIONS - 1]))[1][0]


def test_mbart_is_served_exactly_in_process(
    builds: dict[str, BuildResult], references: dict[str, Reference]
) -> None:
    generator = _generator(builds["mbart"], "mbart")
    prompts = list(PROMPTS[:4])
    params = [GenerationParams(max_new_tokens=limit) for limit in (12, 5, 9, 14)]
    served = generate_staggered(generator, generator.tokenize(prompts), params)
    assert served == [
        references["mbart"].ids(p, g.max_new_tokens) for p, g in zip(prompts, params, strict=True)
    ]


def test_each_row_needs_its_own_position(
    builds: dict[str, BuildResult], references: dict[str, Reference], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the per-row positions, rows that joined later are embedded at the cache length: wrong."""
    generator = _generator(builds["bart"], "bart")
    prompts = list(PROMPTS[:4])
    params = [GenerationParams(max_new_tokens=12)] * len(prompts)
    expected = [references["bart"].ids(prompt, 12) for prompt in prompts]
    assert generate_staggered(generator, generator.tokenize(prompts), params) == expected
    shared_position = generator.next_step
    monkeypatch.setattr(
        generator, "next_step", lambda *args, positions=None: shared_position(*args, positions=None)
    )
    assert generate_staggered(generator, generator.tokenize(prompts), params) != expected


def test_int8_builds_within_its_tolerance(
    tmp_path_factory: pytest.TempPathFactory, models: dict[str, Path]
) -> None:
    build = session_build(tmp_path_factory, models["bart"], precision="int8", name="bart-int8")
    verification = read_manifest(build.repository).verification
    assert verification["top1_agreement"] >= 0.75 and (build.repository / "bart-int8" / "1").is_dir()
