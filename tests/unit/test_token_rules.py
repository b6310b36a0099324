"""The served token rules against transformers' own logits processors, and what the build refuses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers.generation.logits_process import (
    ForcedBOSTokenLogitsProcessor,
    ForcedEOSTokenLogitsProcessor,
    LogitsProcessorList,
    MinLengthLogitsProcessor,
    MinNewTokensLengthLogitsProcessor,
    NoBadWordsLogitsProcessor,
    NoRepeatNGramLogitsProcessor,
    SuppressTokensLogitsProcessor,
)

from model_repo_builder.errors import UnsupportedModelError
from model_repo_builder.models.generation import read_source_generation
from model_repo_builder.templates.seq2seq.generation import GeneratorSettings
from model_repo_builder.templates.seq2seq.token_rules import TokenRules

VOCAB = 12
START, EOS, BOS, PAD = 0, 1, 5, 0


def _hf_processors(rules: TokenRules, limit: int) -> LogitsProcessorList:
    """What generate() builds for the same settings, in its order."""
    processors = LogitsProcessorList()
    if rules.no_repeat_ngram_size:
        processors.append(NoRepeatNGramLogitsProcessor(rules.no_repeat_ngram_size))
    if rules.banned_token_ids:
        processors.append(NoBadWordsLogitsProcessor([[t] for t in rules.banned_token_ids], EOS))
    if rules.min_length:
        processors.append(MinLengthLogitsProcessor(rules.min_length, EOS))
    if rules.min_new_tokens:
        processors.append(MinNewTokensLengthLogitsProcessor(1, rules.min_new_tokens, EOS))
    if rules.forced_bos_token_id is not None:
        processors.append(ForcedBOSTokenLogitsProcessor(rules.forced_bos_token_id))
    if rules.forced_eos_token_id is not None:
        processors.append(ForcedEOSTokenLogitsProcessor(limit + 1, rules.forced_eos_token_id))
    if rules.suppressed_token_ids:
        processors.append(SuppressTokensLogitsProcessor(list(rules.suppressed_token_ids)))
    return processors


RULE_SETS = {
    "bart": TokenRules(
        eos_token_id=EOS,
        decoder_start_token_id=EOS,
        forced_bos_token_id=BOS,
        forced_eos_token_id=EOS,
        no_repeat_ngram_size=3,
        min_length=4,
    ),
    "marian": TokenRules(
        eos_token_id=EOS, decoder_start_token_id=PAD, banned_token_ids=(PAD,), forced_eos_token_id=EOS
    ),
    "bigram ban, min new tokens, suppressed": TokenRules(
        eos_token_id=EOS,
        decoder_start_token_id=START,
        no_repeat_ngram_size=2,
        min_new_tokens=3,
        suppressed_token_ids=(7, 9),
    ),
    "unigram ban": TokenRules(eos_token_id=EOS, decoder_start_token_id=START, no_repeat_ngram_size=1),
}


@pytest.mark.parametrize("name", sorted(RULE_SETS))
def test_rules_match_transformers_processors_at_every_step(name: str) -> None:
    rules = RULE_SETS[name]
    rng = np.random.default_rng(0)
    limit = 9
    # Few distinct tokens, so n-grams repeat and the bans have something to do.
    generated = rng.integers(2, 5, size=(6, limit)).tolist()
    changed = 0
    for made in range(limit):
        scores = rng.standard_normal((6, VOCAB)).astype(np.float32)
        ours = rules.apply(scores, [row[:made] for row in generated], [limit] * 6)
        decoder_ids = torch.tensor([[rules.decoder_start_token_id, *row[:made]] for row in generated])
        theirs = _hf_processors(rules, limit)(decoder_ids, torch.from_numpy(scores.copy())).numpy()
        np.testing.assert_array_equal(ours, theirs, err_msg=f"step {made}")
        changed += int((ours != scores).any())
    assert changed >= 2  # the rules did act


def test_no_rules_leave_the_scores_untouched() -> None:
    scores = np.arange(VOCAB, dtype=np.float32)[None, :]
    rules = TokenRules(eos_token_id=EOS, decoder_start_token_id=START)
    assert rules.empty and rules.apply(scores, [[3, 3, 3]], [4]) is scores


def test_rules_survive_the_trip_through_config_parameters() -> None:
    rules = RULE_SETS["marian"]  # token id 0 must not read as "unset"
    parameters = {"eos_token_id": str(EOS), "decoder_start_token_id": str(PAD), **rules.to_parameters()}
    assert GeneratorSettings.from_parameters(parameters).token_rules == rules
    bare = GeneratorSettings.from_parameters({"eos_token_id": "1", "decoder_start_token_id": "0"})
    assert bare.token_rules.empty


def _model_dir(tmp_path: Path, generation: dict) -> Path:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bart"}))
    values = {"decoder_start_token_id": 2, "eos_token_id": 2, "pad_token_id": 1, **generation}
    (tmp_path / "generation_config.json").write_text(json.dumps(values))
    return tmp_path


def test_the_source_generation_config_gives_rules_and_differences(tmp_path: Path) -> None:
    source = read_source_generation(
        _model_dir(
            tmp_path,
            {"forced_bos_token_id": 0, "bad_words_ids": [[1], [2]], "num_beams": 4, "length_penalty": 2.0},
        )
    )
    assert (source.decoder_start_token_id, source.eos_token_id, source.pad_token_id) == (2, 2, 1)
    # A ban on EOS is ignored, as transformers ignores it.
    assert source.rules.forced_bos_token_id == 0 and source.rules.banned_token_ids == (1,)
    assert any("num_beams=4" in line for line in source.differences)
    assert any("length_penalty=2.0" in line for line in source.differences)


@pytest.mark.parametrize(
    ("generation", "reason"),
    [
        ({"repetition_penalty": 1.2}, "repetition_penalty=1.2"),
        ({"bad_words_ids": [[5, 6]]}, "multi-token"),
        ({"encoder_no_repeat_ngram_size": 3}, "encoder_no_repeat_ngram_size"),
        ({"eos_token_id": [2, 7]}, "one eos_token_id"),
    ],
)
def test_a_rule_the_served_loop_cannot_apply_is_refused(
    tmp_path: Path, generation: dict, reason: str
) -> None:
    with pytest.raises(UnsupportedModelError, match=reason):
        read_source_generation(_model_dir(tmp_path, generation))
