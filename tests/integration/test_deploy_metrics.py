"""The metric names the Grafana dashboard and the KEDA trigger query, against a real server's /metrics."""

from __future__ import annotations

import urllib.request

import pytest
from deploy_fixtures import dashboard_expressions, exported_metric_names, promql_metric_names

from model_repo_builder.client import embed_texts
from model_repo_builder.deploy.facts import read_repository
from model_repo_builder.deploy.monitoring import grafana_dashboard, queue_depth_query

pytestmark = pytest.mark.integration


def test_every_metric_the_dashboard_and_autoscaler_use_is_exported(fp32_repo, fp32_server) -> None:
    for _ in range(3):
        embed_texts(
            fp32_repo.name, ["A man is eating food.", "Triton serves many models."], fp32_server.http_url
        )
    with urllib.request.urlopen(fp32_server.metrics_url, timeout=10) as response:
        scrape = response.read().decode("utf-8")
    exported = exported_metric_names(scrape)
    facts = read_repository(fp32_repo.repository)
    used = set().union(
        *(promql_metric_names(expr) for expr in dashboard_expressions(grafana_dashboard(facts)))
    )
    used |= promql_metric_names(queue_depth_query(facts, "default"))
    assert len(used) >= 10
    assert used <= exported, f"not exported by the server: {sorted(used - exported)}"
    # The percentiles come from summaries the launcher's flags enable, per model and quantile.
    for quantile in ("0.5", "0.99"):
        assert (
            f'nv_inference_request_summary_us{{model="{fp32_repo.name}",version="1",quantile="{quantile}"}}'
            in scrape
        )
