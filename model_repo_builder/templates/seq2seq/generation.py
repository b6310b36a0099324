"""Prompt in, text out: tokenization, the encoder and a batched, KV-cached decode loop on ONNX Runtime.

Pure Python and NumPy (plus `tokenizers` and `onnxruntime`), with no Triton import, so the same code
runs inside the python-backend stub, in the build's numeric verification and in tests. Copied next to
`model.py` in each repository.

The loop runs every sequence of a batch together: one encoder call, one decoder call for the first
token (which also yields the cross-attention keys/values), then one decoder-with-past call per step.
A sequence that emits EOS or reaches its own `max_new_tokens` leaves the batch at once, so its rows of
the KV cache stop costing compute. Every sequence carries its own generation parameters. Prompts
that ask for beam search run their beams as rows of the same kind of loop (beam.py keeps the scores),
the cache rows following the beams they continue. The model's token rules (token_rules.py: forced and
banned tokens from its generation config) act on every step's scores, as `generate()` applies them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

if __package__:  # imported from the trb package (tests, verification)
    from ..common.trb_runtime import InvalidRequestError, decode_texts
    from .beam import BeamSearch, log_softmax
    from .token_rules import TokenRules
else:  # copied next to beam.py, token_rules.py and trb_runtime.py in a repository
    from beam import BeamSearch, log_softmax  # type: ignore[no-redef]
    from token_rules import TokenRules  # type: ignore[no-redef]
    from trb_runtime import InvalidRequestError, decode_texts  # type: ignore[no-redef]

ENCODER_FILE = "encoder_model.onnx"
DECODER_FILE = "decoder_model.onnx"
DECODER_WITH_PAST_FILE = "decoder_with_past_model.onnx"
# The cross-attention key/value projections alone (export/seq2seq_cross_cache.py): continuous
# batching runs a newcomer's first step as one more row of the running batch's decoder-with-past call.
CROSS_CACHE_FILE = "cross_cache_model.onnx"
MODEL_FILES = (ENCODER_FILE, DECODER_FILE, DECODER_WITH_PAST_FILE, CROSS_CACHE_FILE)
TOKENIZER_FILE = "tokenizer.json"
TOKEN_PADDING = -1
PROMPT_INPUT = "PROMPT"
TEXT_OUTPUT = "TEXT"
TOKEN_IDS_OUTPUT = "TOKEN_IDS"
MAX_NEW_TOKENS_INPUT = "MAX_NEW_TOKENS"
NUM_BEAMS_INPUT = "NUM_BEAMS"
# Added to the exported decoder-with-past (export/seq2seq_mask.py): an additive mask over its
# self-attention keys, so rows whose caches hold different numbers of tokens can share a call.
SELF_ATTENTION_BIAS_INPUT = "decoder_attention_bias"
# Added to BART-family decoders-with-past (export/seq2seq_positions.py): each row's position, the
# number of real tokens in its self-attention cache, for absolute position embeddings.
POSITION_IDS_INPUT = "decoder_position_ids"
MASKED = np.finfo(np.float32).min
# Each beam is one more row in every decoder call; wider searches rarely help and cost linearly.
MAX_BEAMS = 8


StepCallback = Callable[[np.ndarray, np.ndarray, np.ndarray], None]


@dataclass(frozen=True, kw_only=True)
class GenerationParams:
    """How to generate one sequence; the defaults are greedy decoding."""

    max_new_tokens: int
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    num_beams: int = 1


@dataclass(frozen=True, kw_only=True)
class GeneratorSettings:
    """What the served model needs to know; it reaches the stub through config.pbtxt parameters."""

    decoder_start_token_id: int = 0
    eos_token_id: int = 1
    pad_token_id: int = 0
    max_input_tokens: int = 512
    max_text_bytes: int | None = None  # larger prompts are refused (400) before tokenizing
    default_max_new_tokens: int = 64
    max_new_tokens_limit: int = 512
    intra_op_threads: int = 1
    allow_spinning: bool = False
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    rules: TokenRules | None = None  # the model's token rules (token_rules.py); None: no rule

    @property
    def token_rules(self) -> TokenRules:
        """The rules every decoding step applies (an empty set when the model has none)."""
        return self.rules or TokenRules(
            eos_token_id=self.eos_token_id, decoder_start_token_id=self.decoder_start_token_id
        )

    @classmethod
    def from_parameters(cls, parameters: dict[str, str]) -> GeneratorSettings:
        """Parse the string-valued parameters Triton hands to a python-backend model."""
        defaults = cls()
        providers = tuple(p for p in parameters.get("providers", "CPUExecutionProvider").split(",") if p)
        start = int(parameters.get("decoder_start_token_id", defaults.decoder_start_token_id))
        eos = int(parameters.get("eos_token_id", defaults.eos_token_id))
        settings = cls(
            decoder_start_token_id=start,
            eos_token_id=eos,
            pad_token_id=int(parameters.get("pad_token_id", defaults.pad_token_id)),
            max_input_tokens=int(parameters.get("max_input_tokens", defaults.max_input_tokens)),
            max_text_bytes=int(parameters["max_text_bytes"]) if parameters.get("max_text_bytes") else None,
            default_max_new_tokens=int(
                parameters.get("default_max_new_tokens", defaults.default_max_new_tokens)
            ),
            max_new_tokens_limit=int(parameters.get("max_new_tokens_limit", defaults.max_new_tokens_limit)),
            intra_op_threads=int(parameters.get("intra_op_threads", defaults.intra_op_threads)),
            allow_spinning=parameters.get("allow_spinning", "false").lower() == "true",
            providers=providers,
            rules=TokenRules.from_parameters(parameters, eos_token_id=eos, decoder_start_token_id=start),
        )
        if not 1 <= settings.default_max_new_tokens <= settings.max_new_tokens_limit:
            raise ValueError(
                f"parameter 'default_max_new_tokens' must be between 1 and max_new_tokens_limit "
                f"({settings.max_new_tokens_limit}), got {settings.default_max_new_tokens}"
            )
        return settings


@dataclass(frozen=True, kw_only=True)
class ParameterInput:
    """An optional request input that sets one field of `GenerationParams`."""

    name: str
    data_type: str
    field: str
    convert: Callable[[Any], Any]


def _to_bool(value: Any) -> bool:
    return bool(value)


# Optional inputs of the served model; a request may leave out any of them.
PARAMETER_INPUTS = (
    ParameterInput(name=MAX_NEW_TOKENS_INPUT, data_type="TYPE_INT32", field="max_new_tokens", convert=int),
    ParameterInput(name="DO_SAMPLE", data_type="TYPE_BOOL", field="do_sample", convert=_to_bool),
    ParameterInput(name="TEMPERATURE", data_type="TYPE_FP32", field="temperature", convert=float),
    ParameterInput(name="TOP_P", data_type="TYPE_FP32", field="top_p", convert=float),
    ParameterInput(name="SEED", data_type="TYPE_INT64", field="seed", convert=int),
    ParameterInput(name=NUM_BEAMS_INPUT, data_type="TYPE_INT32", field="num_beams", convert=int),
)


def request_params(
    count: int, values: Mapping[str, np.ndarray | None], settings: GeneratorSettings
) -> list[GenerationParams]:
    """Generation parameters for each of a request's `count` prompts, from its optional inputs.

    An input may hold one value (applies to every prompt) or one value per prompt; a missing input
    takes its default (greedy decoding, `settings.default_max_new_tokens` tokens).
    """
    rows = [GenerationParams(max_new_tokens=settings.default_max_new_tokens) for _ in range(count)]
    for spec in PARAMETER_INPUTS:
        raw = values.get(spec.name)
        if raw is None:
            continue
        flat = np.asarray(raw).reshape(-1)
        if flat.size not in (1, count):
            raise InvalidRequestError(
                f"{spec.name} must hold 1 value or one per prompt ({count}), got {flat.size}"
            )
        per_row = np.broadcast_to(flat, (count,))
        rows = [replace(row, **{spec.field: spec.convert(per_row[i].item())}) for i, row in enumerate(rows)]
    return [check_params(row, settings) for row in rows]


def decode_prompts(raw: np.ndarray, input_name: str = "PROMPT", max_bytes: int | None = None) -> list[str]:
    """Decode a BYTES tensor into prompts, rejecting what cannot be a prompt (see `decode_texts`)."""
    return decode_texts(raw, input_name, max_bytes)


def check_params(params: GenerationParams, settings: GeneratorSettings) -> GenerationParams:
    """Return `params` if they can be served; raise `InvalidRequestError` naming the input otherwise."""
    if not 1 <= params.num_beams <= MAX_BEAMS:
        raise InvalidRequestError(f"NUM_BEAMS must be between 1 and {MAX_BEAMS}, got {params.num_beams}")
    if params.num_beams > 1 and params.do_sample:
        raise InvalidRequestError(
            "DO_SAMPLE with NUM_BEAMS > 1 (beam sampling) is not supported; use one or the other"
        )
    if not 1 <= params.max_new_tokens <= settings.max_new_tokens_limit:
        raise InvalidRequestError(
            f"MAX_NEW_TOKENS must be between 1 and {settings.max_new_tokens_limit}, "
            f"got {params.max_new_tokens}"
        )
    if params.do_sample:
        if not (math.isfinite(params.temperature) and params.temperature > 0):
            raise InvalidRequestError(
                f"TEMPERATURE must be a finite number > 0 when sampling, got {params.temperature}"
            )
        if not (math.isfinite(params.top_p) and 0 < params.top_p <= 1):
            raise InvalidRequestError(f"TOP_P must be in (0, 1], got {params.top_p}")
    if params.seed is not None and params.seed < 0:
        raise InvalidRequestError(f"SEED must be ≥ 0, got {params.seed}")
    return params


def choose_tokens(
    logits: np.ndarray, params: Sequence[GenerationParams], rngs: Sequence[np.random.Generator | None]
) -> np.ndarray:
    """Pick the next token of each row: argmax for greedy rows, nucleus sampling for sampling rows."""
    tokens = np.argmax(logits, axis=-1).astype(np.int64)
    for row, (row_params, rng) in enumerate(zip(params, rngs, strict=True)):
        if row_params.do_sample and rng is not None:
            tokens[row] = sample_token(logits[row], row_params.temperature, row_params.top_p, rng)
    return tokens


# A nucleus mass within this of TOP_P counts as reaching it. The float64 sum of 32k probabilities
# differs between CPUs (vectorized exp, summation order) by about 1e-12, so without a margin a TOP_P
# that a distribution reaches exactly (0.5 + 0.3 at TOP_P 0.8) would land on either side of it
# depending on the machine; with it, such a boundary resolves as in exact arithmetic, everywhere.
TOP_P_TOLERANCE = 1e-9


def nucleus(logits: np.ndarray, temperature: float, top_p: float) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and their probabilities (most likely first) that sampling draws from.

    The semantics of transformers' `TopPLogitsWarper`: a token is kept when the tokens more likely
    than it hold less than `top_p` of the mass (so the smallest set reaching `top_p`, and always the
    most likely token); `top_p` = 1 keeps every token.
    """
    scaled = logits.astype(np.float64) / temperature
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    order = np.argsort(-probs, kind="stable")
    sorted_probs = probs[order]
    keep = len(sorted_probs)
    if top_p < 1.0:
        mass_before = np.concatenate(([0.0], np.cumsum(sorted_probs)[:-1]))
        keep = max(1, int(np.searchsorted(mass_before, top_p - TOP_P_TOLERANCE, side="left")))
    return order[:keep], sorted_probs[:keep]


def sample_token(logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator) -> int:
    """Sample from softmax(logits / temperature) restricted to the nucleus of `top_p`."""
    tokens, probs = nucleus(logits, temperature, top_p)
    choice = int(np.searchsorted(np.cumsum(probs), rng.random() * probs.sum(), side="right"))
    return int(tokens[min(choice, len(tokens) - 1)])


def _session(path: str, settings: GeneratorSettings) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry(
        "session.intra_op.allow_spinning", "1" if settings.allow_spinning else "0"
    )
    available = set(ort.get_available_providers())
    providers = [p for p in settings.providers if p in available] or ["CPUExecutionProvider"]
    return ort.InferenceSession(path, options, providers=providers)


_ORT_TO_NUMPY = {
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
}


class Seq2SeqGenerator:
    """The whole served computation: prompts to generated token ids and text."""

    def __init__(self, files: Mapping[str, str], tokenizer_path: str, settings: GeneratorSettings):
        """Load the ONNX files keyed by their served names and the tokenizer.

        `files` maps names of `MODEL_FILES` to paths; the cross-attention cache model is optional
        (only continuous batching needs it).
        """
        from tokenizers import Tokenizer

        self.settings = settings
        self.rules = settings.token_rules
        self.tokenizer = Tokenizer.from_file(tokenizer_path)
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.encoder = _session(files[ENCODER_FILE], settings)
        self.decoder = _session(files[DECODER_FILE], settings)
        self.decoder_with_past = _session(files[DECODER_WITH_PAST_FILE], settings)
        cross_cache = files.get(CROSS_CACHE_FILE)
        self.cross_cache_model = None if cross_cache is None else _session(cross_cache, settings)
        sessions = [self.encoder, self.decoder, self.decoder_with_past, self.cross_cache_model]
        self._input_types = {
            session: {i.name: _ORT_TO_NUMPY.get(i.type, np.float32) for i in session.get_inputs()}
            for session in sessions
            if session is not None
        }
        self._decoder_outputs = [o.name for o in self.decoder.get_outputs()]
        self._past_outputs = [o.name for o in self.decoder_with_past.get_outputs()]
        past_inputs = {i.name for i in self.decoder_with_past.get_inputs()}
        for name in self._decoder_outputs[1:]:
            if _past_name(name) not in past_inputs:
                raise ValueError(
                    f"{files[DECODER_WITH_PAST_FILE]} has no input for the decoder's output {name}"
                )

    @classmethod
    def from_directory(
        cls, directory: str, settings: GeneratorSettings, tokenizer_path: str | None = None
    ) -> Seq2SeqGenerator:
        """Load the model files found in `directory` (a repository's version directory)."""
        files = {name: os.path.join(directory, name) for name in MODEL_FILES}
        present = {name: path for name, path in files.items() if os.path.isfile(path)}
        missing = [name for name in MODEL_FILES if name not in present and name != CROSS_CACHE_FILE]
        if missing:
            raise FileNotFoundError(
                f"{directory} lacks {', '.join(missing)}; rebuild the repository with `trb build`"
            )
        tokenizer = tokenizer_path or os.path.join(directory, TOKENIZER_FILE)
        return cls(present, tokenizer, settings)

    def _feeds(self, session: Any, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        types = self._input_types[session]
        return {name: np.asarray(value, dtype=types[name]) for name, value in values.items() if name in types}

    def tokenize(self, prompts: Sequence[str], truncate: bool = False) -> list[list[int]]:
        """Token ids of each prompt (with the EOS the tokenizer appends).

        A prompt over `max_input_tokens` is an `InvalidRequestError`, or, with `truncate` (used by
        verification only), cut to the limit the way transformers' tokenizer truncates.
        """
        if truncate:
            self.tokenizer.enable_truncation(max_length=self.settings.max_input_tokens)
        try:
            encodings = self.tokenizer.encode_batch(list(prompts))
        finally:
            self.tokenizer.no_truncation()
        token_ids = [list(encoding.ids) for encoding in encodings]
        for index, ids in enumerate(token_ids):
            if len(ids) > self.settings.max_input_tokens:
                raise InvalidRequestError(
                    f"PROMPT[{index}] has {len(ids)} tokens; this model accepts at most "
                    f"{self.settings.max_input_tokens} (set at build time with --max-length)"
                )
        return token_ids

    def detokenize(self, token_ids: Sequence[int]) -> str:
        """Text of generated ids, without special tokens."""
        return str(self.tokenizer.decode([int(t) for t in token_ids], skip_special_tokens=True))

    def encode(self, token_ids: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Encoder hidden states [batch, seq, dim] and the attention mask of the right-padded batch."""
        length = max(len(ids) for ids in token_ids)
        input_ids = np.full((len(token_ids), length), self.settings.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(token_ids), length), dtype=np.int64)
        for row, ids in enumerate(token_ids):
            input_ids[row, : len(ids)] = ids
            mask[row, : len(ids)] = 1
        (hidden,) = self.encoder.run(
            None, self._feeds(self.encoder, {"input_ids": input_ids, "attention_mask": mask})
        )
        return hidden, mask

    def first_step(
        self, decoder_ids: np.ndarray, hidden: np.ndarray, mask: np.ndarray
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Run the decoder without past; return logits and the cache as decoder-with-past inputs."""
        feeds = {"input_ids": decoder_ids, "encoder_attention_mask": mask, "encoder_hidden_states": hidden}
        outputs = self.decoder.run(None, self._feeds(self.decoder, feeds))
        cache = {
            _past_name(name): value
            for name, value in zip(self._decoder_outputs[1:], outputs[1:], strict=True)
        }
        return outputs[0], cache

    def cross_cache(self, hidden: np.ndarray) -> dict[str, np.ndarray]:
        """The cross-attention cache of encoder states `hidden`, keyed as decoder-with-past inputs."""
        if self.cross_cache_model is None:
            raise ValueError(f"this generator was loaded without {CROSS_CACHE_FILE}")
        names = [output.name for output in self.cross_cache_model.get_outputs()]
        feeds = self._feeds(self.cross_cache_model, {"encoder_hidden_states": hidden})
        values = self.cross_cache_model.run(None, feeds)
        return dict(zip(names, values, strict=True))

    @property
    def accepts_self_attention_mask(self) -> bool:
        """Whether decoder-with-past takes `decoder_attention_bias` (needed by continuous batching)."""
        return SELF_ATTENTION_BIAS_INPUT in self._input_types[self.decoder_with_past]

    @property
    def accepts_positions(self) -> bool:
        """Whether decoder-with-past takes `decoder_position_ids` (absolute position embeddings)."""
        return POSITION_IDS_INPUT in self._input_types[self.decoder_with_past]

    def next_step(
        self,
        tokens: np.ndarray,
        mask: np.ndarray,
        cache: dict[str, np.ndarray],
        self_bias: np.ndarray | None = None,
        positions: np.ndarray | None = None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Run the decoder with past on one new token per row; return logits and the updated cache.

        `self_bias` [batch, 1, 1, past + 1] masks padded self-attention slots (continuous batching);
        without it every cached position is attended to. `positions` [batch] are the rows' real cache
        lengths, which differ from the padded one when rows joined at different steps; without them
        every row is at the cache length.
        """
        feeds = {"input_ids": tokens.reshape(-1, 1), "encoder_attention_mask": mask, **cache}
        if self.accepts_positions:
            if positions is None:
                positions = np.full(len(tokens), self_attention_length(cache), dtype=np.int64)
            feeds[POSITION_IDS_INPUT] = np.asarray(positions, dtype=np.int64).reshape(-1, 1)
        if self.accepts_self_attention_mask:
            if self_bias is None:
                past = self_attention_length(cache)
                self_bias = np.zeros((len(tokens), 1, 1, past + 1), dtype=np.float32)
            feeds[SELF_ATTENTION_BIAS_INPUT] = self_bias
        elif self_bias is not None:
            raise ValueError("this decoder-with-past has no self-attention mask input")
        outputs = self.decoder_with_past.run(None, self._feeds(self.decoder_with_past, feeds))
        # decoder-with-past returns the self-attention cache only; the cross-attention part is constant.
        updated = dict(cache)
        updated.update(
            {_past_name(name): value for name, value in zip(self._past_outputs[1:], outputs[1:], strict=True)}
        )
        return outputs[0], updated

    def generate_ids(
        self,
        token_ids: Sequence[Sequence[int]],
        params: Sequence[GenerationParams],
        on_step: StepCallback | None = None,
    ) -> list[list[int]]:
        """Generated ids (without the decoder start token, with EOS when emitted) for each prompt.

        Greedy and sampled prompts decode together; beam-search prompts run one search per beam
        width. `on_step(rows, tokens, done)`, if given, is called after every greedy or sampling
        step with the indices (into `token_ids`) of the sequences still running, the token each just
        produced and whether that token ended it; streaming sends those tokens out as they are made.
        """
        if len(token_ids) != len(params):
            raise ValueError(f"{len(token_ids)} prompts but {len(params)} parameter sets")
        results: list[list[int]] = [[] for _ in token_ids]
        widths = sorted({p.num_beams for p in params})
        for width in widths:
            rows = [index for index, p in enumerate(params) if p.num_beams == width]
            if width == 1:
                generated = self._decode(
                    [token_ids[i] for i in rows], [params[i] for i in rows], rows, on_step
                )
            elif on_step is not None:
                raise InvalidRequestError("beam search cannot stream; use the non-streaming model")
            else:
                limits = [params[i].max_new_tokens for i in rows]
                generated = self.beam_search([token_ids[i] for i in rows], width, limits)
            for row, ids in zip(rows, generated, strict=True):
                results[row] = ids
        return results

    def beam_search(
        self, token_ids: Sequence[Sequence[int]], num_beams: int, max_new_tokens: Sequence[int]
    ) -> list[list[int]]:
        """Beam search (templates/seq2seq/beam.py) of every prompt, its beams batched in each decoder call."""
        hidden, mask = self.encode(token_ids)
        hidden, mask = np.repeat(hidden, num_beams, axis=0), np.repeat(mask, num_beams, axis=0)
        start = np.full((len(hidden), 1), self.settings.decoder_start_token_id, dtype=np.int64)
        logits, cache = self.first_step(start, hidden, mask)
        searches = [BeamSearch(num_beams, limit, self.settings.eos_token_id) for limit in max_new_tokens]
        active = list(range(len(token_ids)))  # prompts still searching, in the order of their row blocks
        while True:
            log_probs = log_softmax(logits[:, -1, :]).reshape(len(active), num_beams, -1)
            parents, blocks, tokens, still = [], [], [], []
            for block, prompt in enumerate(active):
                search = searches[prompt]
                # As generate() does, the token rules act on the beams' log-probabilities.
                scores = self.rules.apply(
                    log_probs[block], search.running.tolist(), [search.max_new_tokens] * num_beams
                )
                if not search.advance(scores):
                    parents.append(block * num_beams + search.parents)
                    blocks.append(block * num_beams + np.arange(num_beams))
                    tokens.append(search.tokens)
                    still.append(prompt)
            if not still:
                return [search.best() for search in searches]
            # Self-attention rows follow the beams they continue; the cross-attention cache and the
            # encoder mask are the same for every beam of a prompt, so they change only when prompts leave.
            beams, prompts_left = np.concatenate(parents), len(still) < len(active)
            kept = np.concatenate(blocks)
            cache = {
                name: value[beams] if is_self_attention(name) else value[kept] if prompts_left else value
                for name, value in cache.items()
            }
            active, mask = still, mask[kept] if prompts_left else mask
            logits, cache = self.next_step(np.concatenate(tokens), mask, cache)

    def _decode(
        self,
        token_ids: Sequence[Sequence[int]],
        params: Sequence[GenerationParams],
        indices: Sequence[int],
        on_step: StepCallback | None,
    ) -> list[list[int]]:
        """Greedy or sampled ids of each prompt; `indices` are what `on_step` reports the rows as."""
        if not token_ids:
            return []
        hidden, mask = self.encode(token_ids)
        rngs = [np.random.default_rng(p.seed) if p.do_sample else None for p in params]
        limits = np.array([p.max_new_tokens for p in params], dtype=np.int64)
        results: list[list[int]] = [[] for _ in token_ids]
        rows = np.arange(len(token_ids))
        start = np.full((len(token_ids), 1), self.settings.decoder_start_token_id, dtype=np.int64)
        logits, cache = self.first_step(start, hidden, mask)
        steps = 0
        while True:
            scores = self.rules.apply(logits[:, -1, :], [results[r] for r in rows], limits[rows])
            tokens = choose_tokens(scores, [params[r] for r in rows], [rngs[r] for r in rows])
            for row, token in zip(rows, tokens, strict=True):
                results[row].append(int(token))
            steps += 1
            done = (tokens == self.settings.eos_token_id) | (steps >= limits[rows])
            if on_step is not None:
                on_step(np.asarray(indices)[rows], tokens, done)
            if done.all():
                return results
            if done.any():
                keep = ~done
                rows, tokens, mask = rows[keep], tokens[keep], mask[keep]
                cache = {name: value[keep] for name, value in cache.items()}
            logits, cache = self.next_step(tokens, mask, cache)

    def generate(
        self, prompts: Sequence[str], params: Sequence[GenerationParams]
    ) -> tuple[list[str], list[list[int]]]:
        """Texts and token ids generated for `prompts`, one parameter set per prompt."""
        token_ids = self.generate_ids(self.tokenize(prompts), params)
        return [self.detokenize(ids) for ids in token_ids], token_ids

    def teacher_forced_logits(
        self, token_ids: Sequence[Sequence[int]], targets: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Encoder states, first-step logits and with-past logits when the decoder is fed `targets`.

        `targets` [batch, steps] are the tokens to feed after the decoder start token; returns the
        encoder hidden states, the decoder's logits for step 0 [batch, vocab] and the
        decoder-with-past logits for steps 1..steps [batch, steps, vocab]. Used by verification.
        """
        hidden, mask = self.encode(token_ids)
        start = np.full((len(token_ids), 1), self.settings.decoder_start_token_id, dtype=np.int64)
        logits, cache = self.first_step(start, hidden, mask)
        first = logits[:, -1, :]
        later = []
        for step in range(targets.shape[1]):
            logits, cache = self.next_step(targets[:, step].astype(np.int64), mask, cache)
            later.append(logits[:, -1, :])
        return hidden, first, np.stack(later, axis=1)


def is_self_attention(cache_name: str) -> bool:
    """Whether a cache entry (`past_key_values.<layer>.decoder|encoder.key|value`) is self-attention's."""
    return ".decoder." in cache_name


def self_attention_length(cache: Mapping[str, np.ndarray]) -> int:
    """How many positions the self-attention cache holds (the same for every row of a batch)."""
    return int(next(value for name, value in cache.items() if is_self_attention(name)).shape[2])


def _past_name(output_name: str) -> str:
    """`present.0.decoder.key` (an output) → `past_key_values.0.decoder.key` (the matching input)."""
    return output_name.replace("present", "past_key_values", 1)


class TextStream:
    """Turns a growing list of token ids into text deltas that concatenate to the full text."""

    def __init__(self, detokenize: Callable[[Sequence[int]], str]):
        self._detokenize = detokenize
        self._ids: list[int] = []
        self._text = ""

    def push(self, token: int) -> str:
        """Add one token; return the text it adds (empty while a character is incomplete)."""
        self._ids.append(int(token))
        text = self._detokenize(self._ids)
        if text.endswith("\ufffd") or not text.startswith(self._text):
            # An incomplete UTF-8 sequence or a rewrite of earlier text: wait for more tokens.
            return ""
        delta, self._text = text[len(self._text) :], text
        return delta

    def flush(self) -> str:
        """Whatever text is still held back at the end of the sequence."""
        text = self._detokenize(self._ids)
        delta = text[len(self._text) :] if text.startswith(self._text) else ""
        self._text = text
        return delta


def pad_token_rows(rows: Sequence[Sequence[int]]) -> np.ndarray:
    """Stack token-id lists into [len(rows), longest], padding with `TOKEN_PADDING` (-1)."""
    width = max((len(row) for row in rows), default=0)
    padded = np.full((len(rows), width), TOKEN_PADDING, dtype=np.int64)
    for index, row in enumerate(rows):
        padded[index, : len(row)] = row
    return padded
