"""T5 and BART-family models with random weights and a local tokenizer, for the seq2seq tests (no Hub).

Each model is written once per test session under pytest's base temporary directory, so modules that
import these fixtures share the same files even though pytest registers the fixtures per module.
Repositories are built the same way: once per session and configuration. The request helpers
(`generate`, `stream`) and the `generate()` reference the served ids are compared with live here too.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import socket
import string
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from conftest import metric_values
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from model_repo_builder.build import BuildResult, build
from model_repo_builder.runtime.server import TritonServer
from model_repo_builder.spec import BuildSpec, LaunchSpec
from model_repo_builder.templates.common.trb_runtime import IN_FLIGHT_METRIC
from model_repo_builder.templates.seq2seq.generation import CROSS_CACHE_FILE

# The flan-t5-small architecture (google/flan-t5-small config.json).
FLAN_T5_SMALL = {
    "d_model": 512,
    "d_ff": 1024,
    "num_layers": 8,
    "num_decoder_layers": 8,
    "num_heads": 6,
    "d_kv": 64,
    "vocab_size": 32128,
}
# Same family, a fraction of the compute: fast enough for most tests.
SMALL_T5 = {
    "d_model": 64,
    "d_ff": 128,
    "num_layers": 2,
    "num_decoder_layers": 2,
    "num_heads": 4,
    "d_kv": 16,
    "vocab_size": 32128,
}
TINY_T5 = {**SMALL_T5, "d_model": 32, "d_ff": 64, "num_heads": 2, "vocab_size": 1024}

_SUBJECTS = (
    "the cat",
    "a server",
    "my friend",
    "the weather",
    "this model",
    "our team",
    "the train",
    "a batch",
)
_VERBS = ("likes", "needs", "translates", "answers", "summarizes", "waits for", "builds", "measures")
_OBJECTS = (
    "German sentences",
    "short questions",
    "long documents",
    "many requests",
    "fresh coffee",
    "the latency budget",
    "concurrent prompts",
    "quiet evenings",
)
SENTENCES = tuple(
    f"{subject} {verb} {obj}." for subject, verb, obj in itertools.product(_SUBJECTS, _VERBS, _OBJECTS)
)
PROMPTS = (
    "translate English to German: the cat likes fresh coffee.",
    "summarize: a server waits for many requests and our team measures the latency budget.",
    "ok",
    "answer: what does this model need?",
    "the weather builds quiet evenings " * 6,
    "my friend translates German sentences.",
)


@contextlib.contextmanager
def torch_threads(count: int = 1) -> Iterator[None]:
    """Run PyTorch on `count` threads: on a shared 2-core machine, small models are ~10x faster on one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def make_tokenizer(bos: bool = False) -> Any:
    """A Unigram tokenizer over the words of SENTENCES plus ASCII characters, wrapped like T5's.

    The vocabulary is listed, not trained (the Unigram trainer numbers pieces differently from run to
    run): pad 0, eos 1, unk 2, then whole words, then single characters. </s> is appended as T5 does;
    with `bos`, <s> (the last id) is also prepended, as BART's tokenizer does.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted({word for sentence in SENTENCES for word in sentence.replace(".", " .").split()})
    characters = string.ascii_letters + string.digits + string.punctuation
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [(f"\u2581{word}", -3.0) for word in words]
    vocab += [(word, -4.0) for word in words]
    vocab += [(character, -6.0) for character in characters]
    special = [("</s>", 1)]
    if bos:
        vocab.append(("<s>", 0.0))
        special.append(("<s>", len(vocab) - 1))
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    first = "<s> " if bos else ""
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{first}$A </s>", pair=f"{first}$A </s> $B </s>", special_tokens=special
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        **({"bos_token": "<s>"} if bos else {}),
        model_max_length=512,
        model_input_names=["input_ids", "attention_mask"],
    )
    return wrapped


def write_t5(directory: Path, architecture: dict[str, int], seed: int = 0, decodable: bool = False) -> Path:
    """Save a randomly initialised T5 (safetensors) with the local tokenizer into `directory`.

    With `decodable`, the output-projection rows of ids the tokenizer does not know are zeroed, so
    greedy decoding picks known tokens and the generated text is not empty (shapes and cost unchanged).
    """
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(
        **architecture,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(config).eval()
    tokenizer = make_tokenizer()
    if decodable:
        with torch.no_grad():
            model.lm_head.weight[len(tokenizer) :] = 0.0
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


# BART-family architectures at the size of TINY_T5, with a position table shorter than the tokenizer's
# 512-token limit (the build must cap prompts and generations at it).
BART_FAMILY_SIZE = {
    "vocab_size": 1024,
    "d_model": 32,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "encoder_attention_heads": 2,
    "decoder_attention_heads": 2,
    "encoder_ffn_dim": 64,
    "decoder_ffn_dim": 64,
    "max_position_embeddings": 128,
}


def bart_family_rules(model_type: str, tokenizer: Any) -> dict[str, Any]:
    """The token ids and generation rules of real checkpoints of each family, on the local tokenizer.

    BART (facebook/bart-large-cnn): decoding starts at EOS, BOS and EOS are forced, trigrams never
    repeat, a minimum length, and beam-search defaults the served model does not take. Marian
    (Helsinki-NLP/opus-mt-*): decoding starts at the padding token, which is then never generated.
    mBART: decoding starts at EOS, EOS is forced.
    """
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    if model_type == "bart":
        return {
            "bos_token_id": tokenizer.bos_token_id,
            "decoder_start_token_id": eos,
            "forced_bos_token_id": tokenizer.bos_token_id,
            "forced_eos_token_id": eos,
            "no_repeat_ngram_size": 3,
            "min_length": 5,
            "num_beams": 4,
            "length_penalty": 2.0,
        }
    if model_type == "marian":
        return {"decoder_start_token_id": pad, "bad_words_ids": [[pad]], "forced_eos_token_id": eos}
    return {"decoder_start_token_id": eos, "forced_eos_token_id": eos}


def write_bart_family(directory: Path, model_type: str, seed: int = 0) -> Path:
    """Save a randomly initialised BART, Marian or mBART with its family's generation config.

    Logits of ids the tokenizer does not know get a large negative bias, so greedy decoding picks
    known tokens and the generated text is not empty (shapes and cost unchanged).
    """
    import torch
    from transformers import (
        BartConfig,
        BartForConditionalGeneration,
        GenerationConfig,
        MarianConfig,
        MarianMTModel,
        MBartConfig,
        MBartForConditionalGeneration,
    )

    classes = {
        "bart": (BartConfig, BartForConditionalGeneration),
        "marian": (MarianConfig, MarianMTModel),
        "mbart": (MBartConfig, MBartForConditionalGeneration),
    }
    config_class, model_class = classes[model_type]
    tokenizer = make_tokenizer(bos=model_type == "bart")
    rules = bart_family_rules(model_type, tokenizer)
    config = config_class(
        **BART_FAMILY_SIZE,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=rules["decoder_start_token_id"],
    )
    torch.manual_seed(seed)
    model = model_class(config).eval()
    with torch.no_grad():
        model.final_logits_bias[:, len(tokenizer) :] = -1e4
    model.generation_config = GenerationConfig(
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, **rules
    )
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def session_bart_family(factory: pytest.TempPathFactory, model_type: str) -> Path:
    """The random `model_type` model, written once per session."""
    directory = factory.getbasetemp() / f"{model_type}-tiny"
    if not (directory / "model.safetensors").is_file():
        write_bart_family(directory, model_type)
    return directory


def session_t5(
    factory: pytest.TempPathFactory, label: str, architecture: dict[str, int], decodable: bool = False
) -> Path:
    """The model `label`, written once per session (shared by every module that asks)."""
    directory = factory.getbasetemp() / f"t5-{label}"
    if not (directory / "model.safetensors").is_file():
        write_t5(directory, architecture, decodable=decodable)
    return directory


def session_build(factory: pytest.TempPathFactory, model_dir: Path, **options: object) -> BuildResult:
    """Build `model_dir` with `options` once per session and configuration."""
    label = "-".join(f"{key}-{value}" for key, value in sorted(options.items()))
    output = factory.getbasetemp() / f"repos-{model_dir.name}-{label}"
    spec = BuildSpec(source=str(model_dir), output=output, **options)  # type: ignore[arg-type]
    cached = _BUILDS.get(str(output))
    if cached is None:
        cached = _BUILDS[str(output)] = build(spec)
    return cached


_BUILDS: dict[str, BuildResult] = {}


def launch_spec(repository: Path) -> LaunchSpec:
    """A LaunchSpec on three fresh free ports."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(3)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        http_port, grpc_port, metrics_port = (sock.getsockname()[1] for sock in sockets)
    return LaunchSpec(
        repositories=(repository,), http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port
    )


# --- requests to a served model and the reference they are compared with -----------------------


CLIENTS = {"http": httpclient, "grpc": grpcclient}


class Reference:
    """transformers' `generate` on the source model (its own generation config), one prompt at a time."""

    def __init__(self, model_dir: Path):
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.model = AutoModelForSeq2SeqLM.from_pretrained(str(model_dir)).eval()

    def ids(self, prompt: str, max_new_tokens: int, num_beams: int = 1) -> list[int]:
        batch = self.tokenizer(prompt, return_tensors="pt")
        with torch.inference_mode(), torch_threads(1):
            # The served beam search ranks as length_penalty 1 and early_stopping False do, whatever the
            # checkpoint's generation config prefers; its token rules apply either way.
            output = self.model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=num_beams,
                length_penalty=1.0,
                early_stopping=False,
            )
        return output[0, 1:].tolist()

    def text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def endless_prompt(self, max_new_tokens: int) -> str:
        """A prompt whose generation does not reach EOS within `max_new_tokens` (runs them all)."""
        return next(p for p in PROMPTS if len(self.ids(p, max_new_tokens)) == max_new_tokens)


def request_inputs(module: Any, prompts: list[str] | None, **parameters: tuple[str, list]) -> list:
    """PROMPT (unless `prompts` is None) and NAME=(datatype, values) inputs, each shaped [n, 1]."""
    inputs = []
    if prompts is not None:
        prompt = module.InferInput("PROMPT", [len(prompts), 1], "BYTES")
        prompt.set_data_from_numpy(np.array([[p.encode()] for p in prompts], dtype=np.object_))
        inputs.append(prompt)
    dtypes = {"INT32": np.int32, "INT64": np.int64, "FP32": np.float32, "BOOL": np.bool_, "BYTES": np.object_}
    for name, (datatype, values) in parameters.items():
        tensor = module.InferInput(name, [len(values), 1], datatype)
        tensor.set_data_from_numpy(np.array([[v] for v in values], dtype=dtypes[datatype]))
        inputs.append(tensor)
    return inputs


def generate(
    server: TritonServer,
    model: str,
    prompts: list[str],
    protocol: str = "http",
    **parameters: tuple[str, list],
) -> tuple[list[str], list[list[int]]]:
    """Texts and ids (padding stripped) for one request; the client is closed afterwards."""
    module = CLIENTS[protocol]
    client = module.InferenceServerClient(server.http_url if protocol == "http" else server.grpc_url)
    try:
        result = client.infer(model, request_inputs(module, prompts, **parameters))
    finally:
        client.close()
    texts = [t.decode() for t in result.as_numpy("TEXT").reshape(-1)]
    ids = [[int(t) for t in row if t != -1] for row in result.as_numpy("TOKEN_IDS")]
    return texts, ids


def stream(
    server: TritonServer, model: str, prompts: list[str], max_new_tokens: int, **parameters: tuple[str, list]
) -> tuple[list[str], list[int]]:
    """Text deltas and ids of one gRPC streaming request, in the order they arrived."""
    results: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        client.start_stream(callback=lambda result, error: results.put((result, error)))
        limits = ("INT32", [max_new_tokens] * len(prompts))
        inputs = request_inputs(grpcclient, prompts, MAX_NEW_TOKENS=limits, **parameters)
        client.async_stream_infer(model, inputs, enable_empty_final_response=True)
        deltas, ids = [], []
        while True:
            result, error = results.get(timeout=60)
            if error is not None:
                raise error
            if result.as_numpy("TOKEN_IDS") is not None:
                deltas.append(result.as_numpy("TEXT")[0, 0].decode())
                ids.append(int(result.as_numpy("TOKEN_IDS")[0, 0]))
            if result.get_response().parameters["triton_final_response"].bool_param:
                return deltas, ids
    finally:
        client.stop_stream()
        client.close()


# --- the in-flight gauge -------------------------------------------------------------------------


def poll_in_flight(
    server: TritonServer, model: str, until: Callable[[float], bool], limit_s: float = 60.0
) -> float | None:
    """The model's summed in-flight gauge once `until(value)` holds; the last value read at the
    deadline (None: not exported). The stub reports it every 0.25 s: this polls, the caller decides."""
    deadline = time.monotonic() + limit_s
    while True:
        values = metric_values(server.metrics_url, IN_FLIGHT_METRIC, model)
        value = sum(values.values()) if values else None
        if (value is not None and until(value)) or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def in_flight_under_load(
    server: TritonServer, model: str, prompt: str, clients: int, max_new_tokens: int
) -> tuple[float | None, float | None, list[int]]:
    """(gauge read while `clients` keep long generations running, gauge once all are answered, the
    number of ids of every answer). Each client sends again until the gauge read above 0 (or a
    deadline), so the outcome does not depend on how long one generation takes on this machine."""
    stop = threading.Event()
    lengths: list[int] = []

    def client() -> None:
        while not stop.is_set():
            ids = generate(server, model, [prompt], MAX_NEW_TOKENS=("INT32", [max_new_tokens]))[1]
            lengths.append(len(ids[0]))

    with ThreadPoolExecutor(clients) as pool:
        running = [pool.submit(client) for _ in range(clients)]
        try:
            during = poll_in_flight(server, model, lambda value: value > 0)
        finally:
            stop.set()
        for future in running:
            future.result()
    after = poll_in_flight(server, model, lambda value: value == 0)
    return during, after, lengths


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2+2-layer T5 with d_model 32 and a 1,024-token vocabulary (decodable)."""
    return session_t5(tmp_path_factory, "tiny", TINY_T5, decodable=True)


@pytest.fixture(scope="session")
def small_t5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2+2-layer T5 with d_model 64 and flan-t5's 32,128-token vocabulary (decodable)."""
    return session_t5(tmp_path_factory, "small", SMALL_T5, decodable=True)


@pytest.fixture(scope="session")
def small_reference(small_t5: Path) -> Reference:
    """transformers' `generate` on the small T5, the reference served ids are compared with."""
    return Reference(small_t5)


@pytest.fixture(scope="session")
def flan_t5_small_arch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A T5 with exactly flan-t5-small's architecture and random weights (none zeroed)."""
    return session_t5(tmp_path_factory, "flan-small-arch", FLAN_T5_SMALL)


@pytest.fixture(scope="session")
def tiny_t5_onnx(tiny_t5: Path) -> Path:
    """The tiny T5 exported to encoder / decoder / decoder-with-past ONNX files (fp32)."""
    from model_repo_builder.export.seq2seq_export import export_seq2seq

    directory = tiny_t5.with_name(f"{tiny_t5.name}-onnx")
    if not (directory / CROSS_CACHE_FILE).is_file():
        export_seq2seq(tiny_t5, directory)
    return directory
