"""Response cache, priority queues, rate limiter resources: rendered and parsed back through ModelConfig."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_repo_builder.errors import SpecError
from model_repo_builder.repository import config as model_config
from model_repo_builder.repository.seq2seq import model_configuration
from model_repo_builder.runtime.server import TritonServer
from model_repo_builder.spec import BuildSpec, LaunchSpec


def rendered(spec: BuildSpec, decoupled: bool = False) -> dict:
    text = model_config.render({"name": "m", "backend": "python", **model_config.scheduling(spec, decoupled)})
    return model_config.as_dict(model_config.parse(text))


def test_no_option_renders_none_of_them() -> None:
    config = rendered(BuildSpec(source="x", instances=1))
    assert "response_cache" not in config
    assert "priority_levels" not in config["dynamic_batching"]
    assert "rate_limiter" not in config["instance_group"][0]


def test_response_cache_is_on_for_served_models_and_off_for_decoupled_ones() -> None:
    spec = BuildSpec(source="x", instances=1, response_cache=True)
    assert rendered(spec)["response_cache"] == {"enable": True}
    assert "response_cache" not in rendered(spec, decoupled=True)
    stream = model_configuration(spec, "t5_stream", {}, streaming=True)
    assert "response_cache" not in stream and stream["model_transaction_policy"] == {"decoupled": True}
    assert model_configuration(spec, "t5", {})["response_cache"] == {"enable": True}


def test_priority_levels_and_per_level_queue_policies_parse_back() -> None:
    spec = BuildSpec(
        source="x", instances=1, priority_levels=3, priority_queues=("1=0", "3=4:50000"), max_queue_size=64
    )
    batching = rendered(spec)["dynamic_batching"]
    assert batching["priority_levels"] == "3"  # uint64 in protobuf JSON
    assert batching["default_priority_level"] == "3"
    assert batching["priority_queue_policy"] == {
        "1": {},  # every field at its default: REJECT, no timeout, no client override, unbounded
        "3": {"default_timeout_microseconds": "50000", "max_queue_size": 4},
    }
    assert batching["default_queue_policy"]["max_queue_size"] == 64  # level 2 gets the default policy
    message = model_config.parse(model_config.render({"name": "m", **model_config.scheduling(spec)}))
    assert message.dynamic_batching.priority_queue_policy[3].max_queue_size == 4
    assert message.dynamic_batching.priority_queue_policy[1].timeout_action == 0  # REJECT
    assert (
        BuildSpec(source="x", instances=1, priority_levels=3, default_priority_level=1).priority_levels == 3
    )


def test_rate_limiter_resources_render_on_the_instance_group() -> None:
    spec = BuildSpec(source="x", instances=2, rate_limit_resources=("cpu=1", "memory_gb=2"))
    group = rendered(spec)["instance_group"][0]
    assert group["count"] == 2
    assert group["rate_limiter"] == {
        "resources": [{"name": "cpu", "count": 1}, {"name": "memory_gb", "count": 2}]
    }
    stream = model_configuration(spec, "t5_stream", {}, streaming=True)
    assert stream["instance_group"][0]["rate_limiter"] == group["rate_limiter"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"priority_levels": -1}, "--priority-levels"),
        ({"priority_queues": ("1=4",)}, "need `--priority-levels`"),
        ({"priority_levels": 2, "default_priority_level": 3}, "between 1 and 2"),
        ({"priority_levels": 2, "priority_queues": ("3=4",)}, "level must be between 1 and 2"),
        ({"priority_levels": 2, "priority_queues": ("1=4", "1=8")}, "level 1 twice"),
        ({"priority_levels": 2, "priority_queues": ("high=4",)}, "LEVEL=MAX_QUEUE_SIZE"),
        ({"rate_limit_resources": ("cpu",)}, "NAME=COUNT"),
        ({"rate_limit_resources": ("cpu=0",)}, "COUNT ≥ 1"),
    ],
)
def test_bad_options_name_the_flag(options: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        BuildSpec(source="x", instances=1, **options)


def test_the_options_survive_the_manifest_round_trip() -> None:
    spec = BuildSpec(
        source="x", instances=1, response_cache=True, priority_levels=2, priority_queues=("2=4:100",)
    )
    assert BuildSpec.from_options(spec.options()) == spec


def _repository(root: Path, spec: BuildSpec) -> Path:
    (root / "m").mkdir(parents=True)
    config = {"name": "m", "backend": "python", **model_config.scheduling(spec)}
    (root / "m" / "config.pbtxt").write_text(model_config.render(config), encoding="utf-8")
    return root


def test_launch_passes_the_cache_and_the_rate_limiter_only_when_a_model_uses_them(tmp_path: Path) -> None:
    plain = _repository(tmp_path / "plain", BuildSpec(source="x", instances=1))
    cached = _repository(tmp_path / "cached", BuildSpec(source="x", instances=1, response_cache=True))
    limited = _repository(
        tmp_path / "limited", BuildSpec(source="x", instances=1, rate_limit_resources=("cpu=1",))
    )

    def flags(*repositories: Path, **options: object) -> list[str]:
        server = TritonServer(LaunchSpec(repositories=repositories, **options))  # type: ignore[arg-type]
        return server.feature_flags()

    assert flags(plain) == []
    assert flags(cached, cache_size_mb=8) == [f"--cache-config=local,size={8 * 1024 * 1024}"]
    assert flags(limited, rate_limit_resources=("cpu=2",)) == [
        "--rate-limit=execution_count",
        "--rate-limit-resource=cpu:2",
    ]
    with pytest.raises(SpecError, match="NAME=COUNT"):
        LaunchSpec(repositories=(plain,), rate_limit_resources=("cpu:2",))
