"""The served decode loop (`templates/seq2seq/generation.py`) against transformers' `generate`, in-process.

Uses a tiny random T5 exported once per session; the served-repository tests are in
tests/integration/test_seq2seq_e2e.py.
"""

# Fixtures are imported from seq2seq_fixtures (tests/conftest.py belongs to the embedding tests), so
# pytest finds them here; their names then reappear as test arguments.
# ruff: noqa: F811

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from seq2seq_fixtures import PROMPTS, tiny_t5, tiny_t5_onnx, torch_threads  # noqa: F401  (fixtures)
from transformers import AutoTokenizer, T5ForConditionalGeneration

from model_repo_builder.errors import VerificationError
from model_repo_builder.export.seq2seq_export import Seq2SeqOnnx, convert_seq2seq
from model_repo_builder.export.seq2seq_verify import verify_seq2seq
from model_repo_builder.templates.seq2seq.generation import (
    GenerationParams,
    GeneratorSettings,
    InvalidRequestError,
    Seq2SeqGenerator,
)


def _generator(onnx_dir: Path, model_dir: Path, **settings: object) -> Seq2SeqGenerator:
    return Seq2SeqGenerator.from_directory(
        str(onnx_dir),
        GeneratorSettings(intra_op_threads=1, **settings),  # type: ignore[arg-type]
        tokenizer_path=str(model_dir / "tokenizer.json"),
    )


@pytest.fixture(scope="module")
def generator(tiny_t5_onnx: Path, tiny_t5: Path) -> Seq2SeqGenerator:
    return _generator(tiny_t5_onnx, tiny_t5)


@pytest.fixture(scope="module")
def reference(tiny_t5: Path):
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_t5))
    model = T5ForConditionalGeneration.from_pretrained(str(tiny_t5)).eval()

    def generate(prompt: str, max_new_tokens: int, **kwargs: object) -> list[int]:
        batch = tokenizer(prompt, return_tensors="pt")
        with torch.inference_mode(), torch_threads(1):
            output = model.generate(
                **batch, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, **kwargs
            )
        return output[0, 1:].tolist()

    return tokenizer, generate


def test_greedy_single_prompts_equal_hf_generate(generator: Seq2SeqGenerator, reference) -> None:
    tokenizer, generate = reference
    for prompt in PROMPTS:
        texts, ids = generator.generate([prompt], [GenerationParams(max_new_tokens=12)])
        assert ids[0] == generate(prompt, 12), prompt
        assert texts[0] == tokenizer.decode(ids[0], skip_special_tokens=True)
        assert texts[0].strip(), "the tiny model only emits known tokens, so the text is not empty"


def test_batch_of_mixed_lengths_and_limits_equals_one_by_one(generator: Seq2SeqGenerator, reference) -> None:
    _, generate = reference
    limits = [3, 12, 1, 7, 12, 5]
    params = [GenerationParams(max_new_tokens=limit) for limit in limits]
    _, ids = generator.generate(list(PROMPTS), params)
    assert [len(row) for row in ids] == limits
    for prompt, limit, row in zip(PROMPTS, limits, ids, strict=True):
        assert row == generate(prompt, limit), prompt


def test_sequences_that_emit_eos_leave_the_batch(tiny_t5_onnx: Path, tiny_t5: Path, reference) -> None:
    _, generate = reference
    greedy = generate(PROMPTS[0], 10)
    eos = greedy[3]  # pretend the 4th token of the first prompt is the end-of-sequence token
    generator = _generator(tiny_t5_onnx, tiny_t5, eos_token_id=eos)
    _, ids = generator.generate(list(PROMPTS), [GenerationParams(max_new_tokens=10)] * len(PROMPTS))
    assert ids[0] == greedy[: greedy.index(eos) + 1]
    for prompt, row in zip(PROMPTS, ids, strict=True):
        expected = generate(prompt, 10, eos_token_id=eos)
        # transformers pads finished rows of a batch; alone, a row simply ends at EOS.
        assert row == expected, prompt
        assert eos not in row[:-1]


def test_sampling_is_reproducible_with_a_seed(generator: Seq2SeqGenerator) -> None:
    prompts = [PROMPTS[1], PROMPTS[3]]
    params = [GenerationParams(max_new_tokens=10, do_sample=True, temperature=1.5, seed=7)] * 2
    _, first = generator.generate(prompts, params)
    _, again = generator.generate(prompts, params)
    assert first == again
    others = [
        generator.generate(prompts, [dataclasses.replace(p, seed=seed) for p in params])[1]
        for seed in (8, 9, 10)
    ]
    assert any(other != first for other in others)


def test_tiny_top_p_is_greedy(generator: Seq2SeqGenerator) -> None:
    greedy = generator.generate([PROMPTS[0]], [GenerationParams(max_new_tokens=10)])[1]
    nucleus = GenerationParams(max_new_tokens=10, do_sample=True, top_p=1e-6, seed=3)
    assert generator.generate([PROMPTS[0]], [nucleus])[1] == greedy


def test_greedy_and_sampling_rows_share_a_batch(generator: Seq2SeqGenerator) -> None:
    greedy = GenerationParams(max_new_tokens=8)
    sampled = GenerationParams(max_new_tokens=8, do_sample=True, seed=1)
    alone = generator.generate([PROMPTS[0]], [greedy])[1][0]
    together = generator.generate([PROMPTS[0], PROMPTS[0]], [greedy, sampled])[1]
    assert together[0] == alone


def test_verification_passes_for_fp32_and_reports_each_part(
    generator: Seq2SeqGenerator, tiny_t5: Path
) -> None:
    report = verify_seq2seq(generator, tiny_t5, "fp32", allow_pickle=False, continuous=True)
    assert set(report.max_diffs) == {
        "encoder.last_hidden_state",
        "decoder.logits",
        "decoder_with_past.logits",
        "cross_cache",
    }
    assert report.top1_agreement == 1.0
    assert report.greedy_exact == 1.0
    assert max(report.relative_diffs.values()) < 1e-4
    assert "top-1 agreement 100.0%" in report.as_dict()["summary"]


def test_verification_catches_a_wrong_decoder(tiny_t5_onnx: Path, tiny_t5: Path) -> None:
    # A wrong decoder start token changes every logit the decoder produces.
    wrong = _generator(tiny_t5_onnx, tiny_t5, decoder_start_token_id=5)
    with pytest.raises(VerificationError) as caught:
        verify_seq2seq(wrong, tiny_t5, "fp32", allow_pickle=False, continuous=False)
    assert "decoder.logits" in caught.value.max_diffs
    assert caught.value.max_diffs["decoder.logits"] > 1e-3
    assert "max |diff| per output" in str(caught.value)
    assert caught.value.report is not None and caught.value.report["top1_agreement"] < 0.97


def test_teacher_forced_logits_shapes(generator: Seq2SeqGenerator) -> None:
    ids = generator.tokenize(PROMPTS[:2])
    targets = np.array([[5, 6, 7], [8, 9, 10]])
    hidden, first, later = generator.teacher_forced_logits(ids, targets)
    assert hidden.shape[:2] == (2, max(len(row) for row in ids))
    assert first.shape == (2, 1024)
    assert later.shape == (2, 3, 1024)


@pytest.mark.parametrize(("precision", "min_agreement"), [("fp16", 0.95), ("int8", 0.75)])
def test_converted_parts_pass_verification(
    tiny_t5_onnx: Path, tiny_t5: Path, tmp_path: Path, precision: str, min_agreement: float
) -> None:
    converted = convert_seq2seq(Seq2SeqOnnx.in_directory(tiny_t5_onnx), precision, tmp_path)
    assert all(path.is_file() and path.parent.parent == tmp_path for path in converted.files().values())
    generator = Seq2SeqGenerator(
        {name: str(path) for name, path in converted.files().items()},
        str(tiny_t5 / "tokenizer.json"),
        GeneratorSettings(intra_op_threads=1),
    )
    report = verify_seq2seq(generator, tiny_t5, precision, allow_pickle=False, continuous=True)
    assert report.top1_agreement >= min_agreement
    assert 0 < max(report.max_diffs.values()) < 5.0


def test_prompts_over_the_limit_are_rejected_but_verification_truncates(
    tiny_t5_onnx: Path, tiny_t5: Path
) -> None:
    generator = _generator(tiny_t5_onnx, tiny_t5, max_input_tokens=8)
    with pytest.raises(
        InvalidRequestError, match=r"PROMPT\[1\] has \d+ tokens; this model accepts at most 8"
    ):
        generator.tokenize(["ok", PROMPTS[0]])
    short, cut = generator.tokenize(["ok", PROMPTS[0]], truncate=True)
    assert short == generator.tokenize(["ok"])[0]
    assert len(cut) == 8 and cut[-1] == 1  # cut to the limit, still ending with EOS
    report = verify_seq2seq(generator, tiny_t5, "fp32", allow_pickle=False, continuous=False)
    assert report.top1_agreement == 1.0
