"""Many models behind one server: time to ready, memory per model, and the first model's latency.

The smallest model trb builds (a random-weight BERT classifier: hidden 64, 2 layers, MiniLM's real
tokenizer, int8, one instance, one intra-op thread) is built once; for each N, a repository of N
copies of its model directory under new names (`scale-0000` …, model files hard-linked, config.pbtxt
rendered again with the new name) is served by one tritonserver, every model loaded at start.

    ready       per model, seconds from starting tritonserver to "successfully loaded" in its log
                (Triton's own timestamps): p50 / p90 / max, and the whole server's time to ready
    memory      resident memory of the process tree (tritonserver plus one python-backend stub per
                model instance) once ready, in total and per model; the stubs' and the server's share;
                the same as PSS (shared libraries split among processes), and the drop in the
                machine's MemAvailable
    latency     200 sequential single-text requests to `scale-0000` once all N are ready: p50 / p99

Each python-backend instance is its own stub process (a Python interpreter with numpy, tokenizers
and ONNX Runtime loaded), so memory grows linearly with N. Before each N the script projects the
tree's memory from the per-model cost measured so far and stops when it would pass
`--memory-fraction` of the memory available (the machine is shared); the results say where it
stopped and project the ceiling for the whole machine.

Results: bench/results/scale.json and bench/results/scale.md; scratch under bench/work/scale/.

    python bench/bench_scale.py --counts 10,50,100,200      # about 10 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import built_repository, load_average, machine_info

from model_repo_builder.perf.metrics import process_tree_rss_bytes
from model_repo_builder.repository import config as model_config
from model_repo_builder.runtime.ports import free_ports
from model_repo_builder.runtime.server import TritonServer
from model_repo_builder.runtime.supervisor import stub_processes
from model_repo_builder.spec import BuildSpec, LaunchSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from classifier_fixtures import write_classifier  # noqa: E402

LOGGER = logging.getLogger("bench_scale")
ROOT = Path(__file__).resolve().parent
WORK = ROOT / "work" / "scale"
LOADED = re.compile(r"^I(\d{4}) (\d{2}:\d{2}:\d{2}\.\d{6}) .*successfully loaded '([^']+)'", re.MULTILINE)
TEXT = "A short sentence to classify."
REQUESTS = 200


def copies(source: Path, name: str, count: int, target: Path) -> Path:
    """A repository at `target` holding `count` copies of model `name` from `source`, renamed."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    config = model_config.as_dict(model_config.parse((source / name / "config.pbtxt").read_text("utf-8")))
    for index in range(count):
        copy = f"scale-{index:04d}"
        shutil.copytree(
            source / name, target / copy, copy_function=os.link, ignore=shutil.ignore_patterns("config.pbtxt")
        )
        rendered = model_config.render({**config, "name": copy})
        (target / copy / "config.pbtxt").write_text(rendered, encoding="utf-8")
    return target  # no trb.yaml: the copies are not what `trb build` wrote


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0


def _pss(pid: int) -> int:
    """Proportional set size: shared pages (libraries) split among the processes that map them."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="utf-8") as rollup:
            return next(int(line.split()[1]) * 1024 for line in rollup if line.startswith("Pss:"))
    except (OSError, StopIteration):
        return 0


def _available_bytes() -> int:
    with open("/proc/meminfo", encoding="utf-8") as meminfo:
        return next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:"))


def measure(repository: Path, count: int) -> dict[str, Any]:
    """Serve the N copies, and measure readiness, memory and the first model's latency."""
    import tritonclient.grpc as grpcclient

    http, grpc, metrics = free_ports(3)
    spec = LaunchSpec(
        repositories=(repository,),
        http_port=http,
        grpc_port=grpc,
        metrics_port=metrics,
        startup_timeout_s=3600,
    )
    server = TritonServer(spec)
    available_before = _available_bytes()
    started_wall = datetime.datetime.now()
    started = time.monotonic()
    with server:
        ready_s = time.monotonic() - started
        year = started_wall.year
        loaded = {}
        for month_day, clock, model in LOADED.findall(server.logs()):
            stamp = datetime.datetime.strptime(f"{year}{month_day} {clock}", "%Y%m%d %H:%M:%S.%f")
            loaded[model] = (stamp - started_wall).total_seconds()
        pid = server.pid or 0
        total = process_tree_rss_bytes(pid)
        stubs = stub_processes(pid)
        stub_rss = [_rss(stub) for stub in stubs.values()]
        stub_pss = [_pss(stub) for stub in stubs.values()]
        tree_pss = sum(stub_pss) + _pss(pid)
        available_drop = available_before - _available_bytes()
        client = grpcclient.InferenceServerClient(server.grpc_url)
        text = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
        text.set_data_from_numpy(np.array([[TEXT.encode()]], dtype=np.object_))
        for _ in range(20):
            client.infer("scale-0000", [text])
        latencies = []
        for _ in range(REQUESTS):
            sent = time.perf_counter()
            client.infer("scale-0000", [text])
            latencies.append((time.perf_counter() - sent) * 1000)
        client.close()
        server_rss = _rss(pid)
    times = sorted(loaded.values())
    return {
        "models": count,
        "loaded_in_log": len(loaded),
        "stubs": len(stubs),
        "server_ready_s": round(ready_s, 2),
        "model_ready_s": {
            "p50": round(float(np.percentile(times, 50)), 2),
            "p90": round(float(np.percentile(times, 90)), 2),
            "max": round(times[-1], 2),
        },
        "memory_mib": {
            "tree": round(total / 2**20, 1),
            "per_model": round(total / count / 2**20, 1),
            "server_process": round(server_rss / 2**20, 1),
            "stub_mean": round(float(np.mean(stub_rss)) / 2**20, 1),
            "tree_pss": round(tree_pss / 2**20, 1),
            "per_model_pss": round(tree_pss / count / 2**20, 1),
            "available_drop": round(available_drop / 2**20, 1),
        },
        "first_model_latency_ms": {
            "p50": round(float(np.percentile(latencies, 50)), 2),
            "p99": round(float(np.percentile(latencies, 99)), 2),
        },
        "load_average": load_average(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="10,50,100,200", help="model counts to serve, in order")
    parser.add_argument(
        "--memory-fraction",
        type=float,
        default=0.5,
        help="stop before a count whose projected memory passes this share of the available memory",
    )
    parser.add_argument("--reuse", action="store_true", help="reuse an earlier build")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    source = WORK / "bert-tiny"
    if not (source / "model.safetensors").is_file():
        write_classifier(source, num_labels=2)
    spec = BuildSpec(
        source=str(source),
        name="bert-tiny",
        output=WORK / "built",
        precision="int8",
        max_batch_size=8,
        threads_per_instance=1,
    )
    built = built_repository(spec, arguments.reuse)
    onnx_mib = sum(p.stat().st_size for p in (built / "bert-tiny").rglob("*") if p.is_file()) / 2**20
    runs: list[dict[str, Any]] = []
    stopped = None
    for count in (int(c) for c in arguments.counts.split(",")):
        if runs:
            per_model = runs[-1]["memory_mib"]["per_model_pss"] * 2**20
            projected = per_model * count
            available = _available_bytes()
            share = arguments.memory_fraction
            if projected > available * share:
                stopped = (
                    f"stopped before N = {count}: projected {projected / 2**30:.1f} GiB "
                    f"(at {per_model / 2**20:.0f} MiB per model) is more than {share:.0%} "
                    f"of the {available / 2**30:.1f} GiB available on this shared machine"
                )
                LOGGER.warning(stopped)
                break
        LOGGER.info("serving %d models", count)
        repository = copies(built, "bert-tiny", count, WORK / f"repo-{count}")
        runs.append(measure(repository, count))
        LOGGER.info("%s", json.dumps(runs[-1]))
        shutil.rmtree(repository, ignore_errors=True)
    results = {
        "machine": machine_info(),
        "model": {
            "what": "random BERT classifier, hidden 64, 2 layers, int8, 1 instance, 1 thread",
            "files_mib": round(onnx_mib, 1),
        },
        "runs": runs,
        "stopped": stopped,
    }
    (ROOT / "results").mkdir(exist_ok=True)
    (ROOT / "results" / "scale.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (ROOT / "results" / "scale.md").write_text(_markdown(results), encoding="utf-8")
    print(_markdown(results))


def _markdown(results: dict[str, Any]) -> str:
    machine = results["machine"]
    lines = [
        "# Many models behind one server",
        "",
        f"{machine['date']}, {machine['cores']} cores ({machine['cpu']}), {machine['memory_gib']} GiB. "
        f"`python bench/bench_scale.py`; each model: {results['model']['what']} "
        f"({results['model']['files_mib']} MiB of files, hard-linked between copies).",
        "",
        "| N | server ready s | model ready p50 / p90 / max s | tree RSS MiB | RSS per model | stub RSS "
        "| server RSS | tree PSS MiB | PSS per model | MemAvailable drop MiB | scale-0000 p50 / p99 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in results["runs"]:
        ready, memory, latency = run["model_ready_s"], run["memory_mib"], run["first_model_latency_ms"]
        lines.append(
            f"| {run['models']} | {run['server_ready_s']} | {ready['p50']} / {ready['p90']} / {ready['max']} "
            f"| {memory['tree']} | {memory['per_model']} | {memory['stub_mean']} "
            f"| {memory['server_process']} | {memory['tree_pss']} | {memory['per_model_pss']} "
            f"| {memory['available_drop']} "
            f"| {latency['p50']} / {latency['p99']} |"
        )
    if results["stopped"]:
        lines += ["", results["stopped"] + "."]
    runs = results["runs"]
    if runs:
        per_model = runs[-1]["memory_mib"]["per_model_pss"]
        ceiling = int(machine["memory_gib"] * 1024 * 0.9 / per_model)
        lines += [
            "",
            "RSS counts the shared libraries (ONNX Runtime, libpython, numpy) once per stub; PSS splits them "
            "among the processes, so PSS per model is what one more model costs.",
            f"At {per_model} MiB (PSS) per model the machine's {machine['memory_gib']} GiB hold about "
            f"{ceiling} such models (90% of memory, nothing else running); each is one python-backend stub "
            "process.",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
