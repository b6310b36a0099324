"""`trb deploy`: rendered files, validated against the real schemas, and the flags' errors."""

from __future__ import annotations

import ast
import copy
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner
from cloudcoil.models.keda.v1alpha1 import ScaledObject
from deploy_fixtures import dashboard_expressions, exported_metric_names, make_repository, promql_metric_names

from model_repo_builder.cli import main
from model_repo_builder.deploy import MARKER, deploy
from model_repo_builder.deploy.facts import read_repository
from model_repo_builder.deploy.monitoring import grafana_dashboard, queue_depth_query
from model_repo_builder.deploy.sizing import MIB, shm_bytes
from model_repo_builder.errors import DeployError, SpecError
from model_repo_builder.runtime.docker import container_flags, docker_command
from model_repo_builder.runtime.server import TritonServer
from model_repo_builder.spec import DeploySpec, LaunchSpec

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parents[2]
# The oldest Kubernetes minor still widely run that has every API the manifests use (policy/v1 PDB: 1.21+).
KUBERNETES_VERSION = "1.30.0"
KSERVE_SCHEMA = json.loads((DATA / "schemas" / "kserve_inferenceservice_v1beta1.json").read_text())
# KServe fields that are not part of a Kubernetes container or pod (checked by KSERVE_SCHEMA instead).
_KSERVE_MODEL_FIELDS = ("modelFormat", "protocolVersion", "storageUri", "runtime")
_KSERVE_PREDICTOR_FIELDS = ("model", "minReplicas", "maxReplicas", "labels", "annotations")


@pytest.fixture()
def repository(tmp_path: Path) -> Path:
    return make_repository(tmp_path / "repos")


def _render(repository: Path, tmp_path: Path, platform: str, **fields: Any) -> Path:
    output = tmp_path / "out" / platform
    deploy(DeploySpec(repository=repository, platform=platform, output=output, **fields))
    return output


def _load(folder: Path, name: str) -> dict[str, Any]:
    return yaml.safe_load((folder / name).read_text(encoding="utf-8"))


def _flag_names(args: list[str]) -> set[str]:
    return {arg.split("=", 1)[0] for arg in args if arg.startswith("--")}


def _validate_kubernetes(document: dict[str, Any]) -> None:
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def _validate_keda(document: dict[str, Any]) -> None:
    """Validate through KEDA's CRD-generated models; a field they drop is an unknown field."""
    parsed = ScaledObject.model_validate(document)
    assert parsed.model_dump(by_alias=True, exclude_unset=True, mode="json") == document


def _pod_of_predictor(document: dict[str, Any]) -> dict[str, Any]:
    """The Kubernetes Pod a KServe predictor describes: its pod fields and its model's container fields."""
    predictor = document["spec"]["predictor"]
    pod_spec = {key: value for key, value in predictor.items() if key not in _KSERVE_PREDICTOR_FIELDS}
    container = {key: value for key, value in predictor["model"].items() if key not in _KSERVE_MODEL_FIELDS}
    pod_spec["containers"] = [{"name": "kserve-container", **container}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "predictor"}, "spec": pod_spec}


def _validate_inference_service(document: dict[str, Any]) -> None:
    jsonschema.validate(document, KSERVE_SCHEMA)
    _validate_kubernetes(_pod_of_predictor(document))


# --- one source of tritonserver flags ---------------------------------------------------------------


def test_launch_and_container_render_the_same_tritonserver_flags(repository: Path) -> None:
    spec = LaunchSpec(repositories=(repository,))
    local = TritonServer(spec).command()[1:]
    container = docker_command(spec)
    served = container[container.index("tritonserver") + 1 :]
    # Only where things live differs: the pip wheel's backend and cache folders.
    assert _flag_names(local) - _flag_names(served) == {"--backend-directory", "--cache-directory"}
    assert _flag_names(served) <= _flag_names(local)
    shared = [
        arg for arg in local if not arg.split("=", 1)[0].endswith(("-address", "-directory", "repository"))
    ]
    assert [arg for arg in shared if "restricted" not in arg] == [
        arg for arg in served if arg in shared and "restricted" not in arg
    ]
    assert "--metrics-config=summary_latencies=true" in served
    assert f"{repository.resolve()}:/models:ro" in container


# --- docker ------------------------------------------------------------------------------------------


def test_compose_and_run_script_serve_the_repository_read_only_on_launch_ports(
    repository: Path, tmp_path: Path
) -> None:
    folder = _render(repository, tmp_path, "docker", http_port=9000, grpc_port=9001, metrics_port=9002)
    triton = _load(folder, "compose.yaml")["services"]["triton"]
    volume = triton["volumes"][0]
    assert (folder / volume["source"]).resolve() == repository.resolve()
    assert volume["target"] == "/models" and volume["read_only"] is True
    assert triton["ports"] == ["127.0.0.1:9000:9000", "127.0.0.1:9001:9001", "127.0.0.1:9002:9002"]
    assert triton["user"] == "1000:1000" and triton["cap_drop"] == ["ALL"]
    assert "deploy" not in triton  # no GPU reservation for a CPU repository
    expected = container_flags(admin_key="KEY", http_port=9000, grpc_port=9001, metrics_port=9002).args()
    compose_args = [re.sub(r"\$\{TRB_ADMIN_KEY:\?[^}]*\}", "KEY", arg) for arg in triton["command"]]
    assert compose_args == ["tritonserver", *expected]

    # docker-run.sh, run with a `docker` that prints its arguments: the shell quoting holds.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "docker"
    fake.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    script = folder / "docker-run.sh"
    assert script.stat().st_mode & stat.S_IXUSR
    environment = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "TRB_ADMIN_KEY": "s3cret",
    }
    ran = subprocess.run(
        ["sh", str(script)], env=environment, capture_output=True, text=True, check=True, cwd="/"
    )
    argv = json.loads(ran.stdout)
    assert argv[argv.index("-v") + 1] == f"{repository.resolve()}:/models:ro"
    assert (
        argv[argv.index("tritonserver") + 1 :]
        == container_flags(admin_key="s3cret", http_port=9000, grpc_port=9001, metrics_port=9002).args()
    )
    assert f"--shm-size={shm_bytes(read_repository(repository)) // MIB}m" in argv
    missing_key = {key: value for key, value in environment.items() if key != "TRB_ADMIN_KEY"}
    refused = subprocess.run(
        ["sh", str(script)], env=missing_key, capture_output=True, text=True, check=False
    )
    assert refused.returncode != 0 and "TRB_ADMIN_KEY" in refused.stderr


def test_a_gpu_repository_gets_its_gpus_everywhere(tmp_path: Path) -> None:
    repository = make_repository(tmp_path / "repos", kind="gpu")
    folder = _render(repository, tmp_path, "docker")
    triton = _load(folder, "compose.yaml")["services"]["triton"]
    assert triton["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "--allow-gpu-metrics=true" in triton["command"]
    assert "--gpus=all" in (folder / "docker-run.sh").read_text()
    pod = _load(_render(repository, tmp_path, "k8s", plain=True), "deployment.yaml")["spec"]["template"][
        "spec"
    ]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_shared_memory_covers_two_largest_batches_per_instance_with_a_floor(tmp_path: Path) -> None:
    small = read_repository(make_repository(tmp_path / "a", instances=2, max_batch_size=8))
    assert shm_bytes(small) == 256 * MIB
    large = read_repository(make_repository(tmp_path / "b", instances=8, max_batch_size=64))
    # 8 instances × (1 MiB + 2 × 64 texts × 128 KiB × 2 tensors) = 8 × 33 MiB
    assert shm_bytes(large) == 264 * MIB


def test_dashboard_queries_parse_and_name_metrics_a_triton_251_server_exports(repository: Path) -> None:
    facts = read_repository(repository)
    exported = exported_metric_names((DATA / "triton_2.51_metrics.txt").read_text(encoding="utf-8"))
    dashboard = grafana_dashboard(facts)
    used = set().union(*(promql_metric_names(expr) for expr in dashboard_expressions(dashboard)))
    used |= promql_metric_names(queue_depth_query(facts, "default"))
    assert used and used <= exported, sorted(used - exported)
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for topic in ("throughput", "p50", "p99", "queue", "compute", "utilisation", "pending", "failures"):
        assert topic in titles
    assert {target["datasource"]["uid"] for panel in dashboard["panels"] for target in panel["targets"]} == {
        "${datasource}"
    }


def test_prometheus_scrapes_the_metrics_port(repository: Path, tmp_path: Path) -> None:
    folder = _render(repository, tmp_path, "docker", metrics_port=9102)
    job = _load(folder, "prometheus.yml")["scrape_configs"][0]
    assert job["static_configs"][0]["targets"] == ["triton:9102"] and job["metrics_path"] == "/metrics"
    provisioned = _load(folder, "grafana/provisioning/dashboards/trb.yml")["providers"][0]["options"]["path"]
    grafana = _load(folder, "compose.yaml")["services"]["grafana"]
    assert any(
        v["target"] == provisioned and v["source"] == "./grafana/dashboards" for v in grafana["volumes"]
    )
    assert json.loads((folder / "grafana" / "dashboards" / "minilm.json").read_text())["panels"]


# --- Kubernetes --------------------------------------------------------------------------------------


def test_plain_manifests_validate_against_the_kubernetes_schemas(repository: Path, tmp_path: Path) -> None:
    folder = _render(repository, tmp_path, "k8s", plain=True, storage_uri="pvc://models/minilm")
    deployment = _load(folder, "deployment.yaml")
    for name in ("deployment.yaml", "service.yaml", "poddisruptionbudget.yaml"):
        _validate_kubernetes(_load(folder, name))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert {"name": "models", "mountPath": "/models", "readOnly": True, "subPath": "minilm"} in container[
        "volumeMounts"
    ]
    service_ports = {p["name"]: p["port"] for p in _load(folder, "service.yaml")["spec"]["ports"]}
    assert service_ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    pdb = _load(folder, "poddisruptionbudget.yaml")["spec"]["selector"]["matchLabels"]
    assert pdb.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["paht"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate_kubernetes(broken)


def test_inference_service_validates_against_the_kserve_fields_and_the_pod_schema(
    repository: Path, tmp_path: Path
) -> None:
    folder = _render(repository, tmp_path, "k8s", storage_uri="s3://bucket/repos/minilm")
    service = _load(folder, "inferenceservice.yaml")
    _validate_inference_service(service)
    _validate_kubernetes(_load(folder, "poddisruptionbudget.yaml"))
    model = service["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "triton"} and model["protocolVersion"] == "v2"
    assert model["storageUri"] == "s3://bucket/repos/minilm"
    # KServe's runtime passes the model store and its ports; trb adds only the rest of its flags.
    assert not {"--model-repository", "--http-port", "--grpc-port"} & _flag_names(model["args"])
    assert model["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    assert service["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "external"
    misspelt = copy.deepcopy(service)
    misspelt["spec"]["predictor"]["model"]["storageURI"] = misspelt["spec"]["predictor"]["model"].pop(
        "storageUri"
    )
    with pytest.raises(jsonschema.ValidationError):
        _validate_inference_service(misspelt)
    bad_container = copy.deepcopy(service)
    bad_container["spec"]["predictor"]["model"]["resources"]["limits"]["cpu"] = ["2"]
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate_inference_service(bad_container)


def test_scaled_object_validates_against_keda_and_carries_the_flags(repository: Path, tmp_path: Path) -> None:
    folder = _render(
        repository,
        tmp_path,
        "k8s",
        min_replicas=0,
        max_replicas=6,
        scale_up_queue=8,
        scale_down_queue=2,
        window_s=120,
        namespace="serving",
        wake_query='sum(rate(ingress_requests_total{service="minilm"}[1m]))',
    )
    scaled = _load(folder, "scaledobject.yaml")
    _validate_keda(scaled)
    spec = scaled["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"], spec["cooldownPeriod"]) == (0, 6, 120)
    assert spec["scaleTargetRef"]["name"] == "minilm-predictor"  # the Deployment KServe creates
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert (
        behavior["scaleUp"]["stabilizationWindowSeconds"]
        == behavior["scaleDown"]["stabilizationWindowSeconds"]
        == 120
    )
    queue, wake = spec["triggers"]
    assert (queue["metadata"]["threshold"], queue["metadata"]["activationThreshold"]) == ("8", "2")
    assert promql_metric_names(queue["metadata"]["query"]) == {
        "nv_inference_pending_request_count",
        "trb_queue_depth",
    }
    assert 'namespace="serving"' in queue["metadata"]["query"]
    assert wake["metadata"]["activationThreshold"] == "0"
    as_number = copy.deepcopy(scaled)
    as_number["spec"]["triggers"][0]["metadata"]["threshold"] = 8  # KEDA's metadata is strings only
    with pytest.raises(ValueError):
        _validate_keda(as_number)
    misspelt = copy.deepcopy(scaled)
    misspelt["spec"]["maxReplicas"] = misspelt["spec"].pop("maxReplicaCount")
    with pytest.raises(AssertionError):
        _validate_keda(misspelt)


def _results(
    run: Path,
    *,
    model: str = "minilm",
    replicas: int | None = 3,
    settings: dict[str, Any] | None = None,
    generation: bool = False,
) -> Path:
    levels = [
        {"mode": "concurrency", "load": 4.0, "throughput_rps": 200.0, "p99_ms": 30.0,
         "breakdown": {"server_queue_ms": 6.0}, "server_rss_bytes": 300 * MIB},
        {"mode": "concurrency", "load": 8.0, "throughput_rps": 250.0, "p99_ms": 60.0,
         "breakdown": {"server_queue_ms": 14.0}, "server_rss_bytes": 320 * MIB},
    ]  # fmt: skip
    results = {
        "model": model,
        "slo": {"percentile": 99, "latency_ms": 100.0},
        "best_config": "as-built",
        "configs": [
            {
                "name": "as-built",
                "settings": settings or {},
                "levels": levels,
                "knee": {"found": True, "load": 8.0, "throughput_rps": 250.0, "p99_ms": 60.0},
                "capacity": {"met": True, "throughput_rps": 250.0, "load": 8.0, "reason": ""},
            }
        ],
        "plan": {"target_qps": 600.0, "replicas": replicas} if replicas else None,
        "summary": "",
    }
    if generation:  # what `trb sweep` adds for a text-generation model
        results["generation"] = {"tokens_per_request": 64.0}
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps(results), encoding="utf-8")
    return run


def test_a_sweep_run_sets_the_queue_threshold_max_replicas_and_memory(
    repository: Path, tmp_path: Path
) -> None:
    run = _results(tmp_path / "runs" / "a")
    folder = _render(repository, tmp_path, "k8s", plan=run)
    spec = _load(folder, "scaledobject.yaml")["spec"]
    # Little's law at the knee: 250 req/s × 14 ms waiting = 3.5 requests → scale up at 4 per replica.
    assert spec["triggers"][0]["metadata"]["threshold"] == "4"
    assert spec["maxReplicaCount"] == 3
    resources = _load(folder, "inferenceservice.yaml")["spec"]["predictor"]["model"]["resources"]
    # peak RSS 320 MiB × 1.5 + 256 MiB of shared memory
    assert resources["limits"]["memory"] == resources["requests"]["memory"] == f"{480 + 256}Mi"
    assert resources["limits"]["cpu"] == "2"  # 2 instances × 1 thread
    explicit = _load(
        _render(repository, tmp_path / "b", "k8s", plan=run, max_replicas=5), "scaledobject.yaml"
    )
    assert explicit["spec"]["maxReplicaCount"] == 5
    assert "3.50 requests waited" in (folder / "NOTES.md").read_text()


def test_a_sweep_run_of_another_configuration_is_refused(repository: Path, tmp_path: Path) -> None:
    with pytest.raises(DeployError, match="measured 'other'"):
        _render(repository, tmp_path, "k8s", plan=_results(tmp_path / "r1", model="other"))
    with pytest.raises(DeployError, match="--instances 4"):
        _render(repository, tmp_path, "k8s", plan=_results(tmp_path / "r2", settings={"instances": 4}))
    with pytest.raises(SpecError, match="--target-qps"):
        _render(repository, tmp_path, "k8s", plan=_results(tmp_path / "r3", replicas=None))


# --- text generation: requests in flight ---------------------------------------------------------------


@pytest.fixture()
def generation_repository(tmp_path: Path) -> Path:
    # 2 instances × 16 prompts decoded at once; the streaming variant reads the same weights.
    return make_repository(tmp_path / "repos", "t5", instances=2, max_batch_size=16, generation=True)


def _trigger(folder: Path) -> dict[str, Any]:
    scaled = _load(folder, "scaledobject.yaml")
    _validate_keda(scaled)
    (trigger,) = scaled["spec"]["triggers"]
    return trigger


def test_a_generation_repository_scales_on_requests_in_flight_at_its_decode_width(
    generation_repository: Path, tmp_path: Path
) -> None:
    facts = read_repository(generation_repository)
    assert facts.generates and facts.decode_width == 32  # the streaming variant adds no width
    folder = _render(generation_repository, tmp_path, "k8s")
    trigger = _trigger(folder)
    assert trigger["name"] == "in-flight"
    assert promql_metric_names(trigger["metadata"]["query"]) == {
        "nv_inference_pending_request_count",
        "trb_requests_in_flight",
    }
    assert 'model=~"t5|t5_stream"' in trigger["metadata"]["query"]
    assert (trigger["metadata"]["threshold"], trigger["metadata"]["activationThreshold"]) == ("32", "1")
    notes = (folder / "NOTES.md").read_text()
    assert "trb_requests_in_flight" in notes and "not on queue depth" in notes
    assert "decode width" in notes
    # An encoder repository still scales on queue depth.
    encoder = _trigger(_render(make_repository(tmp_path / "enc"), tmp_path / "e", "k8s"))
    assert encoder["name"] == "queue-depth" and "trb_requests_in_flight" not in encoder["metadata"]["query"]


def test_with_a_sweep_run_a_generation_repository_scales_up_at_the_knee_concurrency(
    generation_repository: Path, tmp_path: Path
) -> None:
    run = _results(tmp_path / "runs" / "t5", model="t5", generation=True)
    folder = _render(generation_repository, tmp_path, "k8s", plan=run)
    trigger = _trigger(folder)
    # The knee is at concurrency 8 (not the queue depth there: 250 req/s × 14 ms = 3.5).
    assert trigger["metadata"]["threshold"] == "8"
    assert "trb_requests_in_flight" in trigger["metadata"]["query"]
    assert "concurrency 8" in (folder / "NOTES.md").read_text()
    explicit = _trigger(_render(generation_repository, tmp_path / "b", "k8s", plan=run, scale_up_queue=5))
    assert explicit["metadata"]["threshold"] == "5"


def test_a_generation_dashboard_plots_requests_in_flight_instead_of_trb_queue(
    generation_repository: Path,
) -> None:
    facts = read_repository(generation_repository)
    used = set().union(
        *(promql_metric_names(expr) for expr in dashboard_expressions(grafana_dashboard(facts)))
    )
    assert "trb_requests_in_flight" in used and "trb_queue_depth" not in used
    titles = [panel["title"] for panel in grafana_dashboard(facts)["panels"]]
    assert "Requests in flight (generation)" in titles


def test_a_generation_repository_built_before_the_in_flight_gauge_is_refused(tmp_path: Path) -> None:
    older = make_repository(tmp_path / "repos", "t5", generation=True, runtime_text='"""older"""\n')
    with pytest.raises(DeployError, match="trb_requests_in_flight.*rebuild the repository"):
        _render(older, tmp_path, "k8s")


# --- what is refused ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--min-replicas", "0"], "--wake-query"),
        (["--min-replicas", "3", "--max-replicas", "2"], "--max-replicas"),
        (["--scale-up-queue", "1", "--scale-down-queue", "1"], "--scale-up-queue"),
        (["--scale-up-queue", "0.5"], "--scale-up-queue"),
        (["--window", "4000"], "--window"),
        (["--namespace", "Serving"], "--namespace"),
        (["--storage-uri", "bucket/path"], "--storage-uri"),
        (["--plain", "--storage-uri", "s3://bucket/path"], "--storage-uri"),
        (["--prometheus-url", "prometheus:9090"], "--prometheus-url"),
        (["--http-port", "8001"], "must differ"),
    ],
)
def test_bad_flags_fail_with_a_message_naming_the_flag(
    repository: Path, tmp_path: Path, arguments: list[str], message: str
) -> None:
    result = CliRunner().invoke(
        main, ["deploy", "k8s", str(repository), "--output", str(tmp_path / "o"), *arguments]
    )
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_output_inside_the_repository_is_refused(repository: Path) -> None:
    with pytest.raises(SpecError, match="inside the repository"):
        DeploySpec(repository=repository, platform="docker", output=repository / "deploy")


def test_a_repository_with_sidecars_is_not_deployed_yet(tmp_path: Path) -> None:
    repository = make_repository(tmp_path / "repos", with_steps=True)
    with pytest.raises(DeployError, match="not yet: .*sidecars"):
        _render(repository, tmp_path, "docker")


def test_only_a_folder_trb_deploy_wrote_is_replaced(repository: Path, tmp_path: Path) -> None:
    output = tmp_path / "mine"
    output.mkdir()
    (output / "keep.txt").write_text("mine")
    with pytest.raises(DeployError, match="was not written by `trb deploy`"):
        deploy(DeploySpec(repository=repository, platform="docker", output=output))
    assert (output / "keep.txt").read_text() == "mine"
    written = _render(repository, tmp_path, "docker")
    (written / "stale.txt").write_text("old")
    again = _render(repository, tmp_path, "docker", http_port=8100, grpc_port=8101, metrics_port=8102)
    assert (again / MARKER).is_file() and not (again / "stale.txt").exists()


def test_the_default_output_is_outside_the_repository(
    repository: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["deploy", "docker", str(repository)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "deploy" / "minilm" / "docker" / "compose.yaml").is_file()
    assert sorted(p.name for p in repository.iterdir()) == ["minilm", "trb.yaml"]


# --- the image ---------------------------------------------------------------------------------------


def _third_party_imports(folder: Path) -> set[str]:
    local = {path.stem for path in folder.rglob("*.py")}
    modules: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return {
        m for m in modules - local if m not in sys.stdlib_module_names and m != "triton_python_backend_utils"
    }


def test_the_dockerfile_installs_what_the_served_models_import() -> None:
    imported = _third_party_imports(ROOT / "model_repo_builder" / "templates") - {"model_repo_builder"}
    # tritonclient only calls PyTriton sidecars, which `trb deploy` refuses (they need `trb launch`).
    assert imported - {"tritonclient"} == {"numpy", "tokenizers", "onnxruntime"}
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    installed = dict(re.findall(r'"([a-z0-9-]+)==([0-9.]+)"', dockerfile))
    assert {"numpy", "tokenizers", "onnxruntime-gpu"} <= installed.keys()
    pinned = dict(re.findall(r'"([a-z0-9-]+)==([0-9.]+)"', (ROOT / "pyproject.toml").read_text()))
    assert installed["numpy"] == pinned["numpy"] and installed["tokenizers"] == pinned["tokenizers"]


def test_status_counts_waiting_and_in_flight_requests_per_model() -> None:
    from model_repo_builder.runtime.status import load_by_model

    recorded = (DATA / "triton_2.51_metrics.txt").read_text(encoding="utf-8")  # an idle encoder: all 0
    busy = "\n".join(
        [
            'nv_inference_pending_request_count{model="enc",version="1"} 2',
            'trb_queue_depth{instance="enc_0_0",model="enc"} 3',
            'trb_queue_depth{instance="enc_0_1",model="enc"} 4',
            'nv_inference_pending_request_count{model="t5",version="1"} 1',
            'trb_requests_in_flight{instance="t5_0_0",model="t5"} 7',
            'trb_requests_in_flight{instance="t5_0_1",model="t5"} 5',
        ]
    )
    pending, in_flight = load_by_model(recorded + "\n" + busy)
    # Waiting: Triton's pending count plus trb's queue gauge of every instance; in flight: the gauge.
    assert pending == {"all-minilm-l6-v2": 0, "enc": 9, "t5": 1}
    assert in_flight == {"t5": 12}
