"""`trb build SOURCE`: a Hugging Face model becomes a verified Triton model repository."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from rich.status import Status

from model_repo_builder.export.quantize import INT8_SCHEME_CHOICES
from model_repo_builder.spec import (
    BATCHING_MODES,
    DEFAULT_BATCHING,
    DEVICE_KINDS,
    MODEL_FORMATS,
    PRECISIONS,
    TARGETS,
)


@click.command("build")
@click.argument("source", required=False)
@click.option("--name", help="Model (and repository directory) name; default derived from SOURCE.")
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path),
    default=None,
    help="Directory that receives repos/<name> (default ./repos).",
)
@click.option(
    "--model-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Local weights for SOURCE (e.g. an alias whose weights you downloaded).",
)
@click.option(
    "--precision", type=click.Choice(PRECISIONS), default=None, help="fp32 (default), fp16 or int8."
)
@click.option(
    "--instances",
    type=int,
    default=None,
    help="Model instances sharing the device (default: encoders on CPU one per core, at most 4; "
    "generation models 1; 1 on each GPU).",
)
@click.option(
    "--kind",
    type=click.Choice(DEVICE_KINDS),
    default=None,
    help="Instance kind (default cpu; gpu with --target gpu).",
)
@click.option(
    "--target",
    type=click.Choice(TARGETS),
    default=None,
    help="cpu (default): python-backend models; gpu: an ensemble whose model step is Triton's onnxruntime "
    "backend with the TensorRT accelerator on KIND_GPU instances (embeddings only; implies --kind gpu).",
)
@click.option(
    "--gpus",
    "gpus",
    default=None,
    help="GPU ids for the KIND_GPU instances, e.g. 0,1: --instances on each (default: every GPU).",
)
@click.option(
    "--format",
    "model_format",
    type=click.Choice(MODEL_FORMATS),
    default=None,
    help="Model step format for --target gpu: onnx (default) or tensorrt (plans; not yet).",
)
@click.option("--max-batch-size", type=int, default=None, help="Largest batch Triton forms (default 32).")
@click.option(
    "--max-queue-delay-us",
    type=int,
    default=None,
    help="How long the batcher waits to fill a batch (default 1000).",
)
@click.option(
    "--max-queue-size",
    type=int,
    default=None,
    help="Requests allowed to wait; more are rejected with 503 (default 256; 0: unbounded, no policy).",
)
@click.option(
    "--threads-per-instance",
    type=int,
    default=None,
    help="ONNX Runtime threads per instance (default: cores / instances).",
)
@click.option(
    "--batching",
    type=click.Choice(BATCHING_MODES),
    default=None,
    help=f"Text generation only: request (a batch runs to completion) or continuous (new requests "
    f"join the running batch at the next decode step). Default {DEFAULT_BATCHING}.",
)
@click.option(
    "--task",
    default=None,
    help="Serve the model as this task (feature-extraction, text-classification, text-ranking, "
    "token-classification, text2text-generation); default: the task its config.json names.",
)
@click.option(
    "--int8-scheme",
    type=click.Choice(INT8_SCHEME_CHOICES),
    default=None,
    help="int8 weights: auto (default: 7-bit s8-reduced, else u8, the first that verifies; both compute "
    "the same on every x86 CPU), or s8 (full range: accurate only on CPUs with VNNI).",
)
@click.option(
    "--max-text-bytes",
    type=int,
    default=None,
    help="Largest text a request may carry, in UTF-8 bytes; larger ones get 400 before any work "
    "(default: 512 bytes per token of the window, at least 64 KiB).",
)
@click.option(
    "--pre",
    multiple=True,
    help="Pre-processing step, repeatable, in order: `file.py:function` or `module:function` taking and "
    "returning list[str]; runs in a PyTriton sidecar that `trb launch` starts.",
)
@click.option(
    "--post",
    multiple=True,
    help="Post-processing step, repeatable: texts → texts (generation) or vectors → vectors (embeddings).",
)
@click.option(
    "--response-cache",
    is_flag=True,
    default=None,
    help="Answer repeated inputs from Triton's response cache (`trb launch` sizes it). Not for "
    "decoupled models: a text-generation repository's `<name>_stream` is left without it.",
)
@click.option(
    "--priority-levels",
    type=int,
    default=None,
    help="Priority queues: levels 1 (served first) … N; clients pass a level per request "
    "(default 0: one queue).",
)
@click.option(
    "--default-priority-level", type=int, default=None, help="Level of requests that name none (default N)."
)
@click.option(
    "--priority-queue",
    "priority_queues",
    multiple=True,
    help="Queue policy of one level, repeatable: LEVEL=MAX_QUEUE_SIZE[:TIMEOUT_US] "
    "(0: unbounded / no timeout); a full queue or a timed-out request is rejected. "
    "Other levels get the default policy.",
)
@click.option(
    "--rate-limit-resource",
    "rate_limit_resources",
    multiple=True,
    help="Rate limiter: NAME=COUNT of a resource each instance holds while it executes, repeatable; "
    "models naming the same resource share the budget `trb launch --rate-limit-resource` sets.",
)
@click.option("--max-length", type=int, default=None, help="Token limit; longer texts are truncated.")
@click.option("--allow-pickle", is_flag=True, default=None, help="Allow loading pickle-based *.bin weights.")
@click.option(
    "--from",
    "manifest",
    type=click.Path(path_type=Path, exists=True),
    help="Rebuild from a repository's trb.yaml (other options override it).",
)
def command(
    source: str | None, manifest: Path | None, model_dir: Path | None, output: Path | None, **options: object
) -> None:
    """Convert, quantize and verify a model, then write a Triton repository atomically."""
    from model_repo_builder.build import build, spec_from_manifest
    from model_repo_builder.errors import SpecError
    from model_repo_builder.spec import BuildSpec, parse_gpu_list

    given = {key: value for key, value in options.items() if value is not None and value != ()}
    if "gpus" in given:
        given["gpus"] = parse_gpu_list(str(given["gpus"]))
    if manifest is not None:
        spec = spec_from_manifest(manifest, output=output)
        spec = BuildSpec(**{**spec.__dict__, **given, **({"source": source} if source else {})})
    elif source is None:
        raise SpecError(
            "`SOURCE` is required (a local directory, a Hub id or an alias such as all-minilm-l6-v2), "
            "or pass `--from repos/<name>/trb.yaml`"
        )
    else:
        spec = BuildSpec(source=source, **({"output": output} if output else {}), **given)  # type: ignore[arg-type]
    with _progress(f"building {spec.source} ({spec.precision})"):
        result = build(spec, model_dir=model_dir)
    verification = result.manifest.verification
    click.echo(f"built {result.repository}")
    click.echo(
        f"  model {result.name}: {result.manifest.task}, {spec.precision}, "
        f"{result.manifest.options['instances']} instance(s), max batch {spec.max_batch_size}"
    )
    click.echo(f"  verified against the source model: {verification['summary']}")
    if spec.target == "gpu":
        click.echo(f"  GPU target: {verification['gpu_engine']}")
        click.echo(f"  smoke-test it on this CPU: trb launch {result.repository} --cpu-smoke")
    click.echo(f"  next: trb launch {result.repository}")


def _progress(message: str) -> Status:
    from rich.console import Console

    return Console(stderr=True).status(message)
