"""`trb build --response-cache`: a repeated input is answered from Triton's cache, identically, counted."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import running_server

from model_repo_builder.build import build
from model_repo_builder.cli import main
from model_repo_builder.client import embed_texts
from model_repo_builder.spec import BuildSpec

pytestmark = pytest.mark.integration


def test_a_repeated_input_is_a_cache_hit_with_the_same_answer(tmp_path_factory) -> None:
    output = tmp_path_factory.mktemp("repos-cached")
    built = build(BuildSpec(source="minilm", output=output, name="minilm-cached", response_cache=True))
    assert "response_cache" in (built.repository / built.name / "config.pbtxt").read_text()
    with running_server(built.repository) as server:
        assert any(flag.startswith("--cache-config=local,size=") for flag in server.command())

        def counts() -> tuple[int, int]:
            result = CliRunner().invoke(main, ["status", "--url", server.http_url, "--json"])
            assert result.exit_code == 0, result.output
            (model,) = json.loads(result.output)["models"]
            return model["cache_hits"], model["cache_misses"]

        hits, misses = counts()
        first = embed_texts(built.name, ["a sentence the cache will see twice"], url=server.http_url)
        assert counts() == (hits, misses + 1)
        second = embed_texts(built.name, ["a sentence the cache will see twice"], url=server.http_url)
        assert counts() == (hits + 1, misses + 1)
        np.testing.assert_array_equal(first, second)
        other = embed_texts(built.name, ["another sentence"], url=server.http_url)
        assert counts() == (hits + 1, misses + 2)
        assert not np.array_equal(first, other)
        table = CliRunner().invoke(main, ["status", "--url", server.http_url]).output
        assert f"{hits + 1}/{misses + 2}" in table


def test_a_sweep_of_a_cached_model_counts_hits_and_misses_per_level(tmp_path_factory) -> None:
    output = tmp_path_factory.mktemp("repos-cached-sweep")
    built = build(BuildSpec(source="minilm", output=output, name="minilm-cached", response_cache=True))
    folder = tmp_path_factory.mktemp("sweep") / "run"
    prompts = folder.parent / "prompts.txt"
    prompts.write_text("one sentence\nanother sentence\na third sentence\n", encoding="utf-8")
    result = CliRunner().invoke(
        main,
        ["sweep", str(built.repository), "--concurrency", "1,2", "--interval-ms", "300"]
        + ["--prompts", str(prompts), "--output", str(folder)],
    )
    assert result.exit_code == 0, result.output
    results = json.loads((folder / "results.json").read_text())
    first, second = results["configs"][0]["levels"]
    # Three distinct inputs, each sent many times: three misses at most, then hits only.
    assert 0 < first["cache_misses"] <= 3 and first["cache_hits"] > 0
    assert second["cache_misses"] == 0 and second["cache_hits"] > 0
    # perf_analyzer's requests past its measured windows count too: at least the measured ones are hits.
    assert first["cache_hits"] + first["cache_misses"] >= first["requests"]
    header = (folder / "levels.csv").read_text().splitlines()[0]
    assert header.endswith("cache_hits,cache_misses")
