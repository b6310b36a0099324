"""`trb status`: what a running server serves: models, versions, instances, readiness, queue, cache, restarts.

Read from Triton's own unrestricted APIs (model readiness, config and statistics) and its metrics
(`nv_inference_pending_request_count` plus trb's own `trb_queue_depth`; a generation model's
`trb_requests_in_flight`), plus the state file the supervisor of `trb launch` keeps for that port
(restarts and sidecars), which only the same user can read.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_repo_builder.errors import InferenceError
from model_repo_builder.perf import metrics
from model_repo_builder.runtime.tools import cache_dir
from model_repo_builder.templates.common.trb_runtime import IN_FLIGHT_METRIC, QUEUE_DEPTH_METRIC


@dataclass(frozen=True, kw_only=True)
class ModelStatus:
    """One served model as `trb status` shows it."""

    name: str
    versions: tuple[str, ...]
    instances: int
    ready: bool
    pending: int | None  # requests waiting in its queue (None: metrics not reachable)
    successes: int
    failures: int
    restarts: int
    cache_hits: int = 0  # answered from the response cache (models built with --response-cache)
    cache_misses: int = 0
    unloaded: bool = False  # unloaded on purpose (`trb models unload`); the supervisor leaves it so
    in_flight: int | None = None  # a generation model's requests taken and not yet answered (None: none)


def state_file(http_port: int) -> Path:
    """Where the supervisor of `trb launch --http-port PORT` keeps its state (one per port and user)."""
    return cache_dir() / f"launch-{http_port}.json"


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Replace the state file atomically, readable by this user only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(f".{os.getpid()}.tmp")
    descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(state, handle)
    os.replace(staging, path)


def load_by_model(text: str) -> tuple[dict[str, int], dict[str, int]]:
    """(requests waiting, requests in flight) per model from a Prometheus scrape.

    Waiting: Triton's queue plus trb's own queue of the encoder templates (one series per instance);
    in flight: the generation template's requests taken and not yet answered.
    """
    found = metrics.sum_by_model(text, (metrics.PENDING_METRIC, QUEUE_DEPTH_METRIC, IN_FLIGHT_METRIC))
    waiting = found[metrics.PENDING_METRIC]
    for model, depth in found[QUEUE_DEPTH_METRIC].items():
        waiting[model] = waiting.get(model, 0.0) + depth
    pending = {model: int(value) for model, value in waiting.items()}
    return pending, {model: int(value) for model, value in found[IN_FLIGHT_METRIC].items()}


def server_status(url: str, metrics_url: str | None = None) -> tuple[list[ModelStatus], dict[str, Any]]:
    """Every model the server at `url` (host:port, HTTP) has statistics for, and the launcher's state.

    `metrics_url` defaults to the one the launcher recorded for that port.
    """
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    port = int(url.rsplit(":", 1)[1])
    state_path = state_file(port)
    state = json.loads(state_path.read_text(encoding="utf-8")) if state_path.is_file() else {}
    metrics_url = metrics_url or state.get("metrics_url")
    client = httpclient.InferenceServerClient(url)
    try:
        statistics = client.get_inference_statistics()["model_stats"]
        scraped = metrics.fetch(metrics_url) if metrics_url else None
        pending, in_flight = load_by_model(scraped) if scraped is not None else (None, {})
        found: dict[str, dict[str, Any]] = {}
        for entry in statistics:
            model = found.setdefault(
                entry["name"], {"versions": [], "success": 0, "fail": 0, "cache_hit": 0, "cache_miss": 0}
            )
            model["versions"].append(entry["version"])
            for outcome in ("success", "fail", "cache_hit", "cache_miss"):
                model[outcome] += int(entry["inference_stats"].get(outcome, {}).get("count", 0))
        models = []
        for name in sorted(set(found) | set(state.get("models", []))):
            if name not in found:  # the launcher serves it, but it is not loaded right now (reloading)
                models.append(
                    ModelStatus(
                        name=name,
                        versions=(),
                        instances=0,
                        ready=False,
                        pending=None,
                        successes=0,
                        failures=0,
                        restarts=int(state.get("restarts", {}).get(name, 0)),
                        unloaded=name in state.get("unloaded", []),
                    )
                )
                continue
            seen = found[name]
            config = client.get_model_config(name)
            instances = sum(int(group.get("count", 1)) for group in config.get("instance_group", [])) or 1
            models.append(
                ModelStatus(
                    name=name,
                    versions=tuple(sorted(seen["versions"])),
                    instances=instances,
                    ready=bool(client.is_model_ready(name)),
                    pending=None if pending is None else pending.get(name, 0),
                    successes=seen["success"],
                    failures=seen["fail"],
                    restarts=int(state.get("restarts", {}).get(name, 0)),
                    cache_hits=seen["cache_hit"],
                    cache_misses=seen["cache_miss"],
                    in_flight=in_flight.get(name),
                )
            )
    except InferenceServerException as error:
        raise InferenceError(f"the server at {url}: {error.message()}") from None
    except (ConnectionError, OSError) as error:
        raise InferenceError(
            f"cannot reach a Triton server at {url} ({error}); is `trb launch` running?"
        ) from None
    finally:
        client.close()
    return models, state
