"""Beam search (`templates/seq2seq/beam.py` through `Seq2SeqGenerator`) against transformers' `generate`."""

# ruff: noqa: F811

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from seq2seq_fixtures import PROMPTS, tiny_t5, torch_threads  # noqa: F401  (fixtures)
from transformers import AutoTokenizer, T5ForConditionalGeneration

from model_repo_builder.export.seq2seq_export import export_seq2seq
from model_repo_builder.templates.seq2seq.beam import BeamSearch, log_softmax
from model_repo_builder.templates.seq2seq.generation import (
    MAX_BEAMS,
    GenerationParams,
    GeneratorSettings,
    InvalidRequestError,
    Seq2SeqGenerator,
    check_params,
)

EOS = 1


@pytest.fixture(scope="module")
def eager_t5(tmp_path_factory: pytest.TempPathFactory, tiny_t5: Path) -> Path:
    """The tiny T5 with its EOS output row scaled ×4, so hypotheses end at many different lengths."""
    directory = tmp_path_factory.mktemp("eager-eos-t5")
    model = T5ForConditionalGeneration.from_pretrained(str(tiny_t5))
    with torch.no_grad():
        model.lm_head.weight[EOS] *= 4
    model.save_pretrained(directory, safe_serialization=True)
    AutoTokenizer.from_pretrained(str(tiny_t5)).save_pretrained(directory)
    export_seq2seq(directory, directory / "onnx")
    return directory


@pytest.fixture(scope="module")
def generator(eager_t5: Path) -> Seq2SeqGenerator:
    settings = GeneratorSettings(intra_op_threads=1)
    return Seq2SeqGenerator.from_directory(
        str(eager_t5 / "onnx"), settings, tokenizer_path=str(eager_t5 / "tokenizer.json")
    )


@pytest.fixture(scope="module")
def hf_beams(eager_t5: Path):
    tokenizer = AutoTokenizer.from_pretrained(str(eager_t5))
    model = T5ForConditionalGeneration.from_pretrained(str(eager_t5)).eval()

    def generate(prompt: str, num_beams: int, max_new_tokens: int) -> list[int]:
        with torch.inference_mode(), torch_threads(1):
            output = model.generate(
                **tokenizer(prompt, return_tensors="pt"),
                max_new_tokens=max_new_tokens,
                num_beams=num_beams,
                do_sample=False,
            )
        return output[0, 1:].tolist()

    return generate


CASES = [(prompt, width, limit) for prompt in PROMPTS for width, limit in ((2, 6), (4, 20), (3, 40))]


def test_each_prompt_equals_hf_beam_search(generator: Seq2SeqGenerator, hf_beams) -> None:
    ended_early = 0
    for prompt, width, limit in CASES:
        ids = generator.beam_search(generator.tokenize([prompt]), width, [limit])[0]
        assert ids == hf_beams(prompt, width, limit), (prompt, width, limit)
        ended_early += ids[-1] == EOS and len(ids) < limit
    # Hypotheses that end before the limit, and the search stopping early, are among what was compared.
    assert ended_early >= 5


def test_prompts_searched_together_equal_each_searched_alone(generator: Seq2SeqGenerator, hf_beams) -> None:
    prompts, limits = list(PROMPTS[:5]), [4, 30, 11, 25, 7]
    together = generator.beam_search(generator.tokenize(prompts), 3, limits)
    assert together == [hf_beams(prompt, 3, limit) for prompt, limit in zip(prompts, limits, strict=True)]


def test_greedy_sampled_and_beam_rows_in_one_call_each_get_their_own_answer(
    generator: Seq2SeqGenerator, hf_beams
) -> None:
    params = [
        GenerationParams(max_new_tokens=9),
        GenerationParams(max_new_tokens=9, num_beams=4),
        GenerationParams(max_new_tokens=9, do_sample=True, seed=3),
        GenerationParams(max_new_tokens=12, num_beams=2),
    ]
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[2], PROMPTS[3]]
    mixed = generator.generate_ids(generator.tokenize(prompts), params)
    alone = [
        generator.generate_ids(generator.tokenize([p]), [q])[0] for p, q in zip(prompts, params, strict=True)
    ]
    assert mixed == alone
    assert mixed[1] == hf_beams(PROMPTS[1], 4, 9)


def test_beam_search_cannot_stream(generator: Seq2SeqGenerator) -> None:
    with pytest.raises(InvalidRequestError, match="cannot stream"):
        generator.generate_ids(
            generator.tokenize(["ok"]),
            [GenerationParams(max_new_tokens=3, num_beams=2)],
            on_step=lambda rows, tokens, done: None,
        )


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (GenerationParams(max_new_tokens=5, num_beams=0), "NUM_BEAMS must be between 1 and"),
        (GenerationParams(max_new_tokens=5, num_beams=MAX_BEAMS + 1), "NUM_BEAMS must be between 1 and"),
        (GenerationParams(max_new_tokens=5, num_beams=2, do_sample=True), "beam sampling"),
    ],
)
def test_unservable_beam_parameters_are_rejected(params: GenerationParams, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        check_params(params, GeneratorSettings())


def test_a_search_stops_once_no_running_beam_can_win() -> None:
    # Vocabulary of 3 (0, EOS=1, 2). Step 1: every continuation of the single live beam; EOS is best.
    search = BeamSearch(num_beams=2, max_new_tokens=10, eos_token_id=EOS)
    first = log_softmax(np.array([[0.0, 3.0, 1.0], [0.0, 3.0, 1.0]], dtype=np.float32))
    assert not search.advance(first)  # one finished hypothesis, two slots: keep searching
    assert search.best() == [EOS]
    assert search.running[:, -1].tolist() == [2, 0]  # the best two that did not end
    # Step 2: both running beams end with EOS at a far lower score than [EOS] alone.
    second = log_softmax(np.array([[-9.0, 9.0, -9.0], [-9.0, 9.0, -9.0]], dtype=np.float32))
    assert search.advance(second)  # both slots taken, and no running beam can beat the worst
    assert search.best() == [EOS]
    assert search.is_finished.all()
