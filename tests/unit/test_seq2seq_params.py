"""Request parsing, parameter validation, nucleus sampling and the config of seq2seq repositories."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from model_repo_builder.cli import main
from model_repo_builder.repository import config as model_config
from model_repo_builder.repository.readme import render_readme
from model_repo_builder.repository.seq2seq import WARMUP_NEW_TOKENS_FILE, model_configuration
from model_repo_builder.spec import BuildSpec
from model_repo_builder.tasks import get_task
from model_repo_builder.templates.seq2seq.generation import (
    PARAMETER_INPUTS,
    GenerationParams,
    GeneratorSettings,
    InvalidRequestError,
    TextStream,
    decode_prompts,
    nucleus,
    pad_token_rows,
    request_params,
    sample_token,
)

SETTINGS = GeneratorSettings(default_max_new_tokens=20, max_new_tokens_limit=100)


def test_missing_inputs_mean_greedy_with_the_default_length() -> None:
    assert request_params(2, {}, SETTINGS) == [GenerationParams(max_new_tokens=20)] * 2


def test_one_value_applies_to_every_prompt_and_one_per_prompt_is_per_row() -> None:
    values = {
        "MAX_NEW_TOKENS": np.array([[5]], dtype=np.int32),
        "DO_SAMPLE": np.array([[True], [False]]),
        "TEMPERATURE": np.array([[0.5], [2.0]], dtype=np.float32),
        "SEED": np.array([[11]], dtype=np.int64),
    }
    first, second = request_params(2, values, SETTINGS)
    assert (first.max_new_tokens, first.do_sample, first.temperature, first.seed) == (5, True, 0.5, 11)
    assert (second.max_new_tokens, second.do_sample, second.temperature, second.seed) == (5, False, 2.0, 11)
    assert isinstance(first.max_new_tokens, int) and isinstance(first.do_sample, bool)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"MAX_NEW_TOKENS": np.array([[0]])}, "MAX_NEW_TOKENS must be between 1 and 100, got 0"),
        ({"MAX_NEW_TOKENS": np.array([[-3]])}, "got -3"),
        ({"MAX_NEW_TOKENS": np.array([[10**6]])}, "got 1000000"),
        ({"NUM_BEAMS": np.array([[9]])}, "NUM_BEAMS must be between 1 and 8, got 9"),
        ({"NUM_BEAMS": np.array([[2]]), "DO_SAMPLE": np.array([[True]])}, "beam sampling"),
        ({"DO_SAMPLE": np.array([[True]]), "TEMPERATURE": np.array([[0.0]])}, "TEMPERATURE must be"),
        ({"DO_SAMPLE": np.array([[True]]), "TEMPERATURE": np.array([[np.nan]])}, "TEMPERATURE must be"),
        ({"DO_SAMPLE": np.array([[True]]), "TOP_P": np.array([[1.5]])}, "TOP_P must be in (0, 1]"),
        ({"DO_SAMPLE": np.array([[True]]), "TOP_P": np.array([[0.0]])}, "TOP_P must be in (0, 1]"),
        ({"SEED": np.array([[-1]])}, "SEED must be ≥ 0"),
        ({"MAX_NEW_TOKENS": np.array([[1], [2], [3]])}, "must hold 1 value or one per prompt (2), got 3"),
    ],
)
def test_bad_parameters_name_the_input(values: dict[str, np.ndarray], message: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        request_params(2, values, SETTINGS)
    assert message in str(caught.value)


def test_sampling_parameters_are_ignored_for_greedy_requests() -> None:
    (params,) = request_params(1, {"TEMPERATURE": np.array([[0.0]])}, SETTINGS)
    assert params.do_sample is False


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (np.array([[b""]], dtype=np.object_), "PROMPT[0] is empty"),
        (np.array([[b"ok"], [b" \n\t"]], dtype=np.object_), "PROMPT[1] is empty"),
        (np.array([[b"\xff\xfe"]], dtype=np.object_), "PROMPT[0] is not valid UTF-8"),
        (np.array([[3]], dtype=np.object_), "PROMPT[0] must be a string, got int"),
    ],
)
def test_bad_prompts_are_rejected(raw: np.ndarray, message: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        decode_prompts(raw)
    assert message in str(caught.value)


def test_prompts_decode_from_bytes_and_str() -> None:
    raw = np.array([["héllo".encode()], ["wörld"]], dtype=np.object_)
    assert decode_prompts(raw) == ["héllo", "wörld"]


BOUNDARY_PROBS = np.array([0.5, 0.3, 0.15, 0.05])
BOUNDARY_CASES = [
    (BOUNDARY_PROBS, 0.5, [0]),
    (BOUNDARY_PROBS, 0.8, [0, 1]),
    (BOUNDARY_PROBS, 0.95, [0, 1, 2]),
    (BOUNDARY_PROBS, 1.0, [0, 1, 2, 3]),
    # 0.4 + 0.3 + 0.2 sums to 0.8999999999999999 in float64: below 0.9 on every CPU.
    (np.array([0.4, 0.3, 0.2, 0.1]), 0.9, [0, 1, 2]),
    (np.array([0.4, 0.3, 0.2, 0.1]), 0.7, [0, 1]),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("probs", "top_p", "kept"), BOUNDARY_CASES)
def test_a_top_p_the_distribution_reaches_exactly_keeps_the_smallest_set(
    dtype: type, probs: np.ndarray, top_p: float, kept: list[int]
) -> None:
    # The masses reach top_p exactly in exact arithmetic; in floating point they land on either side
    # of it depending on the CPU's exp and summation. The nucleus is the same on every machine.
    for temperature in (1.0, 0.5, 2.0):
        logits = (np.log(probs) * temperature).astype(dtype)
        tokens, kept_probs = nucleus(logits, temperature, top_p)
        assert tokens.tolist() == kept
        np.testing.assert_allclose(kept_probs, probs[kept], rtol=1e-6)


def test_a_top_p_just_past_a_boundary_keeps_the_next_token() -> None:
    logits = np.log(BOUNDARY_PROBS)
    assert nucleus(logits, 1.0, 0.8 + 1e-6)[0].tolist() == [0, 1, 2]
    assert nucleus(logits, 1.0, 0.8 - 1e-6)[0].tolist() == [0, 1]
    assert nucleus(logits, 1.0, 1e-6)[0].tolist() == [0]


def test_the_nucleus_equals_transformers_top_p_warper_away_from_boundaries() -> None:
    import torch
    from transformers.generation.logits_process import TopPLogitsWarper

    rng = np.random.default_rng(7)
    compared = 0
    for _ in range(200):
        logits = (rng.standard_normal(1000) * rng.uniform(0.5, 4.0)).astype(np.float32)
        top_p = float(rng.uniform(0.05, 0.99))
        sorted_probs = np.sort(np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum())[::-1]
        if np.abs(np.cumsum(sorted_probs) - top_p).min() < 1e-6:
            continue  # too close to a boundary for float32 transformers to decide the same way
        warped = TopPLogitsWarper(top_p)(None, torch.from_numpy(logits)[None, :])[0]
        expected = set(np.flatnonzero(np.isfinite(warped.numpy())).tolist())
        assert set(nucleus(logits, 1.0, top_p)[0].tolist()) == expected
        compared += 1
    assert compared > 150


def test_nucleus_sampling_draws_from_the_nucleus_in_proportion() -> None:
    logits = np.log(BOUNDARY_PROBS)
    rng = np.random.default_rng(0)
    assert {sample_token(logits, 1.0, 0.4, rng) for _ in range(200)} == {0}
    top_two = [sample_token(logits, 1.0, 0.8, rng) for _ in range(2000)]
    assert set(top_two) == {0, 1}
    assert abs(np.mean(np.array(top_two) == 0) - 0.5 / 0.8) < 0.05
    assert {sample_token(logits, 1.0, 1.0, rng) for _ in range(2000)} == {0, 1, 2, 3}


def test_low_temperature_concentrates_on_the_most_likely_token() -> None:
    logits = np.array([1.0, 0.9, 0.0], dtype=np.float32)
    rng = np.random.default_rng(1)
    assert {sample_token(logits, 1e-3, 1.0, rng) for _ in range(100)} == {0}


def test_token_rows_are_padded_with_minus_one() -> None:
    padded = pad_token_rows([[4, 5, 1], [7]])
    assert padded.dtype == np.int64
    assert padded.tolist() == [[4, 5, 1], [7, -1, -1]]


def test_settings_from_parameters_validate_the_default_length() -> None:
    parsed = GeneratorSettings.from_parameters({"eos_token_id": "3", "max_input_tokens": "128"})
    assert (parsed.eos_token_id, parsed.max_input_tokens) == (3, 128)
    with pytest.raises(ValueError, match="default_max_new_tokens"):
        GeneratorSettings.from_parameters({"default_max_new_tokens": "600", "max_new_tokens_limit": "512"})


def test_config_declares_prompt_text_ids_and_optional_parameters() -> None:
    spec = BuildSpec(source="x", instances=4, max_batch_size=8)
    config = model_config.parse(model_config.render(model_configuration(spec, "flan-t5", {"k": 1})))
    data = model_config.as_dict(config)
    inputs = {item["name"]: item for item in data["input"]}
    assert inputs["PROMPT"]["data_type"] == "TYPE_STRING" and not inputs["PROMPT"].get("optional")
    for item in PARAMETER_INPUTS:
        assert inputs[item.name]["data_type"] == item.data_type
        assert inputs[item.name]["optional"] is True
    outputs = {item["name"]: (item["data_type"], item["dims"]) for item in data["output"]}
    assert outputs == {"TEXT": ("TYPE_STRING", ["1"]), "TOKEN_IDS": ("TYPE_INT64", ["-1"])}
    assert data["instance_group"] == [{"count": 4, "kind": "KIND_CPU"}]
    assert data["max_batch_size"] == 8
    warmups = data["model_warmup"]
    assert [w["batch_size"] for w in warmups] == [1, 8]
    assert all(w["inputs"]["MAX_NEW_TOKENS"]["input_data_file"] == WARMUP_NEW_TOKENS_FILE for w in warmups)


def test_readme_describes_the_generation_interface() -> None:
    options = {
        "source": "flan-t5",
        "precision": "int8",
        "instances": 4,
        "max_batch_size": 32,
        "max_queue_size": 256,
    }
    model = {
        "max_input_tokens": 512,
        "default_max_new_tokens": 64,
        "max_new_tokens_limit": 512,
        "streaming_model": "flan-t5_stream",
    }
    readme = render_readme("flan-t5", options, model, "repos/flan-t5", task=get_task("text2text-generation"))
    assert "`PROMPT`" in readme and "`TOKEN_IDS`" in readme and "MAX_NEW_TOKENS" in readme
    assert "rejected, not\ntruncated" in readme
    assert "EMBEDDING" not in readme
    assert "`flan-t5_stream`" in readme
    assert "generated as one batch" in readme
    continuous = render_readme(
        "flan-t5",
        options,
        {**model, "batching": "continuous"},
        "repos/flan-t5",
        task=get_task("text2text-generation"),
    )
    assert "--batching continuous" in continuous and "generated as one batch" not in continuous


def test_streaming_variant_is_decoupled_with_one_instance_and_no_warmup() -> None:
    spec = BuildSpec(source="x", instances=4)
    config = model_configuration(spec, "flan-t5_stream", {"weights_model": "flan-t5"}, streaming=True)
    data = model_config.as_dict(model_config.parse(model_config.render(config)))
    assert data["model_transaction_policy"] == {"decoupled": True}
    assert data["instance_group"] == [{"count": 1, "kind": "KIND_CPU"}]
    assert "model_warmup" not in data
    assert data["parameters"]["weights_model"] == {"string_value": "flan-t5"}


def test_text_stream_deltas_join_to_the_full_text() -> None:
    pieces = {5: "▁Hello", 6: ",", 7: "▁wor", 8: "ld", 9: "!"}

    def detokenize(ids):
        return "".join(pieces[i] for i in ids).replace("▁", " ").lstrip()

    stream = TextStream(detokenize)
    deltas = [stream.push(token) for token in (5, 6, 7, 8, 9)]
    assert deltas == ["Hello", ",", " wor", "ld", "!"]
    assert "".join(deltas) + stream.flush() == detokenize([5, 6, 7, 8, 9])


def test_offline_alias_without_weights_fails_cleanly_and_writes_nothing(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    output = tmp_path / "repos"
    result = CliRunner().invoke(main, ["build", "flan-t5", "--instances", "4", "--output", str(output)])
    assert result.exit_code != 0
    assert "google/flan-t5-small" in result.output
    assert "--model-dir" in result.output
    assert "Traceback" not in result.output
    assert not output.exists() or not any(output.iterdir())


def test_batching_option_is_offered_and_a_bad_value_is_a_usage_error(tmp_path) -> None:
    help_text = CliRunner().invoke(main, ["build", "--help"]).output
    assert "--batching [request|continuous]" in help_text
    result = CliRunner().invoke(main, ["build", "flan-t5", "--batching", "iteration", "-o", str(tmp_path)])
    assert result.exit_code == 2
    assert "iteration" in result.output and "Traceback" not in result.output
    assert BuildSpec(source="x").batching == "continuous"
