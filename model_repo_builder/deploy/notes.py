"""NOTES.md beside the deployment files: how to run them, how each figure was chosen, what is not covered."""

from __future__ import annotations

from dataclasses import dataclass

from model_repo_builder.deploy.autoscaling import Autoscaling
from model_repo_builder.deploy.facts import RepositoryFacts
from model_repo_builder.deploy.sizing import MIB, Resources, shm_bytes
from model_repo_builder.spec import DeploySpec

_STUB_CAVEAT = (
    "In Triton 2.51 a python-backend stub that dies is not restarted and health stays 200, so no probe "
    "sees it; its requests fail (watch the Failures panel). `trb launch` supervises this locally; here, "
    "reload the model through the repository API with the admin key, or restart the pod."
)


@dataclass(frozen=True, kw_only=True)
class Notes:
    """The NOTES.md text and the few lines worth printing on the terminal."""

    text: str
    highlights: tuple[str, ...]


def _bullets(lines: list[str] | tuple[str, ...]) -> str:
    return "\n".join(f"- {line}" for line in lines)


def container_notes(spec: DeploySpec, facts: RepositoryFacts) -> Notes:
    """Notes for `trb deploy docker`."""
    shm = shm_bytes(facts)
    sizing = (
        f"shared memory {shm // MIB} MiB: per python-backend instance 1 MiB plus two of its largest "
        "batches (max batch × max text bytes × tensors), at least 256 MiB"
    )
    text = f"""# {facts.name} in a container

Written by `trb deploy docker` for a {facts.target.upper()} repository ({len(facts.models)} model(s)).

    docker build -t {spec.image} .          # in the trb checkout (the top-level Dockerfile)
    export TRB_ADMIN_KEY=$(openssl rand -hex 24)
    ./docker-run.sh                                  # or: docker compose up
    docker compose --profile monitoring up           # plus Prometheus (:9090) and Grafana (:3000)

Ports on {spec.host}: HTTP {spec.http_port}, gRPC {spec.grpc_port}, metrics {spec.metrics_port} — the ones
`trb launch` uses. The repository is mounted read-only; the server runs as uid 1000 without
capabilities{"; all GPUs are passed in" if facts.gpu else ""}.

{_bullets([sizing])}

{_STUB_CAVEAT}
"""
    return Notes(text=text, highlights=(sizing,))


def kubernetes_notes(
    spec: DeploySpec, facts: RepositoryFacts, resources: Resources, scaling: Autoscaling
) -> Notes:
    """Notes for `trb deploy k8s`."""
    from model_repo_builder.deploy.kubernetes import admin_secret, resource_name, storage_uri

    uri = storage_uri(spec, facts)
    kind = (
        "a Deployment + Service"
        if spec.plain
        else "a KServe InferenceService (RawDeployment, Triton runtime)"
    )
    sizing = [
        f"cpu {resources.cpu_cores}: instances × ONNX Runtime threads per instance, as built",
        resources.basis,
        f"shared memory {resources.shm_bytes // MIB} MiB (a memory volume, added to the memory limit)",
    ]
    counted = "requests in flight" if facts.generates else "waiting requests"
    scaling_lines = [
        f"replicas {scaling.min_replicas}–{scaling.max_replicas}; KEDA keeps ceil({scaling.metric_label} / "
        f"{scaling.scale_up_queue:g}) replicas, deactivates at or below {scaling.scale_down_queue:g} "
        f"{counted}, {scaling.window_s} s stabilisation window",
        *scaling.basis,
    ]
    metrics = (
        "`nv_inference_pending_request_count` + `trb_requests_in_flight`, requests in flight"
        if facts.generates
        else "`nv_inference_pending_request_count` + `trb_queue_depth`, queue depth"
    )
    storage_hint = (
        f"storageUri {uri}: the default claim; copy the repository into it, or pass --storage-uri"
        if spec.storage_uri is None
        else f"storageUri {uri}"
    )
    text = f"""# {facts.name} on Kubernetes

Written by `trb deploy k8s`: {kind}, a PodDisruptionBudget and a KEDA ScaledObject in namespace
`{spec.namespace}`.

1. Build trb's image (top-level Dockerfile) and push it where the cluster pulls from; the manifests
   use `{spec.image}`.
2. Put the repository (the folder holding each model's config.pbtxt) at `{uri}`.
3. Create the restricted-API key:

       kubectl -n {spec.namespace} create secret generic {admin_secret(facts)} \\
           --from-literal=key=$(openssl rand -hex 24)

4. `kubectl apply -f .` (needs {"" if spec.plain else "KServe and "}KEDA installed, and a Prometheus at
   `{spec.prometheus_url}` scraping pods annotated `prometheus.io/scrape`, with the usual `namespace` label).

Sizing:
{_bullets(sizing)}

Autoscaling (`scaledobject.yaml`, query on {metrics}):
{_bullets(scaling_lines)}

- {storage_hint}
- Pods: `{resource_name(facts.name)}{"" if spec.plain else "-predictor"}`; probes on /v2/health/live and
  /v2/health/ready; at most one pod down at a time for drains.
- {_STUB_CAVEAT}
"""
    highlights = (*sizing[:2], *scaling_lines, storage_hint)
    return Notes(text=text, highlights=highlights)
