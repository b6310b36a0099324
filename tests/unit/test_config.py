import json
from pathlib import Path

import pytest
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2

from model_repo_builder.errors import RepositoryError
from model_repo_builder.repository import config as model_config
from model_repo_builder.repository.embedding import model_configuration
from model_repo_builder.spec import BuildSpec

DATA = Path(__file__).parent / "data"

GOLDEN_SPEC = BuildSpec(
    source="minilm",
    instances=2,
    max_batch_size=16,
    max_queue_delay_us=500,
    max_queue_size=64,
    threads_per_instance=1,
    precision="int8",
)
GOLDEN_PARAMETERS: dict[str, object] = {
    "pooling": "mean",
    "normalize": True,
    "max_length": 256,
    "pad_token": "[PAD]",
    "pad_token_id": 0,
    "intra_op_threads": 1,
    "allow_spinning": False,
    "precision": "int8",
}


def golden(name: str) -> model_config_pb2.ModelConfig:
    """A hand-written golden config, read through the same schema tritonserver uses."""
    data = json.loads((DATA / name).read_text(encoding="utf-8"))
    return json_format.ParseDict(data, model_config_pb2.ModelConfig())


def rendered_embedding_config(spec: BuildSpec = GOLDEN_SPEC) -> model_config_pb2.ModelConfig:
    text = model_config.render(model_configuration(spec, "minilm", 384, GOLDEN_PARAMETERS))
    return model_config.parse(text)


# --- the embedding model's config.pbtxt --------------------------------------------------------


def test_embedding_config_matches_golden_as_data():
    assert model_config.as_dict(rendered_embedding_config()) == model_config.as_dict(
        golden("embedding_config.json")
    )


def test_embedding_config_fields_that_matter():
    config = rendered_embedding_config()
    assert config.backend == "python"
    assert config.max_batch_size == 16
    batching = config.dynamic_batching
    assert list(batching.preferred_batch_size) == []
    assert batching.max_queue_delay_microseconds == 500
    # trb's own admission bound, not Triton's queue policy (which turns off the batcher's prefetching).
    assert not batching.HasField("default_queue_policy")
    assert config.parameters["max_queue_size"].string_value == "64"
    assert [(g.count, g.kind) for g in config.instance_group] == [
        (2, model_config_pb2.ModelInstanceGroup.KIND_CPU)
    ]
    (text_input,) = config.input
    assert (text_input.name, text_input.data_type, list(text_input.dims)) == (
        "TEXT",
        model_config_pb2.TYPE_STRING,
        [1],
    )
    (embedding,) = config.output
    assert (embedding.name, embedding.data_type, list(embedding.dims)) == (
        "EMBEDDING",
        model_config_pb2.TYPE_FP32,
        [384],
    )
    assert [w.batch_size for w in config.model_warmup] == [1, 16]
    assert config.parameters["normalize"].string_value == "true"


def test_gpu_kind_renders_kind_gpu():
    spec = BuildSpec(source="minilm", kind="gpu", instances=3)
    (group,) = rendered_embedding_config(spec).instance_group
    assert group.kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert group.count == 3


def test_rendered_text_is_protobuf_text_format():
    text = model_config.render(model_configuration(GOLDEN_SPEC, "minilm", 384, GOLDEN_PARAMETERS))
    assert 'name: "minilm"' in text
    assert "max_batch_size: 16" in text
    assert "{" not in text.splitlines()[0]


# --- render / parse reject what tritonserver would reject --------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"name": "m", "max_batch_sise": 4},
        {"name": "m", "dynamic_batching": {"max_queue_delay_microsecond": 100}},
        {"name": "m", "instance_group": [{"count": 1, "kind": "KIND_CPUU"}]},
        {"name": "m", "max_batch_size": "many"},
        {"name": "m", "input": [{"name": "TEXT", "data_type": "TYPE_STR", "dims": [1]}]},
    ],
)
def test_render_rejects_misspelt_fields_and_bad_values(bad):
    with pytest.raises(RepositoryError, match="invalid model configuration"):
        model_config.render(bad)


def test_parse_rejects_corrupt_text():
    with pytest.raises(RepositoryError, match="does not parse"):
        model_config.parse('name: "m"\nmax_batch_sise: 4\n')
    with pytest.raises(RepositoryError):
        model_config.parse("name: {{{")


def test_render_then_parse_is_lossless():
    config = {"name": "m", "backend": "python", "max_batch_size": 8, "input": [], "output": []}
    parsed = model_config.parse(model_config.render(config))
    assert model_config.as_dict(parsed) == {"name": "m", "backend": "python", "max_batch_size": 8}


# --- helpers -----------------------------------------------------------------------------------


def test_queue_is_bounded_and_rejects():
    scheduling = model_config.scheduling(BuildSpec(source="minilm", instances=1, max_queue_size=7))
    policy = scheduling["dynamic_batching"]["default_queue_policy"]
    assert policy["max_queue_size"] == 7
    assert policy["timeout_action"] == "REJECT"


def test_warmup_at_batch_one_only_when_max_batch_is_one():
    (only,) = model_config.text_warmup("TEXT", 1)
    assert only["batch_size"] == 1
    assert [w["batch_size"] for w in model_config.text_warmup("TEXT", 8)] == [1, 8]


def test_string_parameters_lowercase_booleans_and_stringify():
    assert model_config.string_parameters({"a": True, "b": False, "c": 3, "d": "Mean"}) == {
        "a": {"string_value": "true"},
        "b": {"string_value": "false"},
        "c": {"string_value": "3"},
        "d": {"string_value": "Mean"},
    }


def test_serialize_bytes_element_is_length_prefixed_utf8():
    assert model_config.serialize_bytes_element("ab") == b"\x02\x00\x00\x00ab"
    encoded = model_config.serialize_bytes_element("é🚀")
    assert encoded[:4] == (6).to_bytes(4, "little")
    assert encoded[4:].decode("utf-8") == "é🚀"


def test_zero_max_queue_size_writes_no_queue_policy() -> None:
    from model_repo_builder.repository.config import scheduling
    from model_repo_builder.spec import BuildSpec

    bounded = scheduling(BuildSpec(source="minilm", instances=1, max_queue_size=8))["dynamic_batching"]
    assert bounded["default_queue_policy"]["max_queue_size"] == 8
    unbounded = scheduling(BuildSpec(source="minilm", instances=1, max_queue_size=0))["dynamic_batching"]
    assert "default_queue_policy" not in unbounded and unbounded["max_queue_delay_microseconds"] == 1000


def test_admission_moves_the_bound_into_the_model_except_with_priorities() -> None:
    spec = BuildSpec(source="minilm", instances=1, max_queue_size=8)
    own = model_config.scheduling(spec, admission=True)["dynamic_batching"]
    assert "default_queue_policy" not in own  # the batcher keeps prefetching
    assert model_config.admission_parameters(spec) == {"max_queue_size": 8}
    assert model_config.admission_parameters(BuildSpec(source="minilm", instances=1, max_queue_size=0)) == {
        "max_queue_size": 0
    }
    prioritised = BuildSpec(source="minilm", instances=1, max_queue_size=8, priority_levels=2)
    kept = model_config.scheduling(prioritised, admission=True)["dynamic_batching"]
    assert kept["default_queue_policy"]["max_queue_size"] == 8 and kept["priority_levels"] == 2
    assert model_config.admission_parameters(prioritised) == {}
