"""Helpers for the deployment tests: a small repository on disk, PromQL and Prometheus-text parsing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import promql_parser

from model_repo_builder.repository import config as model_config
from model_repo_builder.repository.manifest import MANIFEST_NAME, Manifest
from model_repo_builder.runtime.sidecar import STEPS_DIR, STEPS_FILE
from model_repo_builder.templates import RUNTIME_FILE

# Grafana's own variables, replaced by a value PromQL accepts before parsing.
GRAFANA_VARIABLES = {"$__rate_interval": "1m"}


def make_repository(
    root: Path,
    name: str = "minilm",
    *,
    instances: int = 2,
    threads: int = 1,
    max_batch_size: int = 32,
    max_text_bytes: int = 131072,
    kind: str = "cpu",
    with_steps: bool = False,
    generation: bool = False,
    runtime_text: str | None = None,
) -> Path:
    """A repository as `trb build` lays it out (config.pbtxt through ModelConfig, trb.yaml), no weights.

    `generation`: a text2text-generation repository (continuous batching of `max_batch_size` prompts
    per instance, and its streaming variant `<name>_stream`), with trb's runtime copied into each
    model's version folder (`runtime_text` replaces that file's text: an older runtime).
    """
    repository = root / name
    model_dir = repository / name
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "model.onnx").write_bytes(b"\0" * 4096)
    parameters: dict[str, object] = {"intra_op_threads": threads, "max_text_bytes": max_text_bytes}
    if generation:
        parameters |= {"batching": "continuous", "max_running": max_batch_size}
    config = {
        "name": name,
        "backend": "python",
        "max_batch_size": max_batch_size,
        "input": [{"name": "TEXT", "data_type": "TYPE_STRING", "dims": [1]}],
        "output": [{"name": "EMBEDDING", "data_type": "TYPE_FP32", "dims": [384]}],
        "instance_group": [{"count": instances, "kind": model_config.INSTANCE_KINDS[kind]}],
        "parameters": model_config.string_parameters(parameters),
    }
    (model_dir / "config.pbtxt").write_text(model_config.render(config), encoding="utf-8")
    if generation:
        stream_dir = repository / f"{name}_stream"
        (stream_dir / "1").mkdir(parents=True)
        stream = {
            **config,
            "name": stream_dir.name,
            "instance_group": [{"count": 1, "kind": model_config.INSTANCE_KINDS[kind]}],
            "parameters": model_config.string_parameters({**parameters, "weights_model": name}),
        }
        (stream_dir / "config.pbtxt").write_text(model_config.render(stream), encoding="utf-8")
        for version_dir in (model_dir / "1", stream_dir / "1"):
            shutil.copy2(RUNTIME_FILE, version_dir / RUNTIME_FILE.name)
            if runtime_text is not None:
                (version_dir / RUNTIME_FILE.name).write_text(runtime_text, encoding="utf-8")
    if with_steps:
        (model_dir / STEPS_DIR).mkdir()
        step = {
            "stage": "pre",
            "index": 0,
            "kind": "text",
            "file": "steps.py",
            "function": "f",
            "sha256": "0",
        }
        (model_dir / STEPS_DIR / STEPS_FILE).write_text(json.dumps([step]), encoding="utf-8")
    manifest = Manifest(
        name=name,
        task="text2text-generation" if generation else "feature-extraction",
        source={"argument": name},
        options={"kind": kind, "instances": instances, "max_batch_size": max_batch_size},
        model={},
        verification={},
        versions={},
        files={},
    )
    (repository / MANIFEST_NAME).write_text(manifest.to_yaml(), encoding="utf-8")
    return repository


def _children(node: Any) -> list[Any]:
    if isinstance(node, promql_parser.VectorSelector):
        return []
    if isinstance(node, promql_parser.MatrixSelector):
        return [node.vector_selector]
    if isinstance(node, promql_parser.Call):
        return list(node.args)
    if isinstance(node, promql_parser.BinaryExpr):
        return [node.lhs, node.rhs]
    if isinstance(node, promql_parser.AggregateExpr):
        return [node.expr] + ([node.param] if node.param is not None else [])
    for attribute in ("expr",):  # ParenExpr, UnaryExpr, SubqueryExpr
        if hasattr(node, attribute):
            return [getattr(node, attribute)]
    return []  # literals


def promql_metric_names(expression: str) -> set[str]:
    """Every metric a PromQL expression selects, found by PromQL's parser (raises on a syntax error)."""
    for variable, value in GRAFANA_VARIABLES.items():
        expression = expression.replace(variable, value)
    names: set[str] = set()
    stack = [promql_parser.parse(expression)]
    while stack:
        node = stack.pop()
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)
        stack.extend(_children(node))
    return names


def dashboard_expressions(dashboard: dict[str, Any]) -> list[str]:
    """The PromQL of every target of every panel."""
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def exported_metric_names(prometheus_text: str) -> set[str]:
    """Metric names a Prometheus text exposition holds, summary `_count`/`_sum` series included."""
    names = set()
    for line in prometheus_text.splitlines():
        if line and not line.startswith("#"):
            names.add(line.split("{", 1)[0].split(" ", 1)[0])
    return names
