"""Numeric verification of an exported encoder-decoder against the source model in PyTorch.

The check runs the code the repository serves (`templates/seq2seq/generation.py`) and compares, part by
part, with transformers:

- encoder: hidden states of a padded batch of sample prompts;
- decoder (no past): logits of the first generated position;
- decoder with past: logits of every later position, fed the source model's own greedy tokens
  (teacher forcing), so one early difference cannot hide or amplify later ones;
- the cross-attention cache model (continuous batching): against the first-step decoder's own cache;
- the served greedy loop end to end (request-level or continuous batching, as the repository serves;
  continuous with one prompt joining per step, so rows sit at different positions): token ids
  against `generate(do_sample=False, num_beams=1)`, which applies the model's own token rules.

Top-1 agreement is the share of positions where the served parts pick the same next token as the
source model; it is what int8 and fp16 are judged by, since their logits legitimately move.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model_repo_builder.errors import VerificationError
from model_repo_builder.templates.seq2seq.continuous import generate_staggered
from model_repo_builder.templates.seq2seq.generation import GenerationParams, Seq2SeqGenerator

LOGGER = logging.getLogger(__name__)

SAMPLE_PROMPTS = (
    "translate English to German: How old are you?",
    "Summarize: Triton groups concurrent requests into batches and runs several model instances.",
    "Answer the question: what is the capital of France?",
    "ok",
    "Les modèles de langage sont entraînés sur de grands corpus.",
    "Is the following review positive or negative? The food was cold and the service slow, "
    "but the view over the harbour made up for most of it, and we would come back in summer.",
)
VERIFY_NEW_TOKENS = 12


@dataclass(frozen=True, kw_only=True)
class Seq2SeqTolerance:
    """Acceptance thresholds for one precision.

    `max_relative_diff` bounds max |diff| / max |reference| per part (None: not checked);
    `min_top1_agreement` bounds the share of positions whose next token matches the source model.
    """

    max_relative_diff: float | None
    min_top1_agreement: float


# fp32 differs from PyTorch only by float reordering (measured ≤ 1.1e-6 relative on flan-t5-small's
# architecture with random weights). fp16 measured top-1 agreement 1.0 (relative diff ≤ 0.0085) on the
# same model. int8 (dynamic, per-channel, 7-bit weights) measured 0.875 top-1 agreement on it (0.847
# on an AVX2-only CPU, whose float kernels round differently), and 0.86-0.89 on 2+2-layer T5s
# (bench/results/int8_portability.md); random weights give far flatter next-token distributions
# than a trained model's.
TOLERANCES = {
    "fp32": Seq2SeqTolerance(max_relative_diff=1e-3, min_top1_agreement=0.97),
    "fp16": Seq2SeqTolerance(max_relative_diff=None, min_top1_agreement=0.9),
    "int8": Seq2SeqTolerance(max_relative_diff=None, min_top1_agreement=0.75),
}


@dataclass(frozen=True, kw_only=True)
class Seq2SeqReport:
    """What the check measured; stored in the manifest."""

    precision: str
    prompts: int
    new_tokens: int
    max_diffs: dict[str, float]
    relative_diffs: dict[str, float]
    top1_agreement: float
    greedy_exact: float

    def as_dict(self) -> dict[str, Any]:
        """Plain data for YAML."""
        return {
            "precision": self.precision,
            "prompts": self.prompts,
            "new_tokens": self.new_tokens,
            "top1_agreement": round(self.top1_agreement, 4),
            "greedy_exact": round(self.greedy_exact, 4),
            "max_abs_diff": {k: float(f"{v:.3g}") for k, v in self.max_diffs.items()},
            "max_relative_diff": {k: float(f"{v:.3g}") for k, v in self.relative_diffs.items()},
            "summary": (
                f"{self.prompts} prompts × {self.new_tokens} tokens: top-1 agreement "
                f"{self.top1_agreement:.1%}, greedy output identical for {self.greedy_exact:.0%} of prompts"
            ),
        }


@dataclass(frozen=True, kw_only=True)
class Reference:
    """The source model's encoder states, greedy tokens and teacher-forced logits."""

    hidden: np.ndarray
    mask: np.ndarray
    generated: list[list[int]]
    targets: np.ndarray
    logits: np.ndarray


def reference_outputs(
    model_dir: Path, prompts: tuple[str, ...], new_tokens: int, max_input_tokens: int, allow_pickle: bool
) -> Reference:
    """Run the source model in PyTorch: encoder, greedy `generate`, then one teacher-forced pass."""
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), use_fast=True, trust_remote_code=False)
    model = AutoModelForSeq2SeqLM.from_pretrained(
        str(model_dir), use_safetensors=not allow_pickle, trust_remote_code=False
    )
    model.eval()
    batch = tokenizer(
        list(prompts),
        padding=True,
        truncation=True,
        max_length=max_input_tokens,
        return_tensors="pt",
        return_token_type_ids=False,
    )
    # generate() takes its token ids from the generation config (newer checkpoints keep them only there).
    config = model.generation_config
    with torch.inference_mode():
        hidden = model.get_encoder()(**batch).last_hidden_state
        output = model.generate(**batch, max_new_tokens=new_tokens, do_sample=False, num_beams=1)
        # Rows that ended early are padded; feeding the padding is still a valid teacher-forced input.
        targets = torch.full((len(prompts), new_tokens), config.pad_token_id, dtype=torch.long)
        targets[:, : output.shape[1] - 1] = output[:, 1:]
        start = torch.full((len(prompts), 1), config.decoder_start_token_id, dtype=torch.long)
        decoder_input_ids = torch.cat([start, targets[:, :-1]], dim=1)
        logits = model(**batch, decoder_input_ids=decoder_input_ids).logits
    generated = []
    for row in output[:, 1:].tolist():
        ids = []
        for token in row:
            ids.append(token)
            if token == config.eos_token_id:
                break
        generated.append(ids)
    return Reference(
        hidden=hidden.numpy(),
        mask=batch["attention_mask"].numpy(),
        generated=generated,
        targets=targets.numpy(),
        logits=logits.numpy(),
    )


def _diffs(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, float]:
    absolute = float(np.abs(reference - candidate.astype(np.float32)).max())
    return absolute, absolute / max(float(np.abs(reference).max()), 1e-12)


def verify_seq2seq(
    generator: Seq2SeqGenerator, model_dir: Path, precision: str, allow_pickle: bool, continuous: bool
) -> Seq2SeqReport:
    """Compare every served part with the source model; raise `VerificationError` when out of tolerance."""
    prompts = SAMPLE_PROMPTS
    # Prompts over a small `--max-length` are cut, on both sides, rather than left out.
    token_ids = generator.tokenize(prompts, truncate=True)
    limit = generator.settings.max_input_tokens
    reference = reference_outputs(model_dir, prompts, VERIFY_NEW_TOKENS, limit, allow_pickle)
    lengths = reference.mask.sum(axis=1).tolist()
    if [len(ids) for ids in token_ids] != lengths:
        raise VerificationError(
            "the served tokenizer disagrees with the source tokenizer (prompt lengths differ)",
            {"prompt_tokens": float(np.abs(np.array(lengths) - [len(ids) for ids in token_ids]).max())},
        )
    hidden, first, later = generator.teacher_forced_logits(token_ids, reference.targets[:, :-1])
    valid = reference.mask.astype(bool)
    parts = {
        "encoder.last_hidden_state": (reference.hidden[valid], hidden[valid]),
        "decoder.logits": (reference.logits[:, 0], first),
        "decoder_with_past.logits": (reference.logits[:, 1:], later),
    }
    if generator.cross_cache_model is not None:
        start = np.full((len(prompts), 1), generator.settings.decoder_start_token_id, dtype=np.int64)
        _, cache = generator.first_step(start, hidden, reference.mask)
        cross = generator.cross_cache(hidden)
        names = sorted(cross)
        parts["cross_cache"] = (
            np.stack([cache[name] for name in names]).astype(np.float32),
            np.stack([cross[name] for name in names]),
        )
    max_diffs, relative_diffs = {}, {}
    for name, (expected, actual) in parts.items():
        max_diffs[name], relative_diffs[name] = _diffs(expected, actual)
    served_logits = np.concatenate([first[:, None, :], later], axis=1)
    agreement = float(np.mean(served_logits.argmax(axis=-1) == reference.logits.argmax(axis=-1)))
    greedy_params = [GenerationParams(max_new_tokens=VERIFY_NEW_TOKENS)] * len(prompts)
    if continuous:
        greedy = generate_staggered(generator, token_ids, greedy_params)
    else:
        greedy = generator.generate_ids(token_ids, greedy_params)
    exact = float(np.mean([ours == theirs for ours, theirs in zip(greedy, reference.generated, strict=True)]))
    report = Seq2SeqReport(
        precision=precision,
        prompts=len(prompts),
        new_tokens=VERIFY_NEW_TOKENS,
        max_diffs=max_diffs,
        relative_diffs=relative_diffs,
        top1_agreement=agreement,
        greedy_exact=exact,
    )
    tolerance = TOLERANCES[precision]
    problems = []
    if not all(np.isfinite(value) for value in max_diffs.values()):
        problems.append("the served model produced NaN or infinite values")
    if agreement < tolerance.min_top1_agreement:
        problems.append(f"top-1 agreement {agreement:.3f} < {tolerance.min_top1_agreement}")
    if tolerance.max_relative_diff is not None:
        problems += [
            f"{name} max relative diff {value:.3g} > {tolerance.max_relative_diff}"
            for name, value in relative_diffs.items()
            if value > tolerance.max_relative_diff
        ]
    if problems:
        diffs = ", ".join(f"{name}: {value:.3g}" for name, value in max_diffs.items())
        raise VerificationError(
            f"{precision} model does not match the source model: {'; '.join(problems)} "
            f"(max |diff| per output: {diffs})",
            max_diffs,
            report.as_dict(),
        )
    LOGGER.info(
        "%s verified: top-1 agreement %.4f, greedy exact %.2f, max |diff| %s",
        precision,
        agreement,
        exact,
        max_diffs,
    )
    return report
