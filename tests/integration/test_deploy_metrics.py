"""The metric names the Grafana dashboard and the KEDA trigger query, against a real server's /metrics."""

# ruff: noqa: F811

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
from deploy_fixtures import dashboard_expressions, exported_metric_names, promql_metric_names
from seq2seq_fixtures import (  # noqa: F401  (fixtures)
    PROMPTS,
    generate,
    launch_spec,
    poll_in_flight,
    session_build,
    small_t5,
)

from model_repo_builder.client import embed_texts
from model_repo_builder.deploy.facts import RepositoryFacts, read_repository
from model_repo_builder.deploy.monitoring import grafana_dashboard, queue_depth_query, scaling_query
from model_repo_builder.runtime.server import TritonServer
from model_repo_builder.templates.common.trb_runtime import IN_FLIGHT_METRIC

pytestmark = pytest.mark.integration


def _scrape(metrics_url: str) -> str:
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        return response.read().decode("utf-8")


def _used(facts: RepositoryFacts) -> set[str]:
    """Every metric the dashboard and the ScaledObject's query select."""
    used = set().union(
        *(promql_metric_names(expr) for expr in dashboard_expressions(grafana_dashboard(facts)))
    )
    return used | promql_metric_names(scaling_query(facts, "default"))


def test_every_metric_the_dashboard_and_autoscaler_use_is_exported(fp32_repo, fp32_server) -> None:
    for _ in range(3):
        embed_texts(
            fp32_repo.name, ["A man is eating food.", "Triton serves many models."], fp32_server.http_url
        )
    scrape = _scrape(fp32_server.metrics_url)
    exported = exported_metric_names(scrape)
    facts = read_repository(fp32_repo.repository)
    used = _used(facts)
    assert scaling_query(facts, "default") == queue_depth_query(facts, "default")
    assert len(used) >= 10
    assert used <= exported, f"not exported by the server: {sorted(used - exported)}"
    # The percentiles come from summaries the launcher's flags enable, per model and quantile.
    for quantile in ("0.5", "0.99"):
        assert (
            f'nv_inference_request_summary_us{{model="{fp32_repo.name}",version="1",quantile="{quantile}"}}'
            in scrape
        )


def test_a_generation_repository_exports_the_in_flight_gauge_it_scales_on(
    tmp_path_factory: pytest.TempPathFactory, small_t5: Path
) -> None:
    model = "t5-cb"  # the build test_seq2seq_continuous_e2e.py uses (built once per session)
    built = session_build(tmp_path_factory, small_t5, precision="fp32", name=model)
    facts = read_repository(built.repository)
    assert facts.generates
    with TritonServer(launch_spec(built.repository)) as server:
        generate(server, model, [PROMPTS[0]], MAX_NEW_TOKENS=("INT32", [8]))
        # The stub reports the gauge every 0.25 s; the request above was answered, so it settles at 0.
        assert poll_in_flight(server, model, lambda value: value == 0) == 0
        exported = exported_metric_names(_scrape(server.metrics_url))
    used = _used(facts)
    assert IN_FLIGHT_METRIC in promql_metric_names(scaling_query(facts, "default"))
    assert IN_FLIGHT_METRIC in used and "trb_queue_depth" not in used  # the generation template has none
    assert used <= exported, f"not exported by the server: {sorted(used - exported)}"
