"""Continuous batching (`templates/seq2seq/continuous.py`) in-process, against transformers' `generate`.

Sequences are admitted at different steps, so rows with self-attention caches of different lengths
share each decoder-with-past call; fp32 greedy ids must still equal `generate` prompt by prompt.
"""

# ruff: noqa: F811

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from seq2seq_fixtures import PROMPTS, tiny_t5, tiny_t5_onnx, torch_threads  # noqa: F401  (fixtures)
from transformers import AutoTokenizer, T5ForConditionalGeneration

from model_repo_builder.templates.seq2seq.continuous import ContinuousBatch, StepEvent
from model_repo_builder.templates.seq2seq.generation import (
    CROSS_CACHE_FILE,
    MODEL_FILES,
    SELF_ATTENTION_BIAS_INPUT,
    GenerationParams,
    GeneratorSettings,
    Seq2SeqGenerator,
    self_attention_length,
)


@pytest.fixture(scope="module")
def generator(tiny_t5_onnx: Path, tiny_t5: Path) -> Seq2SeqGenerator:
    settings = GeneratorSettings(intra_op_threads=1)
    return Seq2SeqGenerator.from_directory(
        str(tiny_t5_onnx), settings, tokenizer_path=str(tiny_t5 / "tokenizer.json")
    )


@pytest.fixture(scope="module")
def reference(tiny_t5: Path):
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_t5))
    model = T5ForConditionalGeneration.from_pretrained(str(tiny_t5)).eval()

    def generate(prompt: str, max_new_tokens: int) -> list[int]:
        with torch.inference_mode(), torch_threads(1):
            output = model.generate(
                **tokenizer(prompt, return_tensors="pt"),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
            )
        return output[0, 1:].tolist()

    return generate


def _run(batch: ContinuousBatch, arrivals: dict[int, list[tuple[str, int, int]]]) -> tuple[dict, list]:
    """Admit `arrivals[step]` (tag, prompt, limit) before decode step `step`; return ids and finish order."""
    results: dict[int, list[int]] = {}
    finished: list[int] = []

    def collect(events: list[StepEvent]) -> None:
        for event in events:
            if event.done:
                results[event.tag] = list(event.tokens)  # type: ignore[index]
                finished.append(event.tag)  # type: ignore[arg-type]

    step = 0
    while step <= max(arrivals) or len(batch):
        jobs = arrivals.get(step, [])
        if jobs:
            prompts = [prompt for prompt, _, _ in jobs]
            batch.admit(
                batch.generator.tokenize(prompts),
                [GenerationParams(max_new_tokens=limit) for _, limit, _ in jobs],
                [tag for _, _, tag in jobs],
            )
        collect(batch.step())
        step += 1
    return results, finished


def test_the_exported_decoder_with_past_takes_a_self_attention_mask(generator: Seq2SeqGenerator) -> None:
    assert generator.accepts_self_attention_mask
    names = {i.name for i in generator.decoder_with_past.get_inputs()}
    assert SELF_ATTENTION_BIAS_INPUT in names


def test_staggered_sequences_sharing_steps_equal_hf_generate(generator: Seq2SeqGenerator, reference) -> None:
    # Six prompts of different lengths arrive at steps 0, 0, 2, 5, 6 and 11, with different limits, so
    # most steps mix cache lengths (and encoder lengths) in one call, and rows leave in between.
    arrivals = {
        0: [(PROMPTS[0], 20, 0), (PROMPTS[1], 6, 1)],
        2: [(PROMPTS[2], 14, 2)],
        5: [(PROMPTS[3], 25, 3)],
        6: [(PROMPTS[4], 9, 4)],
        11: [(PROMPTS[5], 18, 5)],
    }
    results, _ = _run(ContinuousBatch(generator), arrivals)
    for jobs in arrivals.values():
        for prompt, limit, tag in jobs:
            assert results[tag] == reference(prompt, limit), (tag, prompt)


def test_a_short_sequence_admitted_later_finishes_before_a_long_one(generator: Seq2SeqGenerator) -> None:
    arrivals = {0: [(PROMPTS[0], 30, "long")], 3: [(PROMPTS[1], 4, "short")]}
    batch = ContinuousBatch(generator)
    results, finished = _run(batch, arrivals)
    assert len(results["long"]) == 30  # the tiny model does not end this prompt early
    assert finished == ["short", "long"]
    assert len(batch) == 0


def test_a_newcomer_first_step_in_the_running_batch_equals_the_first_step_decoder(
    generator: Seq2SeqGenerator,
) -> None:
    """The mask is what makes a newcomer's row exact: with a zero bias it would attend to padding."""
    ids = generator.tokenize([PROMPTS[0], PROMPTS[3]])
    params = [GenerationParams(max_new_tokens=30)]
    batch = ContinuousBatch(generator)
    batch.admit([ids[0]], params, ["a"])
    for _ in range(5):
        batch.step()
    batch.admit([ids[1]], params, ["b"])  # joins with an empty self-attention cache

    def logits(running: ContinuousBatch, masked: bool) -> np.ndarray:
        past = self_attention_length(running._cache)
        bias = np.zeros((len(running), 1, 1, past + 1), dtype=np.float32)
        if masked:
            for row, length in enumerate(running._lengths):
                bias[row, 0, 0, : past - int(length)] = np.finfo(np.float32).min
        values, _ = generator.next_step(running._next, running._encoder_mask, running._cache, bias)
        return values[-1, -1]

    hidden, mask = generator.encode([ids[1]])
    start = np.full((1, 1), generator.settings.decoder_start_token_id, dtype=np.int64)
    expected = generator.first_step(start, hidden, mask)[0][0, -1]
    np.testing.assert_allclose(logits(batch, masked=True), expected, rtol=0, atol=1e-5)
    assert np.abs(logits(batch, masked=False) - expected).max() > 1e-3


def test_a_decoder_without_the_mask_input_is_refused(generator: Seq2SeqGenerator, monkeypatch) -> None:
    monkeypatch.setattr(Seq2SeqGenerator, "accepts_self_attention_mask", property(lambda self: False))
    with pytest.raises(ValueError, match="self-attention mask"):
        ContinuousBatch(generator)


def test_a_repository_without_the_cross_cache_model_is_refused(tiny_t5_onnx: Path, tiny_t5: Path) -> None:
    files = {name: str(tiny_t5_onnx / name) for name in MODEL_FILES if name != CROSS_CACHE_FILE}
    older = Seq2SeqGenerator(files, str(tiny_t5 / "tokenizer.json"), GeneratorSettings(intra_op_threads=1))
    with pytest.raises(ValueError, match=f"{CROSS_CACHE_FILE}.*rebuild the repository"):
        ContinuousBatch(older)


def test_the_cross_cache_model_equals_the_first_step_decoder_cache(generator: Seq2SeqGenerator) -> None:
    hidden, mask = generator.encode(generator.tokenize(PROMPTS[:3]))
    start = np.zeros((3, 1), dtype=np.int64)
    _, cache = generator.first_step(start, hidden, mask)
    cross = generator.cross_cache(hidden)
    assert sorted(cross) == sorted(name for name in cache if ".encoder." in name)
    for name, value in cross.items():
        np.testing.assert_allclose(value, cache[name], rtol=0, atol=1e-6)
