import dataclasses
from pathlib import Path

import pytest

from model_repo_builder.errors import SpecError, TrbError
from model_repo_builder.spec import BuildSpec, LaunchSpec, validate_model_name

# --- BuildSpec validation ----------------------------------------------------------------------


def test_defaults_are_valid():
    spec = BuildSpec(source="minilm")
    assert spec.precision == "fp32"
    assert spec.instances is None  # the task's default, resolved by the build
    assert spec.max_batch_size == 32
    assert spec.output == Path("repos")


def test_instances_zero_names_the_flag_and_the_value():
    with pytest.raises(SpecError) as caught:
        BuildSpec(source="minilm", instances=0)
    message = str(caught.value)
    assert message.startswith("`--instances` must be")
    assert "≥ 1" in message
    assert message.endswith("got 0")


@pytest.mark.parametrize(
    ("field", "value", "flag"),
    [
        ("instances", -3, "--instances"),
        ("instances", True, "--instances"),
        ("instances", "2", "--instances"),
        ("instances", 1.5, "--instances"),
        ("max_batch_size", 0, "--max-batch-size"),
        ("max_queue_delay_us", -1, "--max-queue-delay-us"),
        ("max_queue_size", -1, "--max-queue-size"),
        ("threads_per_instance", 0, "--threads-per-instance"),
        ("max_length", 1, "--max-length"),
        ("precision", "int4", "--precision"),
        ("precision", "FP32", "--precision"),
        ("kind", "tpu", "--kind"),
        ("batching", "iteration", "--batching"),
        ("name", "bad name", "--name"),
        ("name", ".hidden", "--name"),
        ("name", "x" * 65, "--name"),
        ("name", "minilm\n", "--name"),
        ("trust_remote_code", True, "--trust-remote-code"),
    ],
)
def test_invalid_option_names_its_flag(field, value, flag):
    with pytest.raises(SpecError) as caught:
        BuildSpec(source="minilm", **{field: value})
    assert f"`{flag}`" in str(caught.value)
    if field not in ("name", "trust_remote_code"):
        assert repr(value) in str(caught.value)


@pytest.mark.parametrize("source", ["", "   "])
def test_empty_source_is_rejected(source):
    with pytest.raises(SpecError, match="SOURCE"):
        BuildSpec(source=source)


def test_boundary_values_are_accepted():
    spec = BuildSpec(
        source="minilm",
        instances=1,
        max_batch_size=1,
        max_queue_delay_us=0,
        max_queue_size=1,
        threads_per_instance=1,
        max_length=2,
        precision="int8",
        kind="gpu",
        name="a" * 64,
    )
    assert spec.max_queue_delay_us == 0
    assert spec.kind == "gpu"


def test_spec_errors_are_trb_errors_with_usage_exit_code():
    with pytest.raises(TrbError) as caught:
        BuildSpec(source="minilm", instances=0)
    assert caught.value.exit_code == 2


def test_spec_is_frozen_and_keyword_only():
    spec = BuildSpec(source="minilm")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.instances = 4  # type: ignore[misc]
    with pytest.raises(TypeError):
        BuildSpec("minilm")  # type: ignore[misc]


def test_output_becomes_a_path():
    assert BuildSpec(source="minilm", output="somewhere/else").output == Path("somewhere/else")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["minilm", "all-MiniLM-L6-v2", "flan_t5.small", "0model"])
def test_valid_model_names(name):
    validate_model_name(name)


def test_threads_per_instance_explicit_wins():
    assert (
        BuildSpec(source="minilm", instances=4, threads_per_instance=3).resolved_threads_per_instance() == 3
    )


def test_threads_per_instance_split_the_cores_and_never_drop_to_zero():
    one = BuildSpec(source="minilm", instances=1).resolved_threads_per_instance()
    assert one >= 1
    assert BuildSpec(source="minilm", instances=1000).resolved_threads_per_instance() == 1
    two = BuildSpec(source="minilm", instances=2).resolved_threads_per_instance()
    assert two == max(1, one // 2)


# --- options / from_options --------------------------------------------------------------------


def test_options_hold_every_field_but_output():
    spec = BuildSpec(source="minilm", output=Path("out/x"), precision="int8", instances=3)
    options = spec.options()
    assert "output" not in options
    assert set(options) == {f.name for f in dataclasses.fields(BuildSpec)} - {"output"}
    assert options["precision"] == "int8"
    assert options["instances"] == 3


def test_from_options_round_trips():
    spec = BuildSpec(source="minilm", precision="int8", instances=2, max_queue_size=17, name="m")
    assert BuildSpec.from_options(spec.options(), output=spec.output) == spec


def test_from_options_rejects_unknown_keys_and_names_them():
    options = {**BuildSpec(source="minilm").options(), "instance": 2, "zeta": 1}
    with pytest.raises(SpecError) as caught:
        BuildSpec.from_options(options)
    assert "instance, zeta" in str(caught.value)


def test_from_options_overrides_apply_and_none_is_ignored():
    options = BuildSpec(source="minilm", name="orig").options()
    spec = BuildSpec.from_options(options, output=Path("out"), name=None)
    assert spec.name == "orig"
    assert spec.output == Path("out")
    assert BuildSpec.from_options(options, name="renamed").name == "renamed"


def test_from_options_still_validates_values():
    options = {**BuildSpec(source="minilm").options(), "instances": 0}
    with pytest.raises(SpecError, match="`--instances`"):
        BuildSpec.from_options(options)


# --- LaunchSpec --------------------------------------------------------------------------------


def test_launch_defaults():
    spec = LaunchSpec(repositories=("repos/minilm",))  # type: ignore[arg-type]
    assert spec.repositories == (Path("repos/minilm"),)
    assert spec.repository == Path("repos/minilm")
    assert (spec.http_port, spec.grpc_port, spec.metrics_port) == (8000, 8001, 8002)
    assert spec.host == "127.0.0.1"


@pytest.mark.parametrize("field", ["http_port", "grpc_port", "metrics_port"])
@pytest.mark.parametrize("value", [0, -1, 65536, "8000", True, 80.0])
def test_bad_port_names_the_flag(field, value):
    flag = "--" + field.replace("_", "-")
    with pytest.raises(SpecError) as caught:
        LaunchSpec(repositories=(Path("r"),), **{field: value})
    assert f"`{flag}`" in str(caught.value)
    assert repr(value) in str(caught.value)


@pytest.mark.parametrize("port", [1, 65535])
def test_port_range_edges_are_valid(port):
    spec = LaunchSpec(repositories=(Path("r"),), http_port=port, grpc_port=9001, metrics_port=9002)
    assert spec.http_port == port


def test_ports_must_differ():
    with pytest.raises(SpecError, match="must differ"):
        LaunchSpec(repositories=(Path("r"),), http_port=9000, grpc_port=9000, metrics_port=9002)


def test_launch_host_and_timeouts_are_validated():
    with pytest.raises(SpecError, match="`--host`"):
        LaunchSpec(repositories=(Path("r"),), host="")
    with pytest.raises(SpecError, match="`--startup-timeout`"):
        LaunchSpec(repositories=(Path("r"),), startup_timeout_s=0)
    with pytest.raises(SpecError, match="`--exit-timeout`"):
        LaunchSpec(repositories=(Path("r"),), exit_timeout_s=-1)
