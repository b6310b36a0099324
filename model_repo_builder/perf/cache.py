"""Response-cache hit and miss counts of one served model, from Triton's statistics extension.

A sweep reads them before and after each level of a model built with `--response-cache`, so its
results say how many of the level's requests the cache answered (the level's whole run, warm-up
included, not only its measured windows).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from model_repo_builder.errors import InferenceError


@dataclass(frozen=True, kw_only=True)
class CacheCounts:
    """Requests answered from the response cache (hits) and looked up there in vain (misses)."""

    hits: int
    misses: int

    def since(self, before: CacheCounts) -> CacheCounts:
        """The counts added since `before` (the counters only grow while the model stays loaded)."""
        return CacheCounts(hits=self.hits - before.hits, misses=self.misses - before.misses)


def parse_statistics(statistics: Mapping[str, Any], model: str) -> CacheCounts:
    """Sum `cache_hit` / `cache_miss` over the model's versions in a statistics answer.

    Both clients' forms are read: HTTP gives integers, gRPC's JSON gives 64-bit counts as strings and
    leaves zero counts out.
    """
    hits = misses = 0
    for entry in statistics.get("model_stats", []):
        if entry.get("name") != model:
            continue
        inference = entry.get("inference_stats", {})
        hits += int(inference.get("cache_hit", {}).get("count", 0))
        misses += int(inference.get("cache_miss", {}).get("count", 0))
    return CacheCounts(hits=hits, misses=misses)


def cache_counts(url: str, protocol: str, model: str) -> CacheCounts:
    """The model's cache counts now, from the server at `url` (host:port of `protocol`).

    Raises:
        InferenceError: If the server cannot be asked.
    """
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    try:
        if protocol == "grpc":
            grpc = grpcclient.InferenceServerClient(url)
            try:
                statistics = grpc.get_inference_statistics(model, as_json=True)
            finally:
                grpc.close()
        else:
            http = httpclient.InferenceServerClient(url)
            try:
                statistics = http.get_inference_statistics(model)
            finally:
                http.close()
    except InferenceServerException as error:
        raise InferenceError(f"cannot read the statistics of {model} at {url}: {error.message()}") from None
    return parse_statistics(statistics, model)


def cache_enabled(config: Mapping[str, Any]) -> bool:
    """Whether a model config (the server's JSON form) has the response cache on."""
    return bool((config.get("response_cache") or {}).get("enable"))
