"""What a source model's generation config asks of the served decode loop, and what trb refuses.

`generate()` reads generation_config.json (or, for older checkpoints, the generation fields of
config.json) on every call. Two kinds of settings live there:

- token rules that are part of the model (Marian never emits its padding token, BART ends with a
  forced EOS): the served loop applies them (templates/seq2seq/token_rules.py), and a rule it cannot
  apply is refused at build time, since serving without it would produce other text than the model;
- decoding-strategy defaults (`num_beams`, `length_penalty`, `do_sample`, ...): the served model's
  defaults are greedy decoding, with beam search and sampling per request, so these are reported as
  warnings that say what the served model does instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_repo_builder.errors import UnsupportedModelError
from model_repo_builder.templates.seq2seq.token_rules import TokenRules

LOGGER = logging.getLogger(__name__)

# Settings whose processors the served loop does not implement, with the value that means "off".
_UNSUPPORTED_RULES: dict[str, Any] = {
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "encoder_no_repeat_ngram_size": 0,
    "sequence_bias": None,
    "guidance_scale": None,
    "exponential_decay_length_penalty": None,
    "begin_suppress_tokens": None,
    "forced_decoder_ids": None,
    "renormalize_logits": False,
    "watermarking_config": None,
    "stop_strings": None,
}
# Strategy defaults the served model does not take from the checkpoint: (off value, what it does).
_REQUEST_DEFAULTS: dict[str, tuple[Any, str]] = {
    "num_beams": (1, "decodes greedily unless a request sends NUM_BEAMS"),
    "do_sample": (False, "decodes greedily unless a request sends DO_SAMPLE"),
    "length_penalty": (1.0, "ranks beams with length_penalty 1"),
    "early_stopping": (False, "stops beam search as early_stopping=False does"),
    "num_return_sequences": (1, "returns one sequence per prompt"),
}


@dataclass(frozen=True, kw_only=True)
class SourceGeneration:
    """Token ids and rules of the source model's generation config, and what differs when served."""

    decoder_start_token_id: int
    eos_token_id: int
    pad_token_id: int
    rules: TokenRules
    differences: tuple[str, ...]


def read_source_generation(model_dir: Path) -> SourceGeneration:
    """The generation config `generate()` would use for the model in `model_dir`."""
    from transformers import AutoConfig, GenerationConfig

    if (model_dir / "generation_config.json").is_file():
        config = GenerationConfig.from_pretrained(str(model_dir))
    else:
        config = GenerationConfig.from_model_config(AutoConfig.from_pretrained(str(model_dir)))
    values = config.to_dict()
    start = _token_id(values, "decoder_start_token_id", model_dir)
    eos = _token_id(values, "eos_token_id", model_dir)
    pad = _token_id(values, "pad_token_id", model_dir)
    return SourceGeneration(
        decoder_start_token_id=start,
        eos_token_id=eos,
        pad_token_id=pad,
        rules=token_rules(values, eos, start, model_dir),
        differences=tuple(_differences(values)),
    )


def token_rules(values: dict[str, Any], eos: int, start: int, model_dir: Path) -> TokenRules:
    """The rules of generation-config `values`; an UnsupportedModelError for one trb cannot apply."""
    for name, off in _UNSUPPORTED_RULES.items():
        value = values.get(name)
        if value is not None and value != off:
            raise UnsupportedModelError(
                f"{model_dir}: its generation config sets {name}={value!r}, which trb's served decode "
                "loop does not apply; serving it without would generate other text than the model. "
                f"Remove it from generation_config.json if the model does not need it"
            )
    banned = []
    for words in values.get("bad_words_ids") or []:
        if len(words) != 1:
            raise UnsupportedModelError(
                f"{model_dir}: bad_words_ids holds the multi-token sequence {words}; trb applies "
                "single-token bans only"
            )
        if words[0] != eos:  # transformers ignores a ban on EOS
            banned.append(int(words[0]))
    return TokenRules(
        eos_token_id=eos,
        decoder_start_token_id=start,
        forced_bos_token_id=_optional_id(values, "forced_bos_token_id", model_dir),
        forced_eos_token_id=_optional_id(values, "forced_eos_token_id", model_dir),
        banned_token_ids=tuple(banned),
        suppressed_token_ids=tuple(int(token) for token in values.get("suppress_tokens") or ()),
        min_length=int(values.get("min_length") or 0),
        min_new_tokens=int(values.get("min_new_tokens") or 0),
        no_repeat_ngram_size=int(values.get("no_repeat_ngram_size") or 0),
    )


def _differences(values: dict[str, Any]) -> list[str]:
    differences = []
    for name, (off, served) in _REQUEST_DEFAULTS.items():
        value = values.get(name)
        if value is not None and value != off:
            differences.append(
                f"the model's generation config sets {name}={value!r}; the served model {served}"
            )
    return differences


def _token_id(values: dict[str, Any], key: str, model_dir: Path) -> int:
    value = values.get(key)
    if isinstance(value, list) and len(set(value)) > 1:
        raise UnsupportedModelError(f"{model_dir}: {key}={value!r}; trb's served loop uses one {key}")
    if isinstance(value, list) and value:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int):
        raise UnsupportedModelError(
            f"{model_dir} has no integer {key!r} in config.json or generation_config.json; a "
            "text-to-text model needs one"
        )
    return value


def _optional_id(values: dict[str, Any], key: str, model_dir: Path) -> int | None:
    value = values.get(key)
    if value is None:
        return None
    if isinstance(value, list):
        if len(value) != 1:
            raise UnsupportedModelError(f"{model_dir}: {key}={value!r}; trb forces a single token")
        value = value[0]
    return int(value)
