"""`trb deploy k8s`: KServe InferenceService or Deployment + Service, PDB and KEDA ScaledObject.

KServe: the Triton runtime (`modelFormat: triton`, `protocolVersion: v2`) in RawDeployment mode with
`autoscalerClass: external`, so that KServe creates the `<name>-predictor` Deployment but no HPA of
its own and the ScaledObject owns the replica count. KServe's runtime already passes the model store
(/mnt/models) and its ports (HTTP 8080, gRPC 9000); the InferenceService adds trb's other flags, which
KServe appends to the runtime's. The plain Deployment runs the same flags with trb's own ports and
mounts the repository read-only from a PersistentVolumeClaim.

Probes: Triton's `/v2/health/live` (liveness, after a startup probe that allows 10 minutes for the
models to load) and `/v2/health/ready` (readiness; strict: every model ready). The PDB allows one pod
down at a time, which never blocks a node drain even at one replica.
"""

from __future__ import annotations

import re
from typing import Any

from model_repo_builder.deploy import yaml_text
from model_repo_builder.deploy.autoscaling import POLLING_INTERVAL_S, Autoscaling
from model_repo_builder.deploy.facts import RepositoryFacts
from model_repo_builder.deploy.monitoring import scaling_query
from model_repo_builder.deploy.sizing import Resources, quantity
from model_repo_builder.errors import SpecError
from model_repo_builder.runtime.docker import CONTAINER_REPOSITORY, container_flags
from model_repo_builder.spec import DeploySpec

KSERVE_HTTP_PORT = 8080  # the kserve-tritonserver runtime's --http-port
KSERVE_POD_LABEL = "serving.kserve.io/inferenceservice"
ADMIN_KEY_VARIABLE = "TRB_ADMIN_KEY"
RUN_AS = 1000  # triton-server in the NGC image
STARTUP_BUDGET_S = 600
# The wake trigger only activates a deployment at zero; a threshold this high never asks for a second replica.
_WAKE_THRESHOLD = "1000000000"


def resource_name(name: str) -> str:
    """A Kubernetes name (DNS-1035 label, room left for KServe's suffixes) for a repository name."""
    cleaned = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    if not cleaned or not cleaned[0].isalpha():
        cleaned = f"trb-{cleaned}".strip("-")
    return cleaned[:40].rstrip("-")


def storage_uri(spec: DeploySpec, facts: RepositoryFacts) -> str:
    """`--storage-uri`, or a PersistentVolumeClaim named after the repository."""
    return spec.storage_uri or f"pvc://{resource_name(facts.name)}-repository/{facts.path.name}"


def _pvc(uri: str) -> tuple[str, str]:
    if not uri.startswith("pvc://"):
        raise SpecError(
            f"`--plain` mounts the repository from a PersistentVolumeClaim: give `--storage-uri` "
            f"pvc://CLAIM/PATH, got {uri!r} (KServe's storage initializer downloads s3:// or gs:// "
            "URIs; drop `--plain` for those)"
        )
    claim, _, path = uri.removeprefix("pvc://").partition("/")
    return claim, path


def _labels(facts: RepositoryFacts) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": resource_name(facts.name),
        "app.kubernetes.io/component": "triton",
        "app.kubernetes.io/managed-by": "trb",
    }


def _metadata(name: str, spec: DeploySpec, facts: RepositoryFacts, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": spec.namespace, "labels": _labels(facts), **extra}


def _scrape_annotations(spec: DeploySpec) -> dict[str, str]:
    return {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(spec.metrics_port),
        "prometheus.io/path": "/metrics",
    }


def _resources(resources: Resources) -> dict[str, Any]:
    # Requests equal limits (Guaranteed QoS): whole cores can be pinned by the static CPU manager, and
    # a replica measured at this size is not squeezed by neighbours.
    amounts = {"cpu": str(resources.cpu_cores), "memory": quantity(resources.memory_limit_bytes)}
    limits = dict(amounts)
    if resources.gpus:
        limits["nvidia.com/gpu"] = str(resources.gpus)
    return {"requests": amounts, "limits": limits}


def _probe(path: str, port: int | str, period_s: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period_s,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def _container(
    spec: DeploySpec, facts: RepositoryFacts, resources: Resources, *, kserve: bool
) -> dict[str, Any]:
    flags = container_flags(
        admin_key=f"$({ADMIN_KEY_VARIABLE})",
        http_port=None if kserve else spec.http_port,
        grpc_port=None if kserve else spec.grpc_port,
        metrics_port=spec.metrics_port,
        exit_timeout_s=spec.exit_timeout_s,
        gpus=facts.gpu,
        model_repositories=() if kserve else (CONTAINER_REPOSITORY,),
    )
    http: int | str = KSERVE_HTTP_PORT if kserve else "http"
    container: dict[str, Any] = {
        "image": spec.image,
        "args": flags.args(),
        "env": [
            {
                "name": ADMIN_KEY_VARIABLE,
                "valueFrom": {"secretKeyRef": {"name": admin_secret(facts), "key": "key"}},
            }
        ],
        "resources": _resources(resources),
        "startupProbe": _probe("/v2/health/live", http, 5, STARTUP_BUDGET_S // 5),
        "livenessProbe": _probe("/v2/health/live", http, 10, 3),
        "readinessProbe": _probe("/v2/health/ready", http, 5, 2),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
    }
    if not kserve:
        _, path = _pvc(storage_uri(spec, facts))
        mount: dict[str, Any] = {"name": "models", "mountPath": CONTAINER_REPOSITORY, "readOnly": True}
        if path:
            mount["subPath"] = path
        container = {
            "name": "triton",
            **container,
            "command": ["tritonserver"],
            "ports": [
                {"name": "http", "containerPort": spec.http_port, "protocol": "TCP"},
                {"name": "grpc", "containerPort": spec.grpc_port, "protocol": "TCP"},
                {"name": "metrics", "containerPort": spec.metrics_port, "protocol": "TCP"},
            ],
        }
        container["volumeMounts"] = [*container["volumeMounts"], mount]
    return container


def admin_secret(facts: RepositoryFacts) -> str:
    """Name of the Secret holding the restricted-API key (created by the operator, never written by trb)."""
    return f"{resource_name(facts.name)}-trb-admin"


def _pod_settings(spec: DeploySpec, resources: Resources) -> dict[str, Any]:
    return {
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationGracePeriodSeconds": spec.exit_timeout_s + 10,
        "volumes": [
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": quantity(resources.shm_bytes)}}
        ],
    }


def inference_service(
    spec: DeploySpec, facts: RepositoryFacts, resources: Resources, scaling: Autoscaling
) -> dict[str, Any]:
    """The KServe InferenceService on the Triton runtime."""
    name = resource_name(facts.name)
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": _metadata(
            name,
            spec,
            facts,
            annotations={
                "serving.kserve.io/deploymentMode": "RawDeployment",
                "serving.kserve.io/autoscalerClass": "external",
            },
        ),
        "spec": {
            "predictor": {
                "minReplicas": max(1, scaling.min_replicas),
                "maxReplicas": scaling.max_replicas,
                "labels": _labels(facts),
                "annotations": _scrape_annotations(spec),
                **_pod_settings(spec, resources),
                "model": {
                    "modelFormat": {"name": "triton"},
                    "protocolVersion": "v2",
                    "storageUri": storage_uri(spec, facts),
                    **_container(spec, facts, resources, kserve=True),
                },
            }
        },
    }


def deployment(
    spec: DeploySpec, facts: RepositoryFacts, resources: Resources, scaling: Autoscaling
) -> dict[str, Any]:
    """A plain Deployment running tritonserver on the repository from a PersistentVolumeClaim."""
    name = resource_name(facts.name)
    claim, _ = _pvc(storage_uri(spec, facts))
    pod = _pod_settings(spec, resources)
    pod["volumes"] = [
        *pod["volumes"],
        {"name": "models", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}},
    ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(name, spec, facts),
        "spec": {
            "replicas": max(1, scaling.min_replicas),
            "selector": {"matchLabels": _labels(facts)},
            # A new pod is ready (every model loaded) before an old one goes.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": _labels(facts), "annotations": _scrape_annotations(spec)},
                "spec": {**pod, "containers": [_container(spec, facts, resources, kserve=False)]},
            },
        },
    }


def service(spec: DeploySpec, facts: RepositoryFacts) -> dict[str, Any]:
    """A ClusterIP Service in front of the plain Deployment's pods."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(resource_name(facts.name), spec, facts),
        "spec": {
            "type": "ClusterIP",
            "selector": _labels(facts),
            "ports": [
                {"name": name, "port": port, "targetPort": name, "protocol": "TCP"}
                for name, port in (
                    ("http", spec.http_port),
                    ("grpc", spec.grpc_port),
                    ("metrics", spec.metrics_port),
                )
            ],
        },
    }


def pod_disruption_budget(spec: DeploySpec, facts: RepositoryFacts) -> dict[str, Any]:
    """At most one pod down at a time for voluntary disruptions (drains, upgrades)."""
    selector = _labels(facts) if spec.plain else {KSERVE_POD_LABEL: resource_name(facts.name)}
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(resource_name(facts.name), spec, facts),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}},
    }


def scaled_object(spec: DeploySpec, facts: RepositoryFacts, scaling: Autoscaling) -> dict[str, Any]:
    """The KEDA ScaledObject: replicas from queue depth (generation: requests in flight), over the pods."""
    name = resource_name(facts.name)
    target = name if spec.plain else f"{name}-predictor"
    triggers: list[dict[str, Any]] = [
        {
            "type": "prometheus",
            "name": scaling.metric.replace("_", "-"),
            "metricType": "AverageValue",
            "metadata": {
                "serverAddress": spec.prometheus_url,
                "query": scaling_query(facts, spec.namespace),
                "threshold": f"{scaling.scale_up_queue:g}",
                "activationThreshold": f"{scaling.scale_down_queue:g}",
            },
        }
    ]
    if spec.wake_query:
        triggers.append(
            {
                "type": "prometheus",
                "name": "wake",
                "metricType": "AverageValue",
                "metadata": {
                    "serverAddress": spec.prometheus_url,
                    "query": spec.wake_query,
                    "threshold": _WAKE_THRESHOLD,
                    "activationThreshold": "0",
                },
            }
        )
    window = {"stabilizationWindowSeconds": scaling.window_s}
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": _metadata(name, spec, facts),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "minReplicaCount": scaling.min_replicas,
            "maxReplicaCount": scaling.max_replicas,
            "pollingInterval": POLLING_INTERVAL_S,
            "cooldownPeriod": scaling.window_s,
            "advanced": {
                "horizontalPodAutoscalerConfig": {"behavior": {"scaleUp": window, "scaleDown": window}}
            },
            "triggers": triggers,
        },
    }


def manifests(
    spec: DeploySpec, facts: RepositoryFacts, resources: Resources, scaling: Autoscaling
) -> dict[str, dict[str, Any]]:
    """Every manifest, by file name."""
    serving = (
        {"deployment.yaml": deployment(spec, facts, resources, scaling), "service.yaml": service(spec, facts)}
        if spec.plain
        else {"inferenceservice.yaml": inference_service(spec, facts, resources, scaling)}
    )
    return {
        **serving,
        "poddisruptionbudget.yaml": pod_disruption_budget(spec, facts),
        "scaledobject.yaml": scaled_object(spec, facts, scaling),
    }


def render(
    spec: DeploySpec, facts: RepositoryFacts, resources: Resources, scaling: Autoscaling
) -> dict[str, str]:
    """The manifests as YAML text, by file name."""
    return {
        name: yaml_text.dump(document)
        for name, document in manifests(spec, facts, resources, scaling).items()
    }
