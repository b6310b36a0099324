"""`trb demo`: the whole flow on the embedded default model, end to end, in one command.

Build the int8 repository, launch the real tritonserver on it, send texts over HTTP, and compare
the served vectors with the source model run in-process.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_repo_builder.build import build
from model_repo_builder.client import embed_texts
from model_repo_builder.models.registry import DEFAULT_MODEL
from model_repo_builder.models.source import resolve_source
from model_repo_builder.runtime.ports import preferred_or_free_ports
from model_repo_builder.runtime.server import TritonServer
from model_repo_builder.spec import BuildSpec, LaunchSpec

LOGGER = logging.getLogger(__name__)

DEMO_TEXTS = (
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome.",
    "The new film is so great.",
    "A monkey is playing drums.",
    "Quarterly revenue grew by twelve percent.",
)


@dataclass(frozen=True, kw_only=True)
class DemoReport:
    """What the demo measured."""

    repository: Path
    texts: tuple[str, ...]
    cosine_to_source: tuple[float, ...]
    similarity: np.ndarray
    latency_p50_ms: float
    latency_p99_ms: float


def run_demo(output: Path, precision: str = "int8", requests: int = 200) -> DemoReport:
    """Build, launch, query and check the embedded default model."""
    from model_repo_builder.export.verify import reference_embeddings

    result = build(BuildSpec(source=DEFAULT_MODEL, output=output, precision=precision))
    ports = preferred_or_free_ports((8000, 8001, 8002))
    spec = LaunchSpec(
        repositories=(result.repository,), http_port=ports[0], grpc_port=ports[1], metrics_port=ports[2]
    )
    with TritonServer(spec) as server:
        served = embed_texts(result.name, DEMO_TEXTS, url=server.http_url)
        latencies = []
        for index in range(requests):
            started = time.perf_counter()
            embed_texts(result.name, DEMO_TEXTS[index % len(DEMO_TEXTS) :][:1], url=server.http_url)
            latencies.append((time.perf_counter() - started) * 1000)
    model = result.manifest.model
    source_dir = resolve_source(DEFAULT_MODEL).path
    _, _, source = reference_embeddings(
        source_dir, DEMO_TEXTS, model["pooling"], model["normalize"], model["max_length"], allow_pickle=False
    )
    cosines = np.sum(served * source, axis=1) / (
        np.linalg.norm(served, axis=1) * np.linalg.norm(source, axis=1)
    )
    return DemoReport(
        repository=result.repository,
        texts=DEMO_TEXTS,
        cosine_to_source=tuple(float(c) for c in cosines),
        similarity=served @ served.T,
        latency_p50_ms=float(np.percentile(latencies, 50)),
        latency_p99_ms=float(np.percentile(latencies, 99)),
    )
