"""Prometheus scrape config, the Grafana dashboard and the autoscaling query, on Triton's own metrics.

Every metric name here is one Triton 2.51 exports with the flags trb passes (`runtime/flags.py`):
tests/integration/test_deploy_metrics.py scrapes a real server and checks each name the dashboard
and the KEDA query use. Notes on what they mean:

- Percentiles come from the summaries `--metrics-config summary_latencies=true` enables
  (`nv_inference_request_summary_us{quantile=…}`): a summary's quantiles cannot be merged across
  pods, so panels show the worst pod (`max`), not a fleet percentile.
- Mean queue and compute time per request are the duration counters over `nv_inference_request_success`.
- Triton has no per-instance utilisation metric. Each request of a batch carries the batch's compute
  time, so compute time per request × executions per second is the time instances are busy; divided
  by the instance count it is their utilisation (approximate: it weighs batches by their size).
- trb's encoder templates keep their own bounded queue (Triton's queue holds next to nothing), so
  queue depth is `nv_inference_pending_request_count` plus trb's gauge `trb_queue_depth` (one series
  per model instance; models without trb's queue have none, hence `or vector(0)`). Triton's queue and
  compute durations of those models end when execute() returns, before the answer is computed.
- trb's generation template takes each request out of Triton's queue into its running decode batch
  at once (continuous batching), so Triton's queue stays near empty however loaded it is; it exports
  `trb_requests_in_flight` (one series per model instance: requests taken and not yet answered), and
  a generation repository scales on that plus Triton's pending count.
- `nv_inference_request_failure` counts what Triton itself fails (rejected by a full queue,
  cancelled, backend errors). An error response a python-backend model returns for a bad input (trb's
  400 for empty text) is a success for Triton's counters, as measured on 2.51.
"""

from __future__ import annotations

import json
import re
from typing import Any

from model_repo_builder.deploy.facts import RepositoryFacts
from model_repo_builder.perf.metrics import PENDING_METRIC
from model_repo_builder.templates.common.trb_runtime import (
    ANSWERED_METRIC,
    COMPUTE_DURATION_METRIC,
    IN_FLIGHT_METRIC,
    QUEUE_DEPTH_METRIC,
    QUEUE_DURATION_METRIC,
)

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
_RATE = "[$__rate_interval]"


def model_matcher(models: tuple[str, ...]) -> str:
    """A PromQL label matcher for exactly these model names."""
    if len(models) == 1:
        return f'model="{models[0]}"'
    alternatives = "|".join(re.escape(name).replace("\\", "\\\\") for name in models)
    return f'model=~"{alternatives}"'


def queue_depth_query(facts: RepositoryFacts, namespace: str) -> str:
    """Requests waiting in the queues of the repository's models (Triton's and trb's), over every pod."""
    selector = f'namespace="{namespace}",{model_matcher(facts.model_names)}'
    trb_queue = f"(sum({QUEUE_DEPTH_METRIC}{{{selector}}}) or vector(0))"
    return f"sum({PENDING_METRIC}{{{selector}}}) + {trb_queue}"


def in_flight_query(facts: RepositoryFacts, namespace: str) -> str:
    """Requests the repository's models hold (taken or still in Triton's queue), over every pod."""
    selector = f'namespace="{namespace}",{model_matcher(facts.model_names)}'
    in_flight = f"(sum({IN_FLIGHT_METRIC}{{{selector}}}) or vector(0))"
    return f"sum({PENDING_METRIC}{{{selector}}}) + {in_flight}"


def scaling_query(facts: RepositoryFacts, namespace: str) -> str:
    """What the ScaledObject reads: requests in flight for a generation repository, else queue depth."""
    return in_flight_query(facts, namespace) if facts.generates else queue_depth_query(facts, namespace)


def prometheus_config(target: str, repository: str) -> dict[str, Any]:
    """A scrape config for one Triton metrics endpoint (`host:port`)."""
    return {
        "global": {"scrape_interval": "5s", "evaluation_interval": "15s"},
        "scrape_configs": [
            {
                "job_name": "triton",
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [target], "labels": {"trb_repository": repository}}],
            }
        ],
    }


def _panel(
    title: str, unit: str, targets: list[tuple[str, str]], description: str, position: int
) -> dict[str, Any]:
    return {
        "id": position + 1,
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": 12 * (position % 2), "y": 8 * (position // 2)},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {"refId": chr(ord("A") + index), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
            for index, (expr, legend) in enumerate(targets)
        ],
    }


def _per_request(counter: str, selector: str) -> str:
    """Mean milliseconds of a duration counter per successful request, per model."""
    return (
        f"sum by (model) (rate({counter}{{{selector}}}{_RATE})) / "
        f"sum by (model) (rate(nv_inference_request_success{{{selector}}}{_RATE})) / 1000"
    )


def dashboard_queries(facts: RepositoryFacts) -> dict[str, list[tuple[str, str]]]:
    """Panel title → (PromQL, legend) pairs; what the dashboard plots."""
    selector = model_matcher(facts.model_names)
    requests = f"sum by (model) (rate(nv_inference_request_success{{{selector}}}{_RATE}))"
    compute = " + ".join(
        f"sum by (model) (rate(nv_inference_compute_{part}_duration_us{{{selector}}}{_RATE}))"
        for part in ("input", "infer", "output")
    )
    utilisation = [
        (
            f'sum by (model) (rate(nv_inference_compute_infer_duration_us{{model="{model.name}"}}{_RATE}) / '
            f'rate(nv_inference_request_success{{model="{model.name}"}}{_RATE}) * '
            f'rate(nv_inference_exec_count{{model="{model.name}"}}{_RATE})) / 1e6 / {model.instances}',
            f"{model.name} ({model.instances} instances)",
        )
        for model in facts.models
    ]
    # The encoder templates' own queue and worker, per request answered (those answered in place
    # add 0: Triton's durations count them; for the others they end when execute() admits).
    trb_mean = (
        []
        if facts.generates
        else [
            (
                f"sum by (model) (rate({counter}{{{selector}}}{_RATE})) / "
                f"sum by (model) (rate({ANSWERED_METRIC}{{{selector}}}{_RATE})) / 1000",
                f"{{{{model}}}} {what} mean",
            )
            for counter, what in (
                (QUEUE_DURATION_METRIC, "trb queue"),
                (COMPUTE_DURATION_METRIC, "trb worker"),
            )
        ]
    )
    queries = {
        "Throughput": [
            (
                f"sum by (model) (rate(nv_inference_request_success{{{selector}}}{_RATE}))",
                "{{model}} requests/s",
            ),
            (f"sum by (model) (rate(nv_inference_count{{{selector}}}{_RATE}))", "{{model}} inferences/s"),
        ],
        "Request latency p50 / p99 (worst pod)": [
            (
                f'max by (model) (nv_inference_request_summary_us{{{selector},quantile="{q}"}}) / 1000',
                f"{{{{model}}}} p{label}",
            )
            for q, label in (("0.5", "50"), ("0.99", "99"))
        ],
        "Queue time": [
            (_per_request("nv_inference_queue_duration_us", selector), "{{model}} mean"),
            (
                f'max by (model) (nv_inference_queue_summary_us{{{selector},quantile="0.99"}}) / 1000',
                "{{model}} p99 (worst pod)",
            ),
            *trb_mean[:1],
        ],
        "Compute time (input + infer + output)": [
            (
                f"({compute}) / {requests} / 1000",
                "{{model}} mean",
            ),
            (
                f"max by (model) (nv_inference_compute_infer_summary_us"
                f'{{{selector},quantile="0.99"}}) / 1000',
                "{{model}} infer p99 (worst pod)",
            ),
            *trb_mean[1:],
        ],
        "Instance utilisation": utilisation,
        "Pending requests (queue depth)": [
            (f"sum by (model) ({PENDING_METRIC}{{{selector}}})", "{{model}} Triton"),
            # The encoder templates' own queue; the generation template has none (it runs what it takes).
            *(
                []
                if facts.generates
                else [(f"sum by (model) ({QUEUE_DEPTH_METRIC}{{{selector}}})", "{{model}} trb")]
            ),
        ],
        "Failures": [
            (
                f"sum by (model, reason) (rate(nv_inference_request_failure{{{selector}}}{_RATE}))",
                "{{model}} {{reason}}",
            )
        ],
        "Server CPU and memory": [
            ("max(nv_cpu_utilization)", "CPU utilisation"),
            ("max(nv_cpu_memory_used_bytes) / max(nv_cpu_memory_total_bytes)", "memory used"),
        ],
    }
    if facts.generates:
        queries[_IN_FLIGHT_PANEL] = [
            (f"sum by (model) ({IN_FLIGHT_METRIC}{{{selector}}})", "{{model}} in flight"),
            (f"max by (model) ({IN_FLIGHT_METRIC}{{{selector}}})", "{{model}} busiest instance"),
        ]
    if facts.gpu:  # exported only with --allow-gpu-metrics on a machine with GPUs (not checked live here)
        queries["GPU utilisation"] = [("max by (gpu_uuid) (nv_gpu_utilization)", "{{gpu_uuid}}")]
    return queries


_IN_FLIGHT_PANEL = "Requests in flight (generation)"
_UNITS = {
    "Throughput": ("reqps", "Successful requests and inferences (batch items) per second."),
    "Request latency p50 / p99 (worst pod)": (
        "ms",
        "Server-side request latency from Triton's summaries (sliding window); the worst pod's quantile.",
    ),
    "Queue time": ("ms", "Time a request waits in the scheduler queue before an instance takes it."),
    "Compute time (input + infer + output)": ("ms", "Time in the model: inputs, execution, outputs."),
    "Instance utilisation": (
        "percentunit",
        "Share of time the model's instances are executing (compute time per request × executions/s).",
    ),
    "Pending requests (queue depth)": (
        "short",
        "Requests waiting for an instance: what KEDA scales on (generation models: plus requests in flight).",
    ),
    _IN_FLIGHT_PANEL: (
        "short",
        "Requests a generation model's instances took and have not answered yet (decoding, or waiting "
        "for a place in the decode batch), over every pod; with Triton's pending count, what KEDA scales on.",
    ),
    "Failures": ("reqps", "Requests Triton failed, by reason (REJECTED: queue full, answered 503)."),
    "Server CPU and memory": ("percentunit", "The server machine's CPU utilisation and memory in use."),
    "GPU utilisation": ("percentunit", "Utilisation of each GPU the server sees."),
}


def grafana_dashboard(facts: RepositoryFacts) -> dict[str, Any]:
    """A Grafana dashboard (JSON model) for the repository's models."""
    panels = [
        _panel(title, _UNITS[title][0], targets, _UNITS[title][1], position)
        for position, (title, targets) in enumerate(dashboard_queries(facts).items())
    ]
    return {
        "uid": re.sub(r"[^a-zA-Z0-9_-]", "-", f"trb-{facts.name}")[:40],
        "title": f"trb · {facts.name}",
        "tags": ["trb", "triton"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                }
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def dashboard_json(facts: RepositoryFacts) -> str:
    """The dashboard as Grafana imports it."""
    return json.dumps(grafana_dashboard(facts), indent=2) + "\n"
