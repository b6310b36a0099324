"""Render config.pbtxt through Triton's own schema (`model_config_pb2.ModelConfig`).

A config is built as a plain dict, parsed into the protobuf message (so a misspelt field or a wrong
enum fails here, not when tritonserver loads it) and printed with `text_format`.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from model_repo_builder.errors import RepositoryError
from model_repo_builder.spec import BuildSpec

INSTANCE_KINDS = {"cpu": "KIND_CPU", "gpu": "KIND_GPU"}
WARMUP_FILE = "warmup_text"


def render(config: dict[str, Any]) -> str:
    """Validate `config` against ModelConfig and return its protobuf text form."""
    try:
        message = json_format.ParseDict(config, model_config_pb2.ModelConfig())
    except json_format.ParseError as error:
        raise RepositoryError(f"invalid model configuration: {error}") from None
    return text_format.MessageToString(message)


def parse(text: str) -> model_config_pb2.ModelConfig:
    """Parse config.pbtxt text; a corrupt file is a `RepositoryError`."""
    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as error:
        raise RepositoryError(f"config.pbtxt does not parse as a Triton ModelConfig: {error}") from None


def as_dict(config: model_config_pb2.ModelConfig) -> dict[str, Any]:
    """The protobuf message as plain data (for comparisons and reports)."""
    return json_format.MessageToDict(config, preserving_proto_field_name=True)


def trb_admits(spec: BuildSpec) -> bool:
    """Whether a model whose template can bound its own queue does so (the `max_queue_size` parameter).

    Priority levels need Triton's per-level queues, so with `--priority-levels` Triton's queue
    policy bounds the queue, with the stall described in `scheduling`.
    """
    return spec.priority_levels == 0


def admission_parameters(spec: BuildSpec) -> dict[str, object]:
    """The parameter that turns on trb's admission bound in the encoder templates (none with priorities).

    The stub admits at most `max_queue_size` waiting requests (0: no bound), split over the
    instances (templates/common/trb_runtime.py `TritonAdmission`).
    """
    return {"max_queue_size": spec.max_queue_size} if trb_admits(spec) else {}


def scheduling(spec: BuildSpec, decoupled: bool = False, admission: bool = False) -> dict[str, Any]:
    """Batching, queueing, caching and instance settings shared by every served model trb builds.

    By default the queue is bounded: once `max_queue_size` requests wait, new ones are rejected at
    once with UNAVAILABLE (HTTP 503) instead of waiting behind an ever longer queue. `max_queue_size`
    0 leaves the queue unbounded and writes no queue policy. With `admission` (a template that
    keeps its own bounded queue, see `admission_parameters`) Triton's queue gets no policy, so the
    batcher keeps prefetching and the stall below does not happen; priority levels still need it.

    Why no `preferred_batch_size`: in Triton 2.51 any queue policy turns off the dynamic batcher's
    prefetching (`PriorityQueue::SupportPrefetching`); the batcher then forms a batch only while an
    instance waits for one, and nothing tells it when an instance frees up. An arriving request
    wakes it, but with preferred sizes only once the queue holds the next preferred size; without
    them every accepted arrival does (`DynamicBatchScheduler::Enqueue`). At 32 clients on a queue
    that never fills the two measure the same (bench/results/queue.md). What no setting fixes: a
    request refused by a full queue returns before that wake-up, so under sustained overload the
    batcher sleeps its 500 ms timeout (`WaitForPayloadSlotAvailable`) while requests are queued and
    the instance is idle; the README's "Overload" paragraph gives the cost. `allow_timeout_override`
    is off so that clients cannot lift the server's queue policy.

    With `priority_levels` the batcher keeps one queue per level (1 is served first); a level
    without its own `priority_queues` policy gets the default one. `rate_limit_resources` are what
    each instance must hold to execute (the server's budget is set by `trb launch`). The response
    cache is left out of decoupled (streaming) models: Triton caches no decoupled responses.
    """
    batching: dict[str, Any] = {"max_queue_delay_microseconds": spec.max_queue_delay_us}
    if spec.max_queue_size > 0 and not (admission and trb_admits(spec)):
        batching["default_queue_policy"] = {
            "timeout_action": "REJECT",
            "default_timeout_microseconds": 0,
            "allow_timeout_override": False,
            "max_queue_size": spec.max_queue_size,
        }
    if spec.priority_levels:
        batching["priority_levels"] = spec.priority_levels
        batching["default_priority_level"] = spec.default_priority_level or spec.priority_levels
        batching["priority_queue_policy"] = {
            str(level): {
                "timeout_action": "REJECT",
                "default_timeout_microseconds": timeout_us,
                "allow_timeout_override": False,
                "max_queue_size": size,
            }
            for level, (size, timeout_us) in sorted(spec.priority_queue_policies().items())
        }
    group: dict[str, Any] = {"count": spec.instance_count, "kind": INSTANCE_KINDS[spec.kind]}
    resources = spec.rate_limiter_resources()
    if resources:
        group["rate_limiter"] = {"resources": [{"name": n, "count": c} for n, c in sorted(resources.items())]}
    config: dict[str, Any] = {
        "max_batch_size": spec.max_batch_size,
        "dynamic_batching": batching,
        "instance_group": [group],
    }
    if spec.response_cache and not decoupled:
        config["response_cache"] = {"enable": True}
    return config


def string_parameters(values: dict[str, object]) -> dict[str, dict[str, str]]:
    """Python-backend parameters: Triton passes every value as a string."""
    return {
        key: {"string_value": str(value).lower() if isinstance(value, bool) else str(value)}
        for key, value in values.items()
    }


def text_warmup(input_name: str, max_batch_size: int) -> list[dict[str, Any]]:
    """Warm up with one real sentence at batch 1 and at the largest batch (replicated by Triton)."""
    sizes = sorted({1, max_batch_size})
    return [
        {
            "name": f"warmup_batch_{size}",
            "batch_size": size,
            "inputs": {input_name: {"data_type": "TYPE_STRING", "dims": [1], "input_data_file": WARMUP_FILE}},
        }
        for size in sizes
    ]


def serialize_bytes_element(text: str) -> bytes:
    """One TYPE_STRING element as Triton reads it from a warmup file: 4-byte length, then UTF-8."""
    data = text.encode("utf-8")
    return len(data).to_bytes(4, "little") + data


# --- the GPU target: native onnxruntime backend, TensorRT accelerator, ensembles ----------------

# TensorRT's precision per trb precision (the onnxruntime backend's `precision_mode` values).
TENSORRT_PRECISIONS = {"fp32": "FP32", "fp16": "FP16"}
# The onnxruntime backend's default workspace: the GPU memory TensorRT may use while it builds and runs.
TENSORRT_WORKSPACE_BYTES = 1 << 30
# Engines and timing caches are written where the server runs, never into the (read-only) model
# mount; /tmp is writable for the container's non-root user. A restart rebuilds them.
TENSORRT_CACHE_ROOT = "/tmp/trb-trt-cache"


def gpu_instance_group(spec: BuildSpec) -> list[dict[str, Any]]:
    """`--instances` KIND_GPU instances on each GPU of `--gpus` (on every GPU when none are listed)."""
    group: dict[str, Any] = {"count": spec.instance_count, "kind": INSTANCE_KINDS["gpu"]}
    if spec.gpus:
        group["gpus"] = list(spec.gpus)
    return [group]


def profile_shapes(inputs: list[str], batch: int, length: int) -> str:
    """One TensorRT optimization-profile bound: `name:batchxlength,…` for every input."""
    return ",".join(f"{name}:{batch}x{length}" for name in inputs)


def tensorrt_accelerator(
    *, model_name: str, precision: str, inputs: list[str], max_batch_size: int, sequence_length: int
) -> dict[str, Any]:
    """The `optimization` block that runs an ONNX model through ONNX Runtime's TensorRT provider.

    One optimization profile covers batch 1 to `max_batch_size` at the fixed sequence length, so
    every batch the dynamic batcher forms reuses one engine; engines and the timing cache persist
    under TENSORRT_CACHE_ROOT/<model>, so a second load of the same model skips the engine build.
    """
    cache = f"{TENSORRT_CACHE_ROOT}/{model_name}"
    parameters = {
        "precision_mode": TENSORRT_PRECISIONS[precision],
        "max_workspace_size_bytes": str(TENSORRT_WORKSPACE_BYTES),
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": f"{cache}/engines",
        "trt_timing_cache_enable": "1",
        "trt_timing_cache_path": f"{cache}/timing",
        "trt_profile_min_shapes": profile_shapes(inputs, 1, sequence_length),
        # Under load the batcher forms full batches: that is the shape worth tuning for.
        "trt_profile_opt_shapes": profile_shapes(inputs, max_batch_size, sequence_length),
        "trt_profile_max_shapes": profile_shapes(inputs, max_batch_size, sequence_length),
    }
    return {
        "execution_accelerators": {
            "gpu_execution_accelerator": [{"name": "tensorrt", "parameters": parameters}]
        }
    }


def zero_warmup(inputs: list[dict[str, Any]], max_batch_size: int) -> list[dict[str, Any]]:
    """Warm up tensor inputs with zeros at batch 1 and the largest batch (builds TensorRT engines at load)."""
    return [
        {
            "name": f"warmup_batch_{size}",
            "batch_size": size,
            "inputs": {
                tensor["name"]: {"data_type": tensor["data_type"], "dims": tensor["dims"], "zero_data": True}
                for tensor in inputs
            },
        }
        for size in sorted({1, max_batch_size})
    ]


def ensemble_step(model_name: str, input_map: dict[str, str], output_map: dict[str, str]) -> dict[str, Any]:
    """One step of `ensemble_scheduling`: the model's tensor names mapped to the ensemble's."""
    return {"model_name": model_name, "model_version": -1, "input_map": input_map, "output_map": output_map}
