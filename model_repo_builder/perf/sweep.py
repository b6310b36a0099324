"""`trb sweep`: measure a served repository with perf_analyzer, search configs, plan capacity.

The flow: serve the repository (or use `--url`), measure latency/throughput curves with the real
perf_analyzer, optionally search scheduling settings, analyse (knee, capacity at the SLO, replicas,
cost), run load profiles on the best setting, and write results.json, levels.csv, PNGs and
report.html into the run folder. Whatever was measured before a failure is written all the same.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_repo_builder import __version__
from model_repo_builder.client import infer
from model_repo_builder.errors import InferenceError, SpecError, TrbError
from model_repo_builder.perf import analysis, metrics
from model_repo_builder.perf.cache import cache_counts, cache_enabled
from model_repo_builder.perf.perf_analyzer import (
    EmptyWindowError,
    PerfResult,
    PerfRun,
    UnstableMeasurementError,
    run_perf_analyzer,
    write_text_input_data,
)
from model_repo_builder.perf.report import write_report
from model_repo_builder.repository import config as model_config
from model_repo_builder.repository.manifest import MANIFEST_NAME, read_manifest
from model_repo_builder.repository.variants import Scheduling, make_variant
from model_repo_builder.runtime.ports import free_ports
from model_repo_builder.runtime.server import TritonServer
from model_repo_builder.spec import LaunchSpec, SweepSpec
from model_repo_builder.tasks import Task, get_task, task_for_inputs
from model_repo_builder.templates.seq2seq.generation import (
    MAX_NEW_TOKENS_INPUT,
    TOKEN_IDS_OUTPUT,
    TOKEN_PADDING,
)

LOGGER = logging.getLogger(__name__)

Progress = Callable[[str, float], None]
DEFAULT_PROMPTS = (
    "A man is eating food while reading the morning newspaper at the kitchen table.",
    "How many replicas does the service need to handle five hundred queries per second?",
    "The quarterly report shows revenue growth in every region except the northern one.",
    "Please summarize the main findings of the attached clinical study in two sentences.",
    "Triton groups concurrent requests into batches so the accelerator stays busy.",
    "The train to Berlin was delayed by forty minutes because of a signal failure.",
    "Which of these three laptops has the longest battery life under heavy load?",
    "Our support team answers most customer questions within one business day.",
)


class SweepError(TrbError):
    """The sweep ran but its result needs the user's attention (e.g. no config meets the SLO)."""

    exit_code = 3


@dataclass(frozen=True, kw_only=True)
class SweepOutcome:
    """Where the run folder is and what it holds."""

    folder: Path
    results: dict[str, Any]


class Budget:
    """Wall-clock budget for a whole sweep; None means unbounded."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self.started = time.monotonic()

    def spent(self) -> float:
        """Seconds used so far."""
        return time.monotonic() - self.started

    def exhausted(self) -> bool:
        """Whether no time is left."""
        return self.seconds is not None and self.spent() >= self.seconds


@dataclass(frozen=True, kw_only=True)
class Target:
    """A served model perf_analyzer can reach."""

    model: str
    url: str
    text_inputs: tuple[str, ...]  # required TYPE_STRING inputs, each filled from the prompts
    metrics_url: str | None
    server: TritonServer | None
    task: Task | None = None  # None: a server model whose inputs match no task trb builds
    response_cache: bool = False  # built with --response-cache: levels count the cache's hits and misses

    @classmethod
    def of(cls, model: str, url: str, inputs: ModelInputs, server: TritonServer | None = None) -> Target:
        """`model` at `url` with the inputs read from its config; a local `server` also gives metrics."""
        return cls(
            model=model,
            url=url,
            text_inputs=inputs.text_inputs,
            metrics_url=server.metrics_url if server is not None else None,
            server=server,
            task=inputs.task,
            response_cache=inputs.response_cache,
        )

    @property
    def input_name(self) -> str | None:
        """The first text input (what one-input tools such as the stress profile send)."""
        return self.text_inputs[0] if self.text_inputs else None

    @property
    def generates(self) -> bool:
        """A text-generation model: it takes MAX_NEW_TOKENS and returns TOKEN_IDS."""
        return self.task is not None and self.task.generates


def load_prompts(path: Path | None) -> list[str]:
    """Prompts from a file (one per line) or the built-in set; an empty file is an error."""
    if path is None:
        return list(DEFAULT_PROMPTS)
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(f"`--prompts` {path} cannot be read as UTF-8 text: {error}") from None
    prompts = [line for line in lines if line]
    if not prompts:
        raise SpecError(f"`--prompts` {path} holds no non-empty line")
    return prompts


_PROBE_PROMPTS = 16


def _text_inputs(inputs: list[tuple[str, str, bool]]) -> tuple[tuple[str, ...], Task | None]:
    """From (name, data type, optional) triples: the required TYPE_STRING inputs and the task they match."""
    names = tuple(name for name, data_type, optional in inputs if data_type == "TYPE_STRING" and not optional)
    return names, task_for_inputs(names)


@dataclass(frozen=True, kw_only=True)
class ModelInputs:
    """What a sweep needs to know of one served model's config."""

    text_inputs: tuple[str, ...]
    task: Task | None
    response_cache: bool


def local_inputs(repository: Path, model: str) -> ModelInputs:
    """The text inputs, task and response cache of `model` in a repository on disk.

    The task is the manifest's for the repository's main model, else the one its inputs match.
    """
    config = model_config.parse((repository / model / "config.pbtxt").read_text(encoding="utf-8"))
    data_type = model_config.model_config_pb2.DataType.Name
    names, task = _text_inputs([(i.name, data_type(i.data_type), i.optional) for i in config.input])
    if (repository / MANIFEST_NAME).is_file():
        manifest = read_manifest(repository)
        if manifest.name == model:
            task = get_task(manifest.task)
    return ModelInputs(text_inputs=names, task=task, response_cache=config.response_cache.enable)


@contextlib.contextmanager
def serve(spec: SweepSpec, repository: Path | None) -> Iterator[Target]:
    """Launch `repository` on free loopback ports, or point at `spec.url`."""
    if repository is None:
        assert spec.url is not None and spec.model is not None  # guaranteed by SweepSpec validation
        yield Target.of(spec.model, spec.url, remote_inputs(spec.url, spec.protocol, spec.model))
        return
    model = read_manifest(repository).name
    http_port, grpc_port, metrics_port = free_ports(3)
    launch = LaunchSpec(
        repositories=(repository,), http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port
    )
    local = local_inputs(repository, model)
    with TritonServer(launch) as server:
        url = server.grpc_url if spec.protocol == "grpc" else server.http_url
        yield Target.of(model, url, local, server)


def remote_inputs(url: str, protocol: str, model: str) -> ModelInputs:
    """The text inputs, task and response cache of `model` on the running server at `url`.

    Raises:
        InferenceError: If the server does not answer with the model's config (e.g. no such model).
    """
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    try:
        if protocol == "grpc":
            client = grpcclient.InferenceServerClient(url)
            config = client.get_model_config(model, as_json=True)["config"]
        else:
            client = httpclient.InferenceServerClient(url)
            config = client.get_model_config(model)
        client.close()
    except InferenceServerException as error:
        raise InferenceError(f"cannot read the config of {model} at {url}: {error.message()}") from None
    inputs = config.get("input", [])
    names, task = _text_inputs([(i["name"], i.get("data_type", ""), bool(i.get("optional"))) for i in inputs])
    return ModelInputs(text_inputs=names, task=task, response_cache=cache_enabled(config))


def _level(result: PerfResult, mode: str) -> dict[str, Any]:
    latencies = result.latencies_us
    return {
        "mode": mode,
        **dataclasses.asdict(result.measurement),
        "reported": dataclasses.asdict(result.reported),
        "breakdown": dataclasses.asdict(result.breakdown),
        "requests": len(latencies),
        "latencies_ms": [round(value / 1000, 3) for value in latencies],
    }


def generation_inputs(max_new_tokens: int | None) -> dict[str, int]:
    """The integer inputs every request to a text-generation model carries (none: its defaults)."""
    return {} if max_new_tokens is None else {MAX_NEW_TOKENS_INPUT: max_new_tokens}


def probe_generation(
    target: Target, prompts: list[str], protocol: str, max_new_tokens: int | None
) -> dict[str, Any]:
    """Tokens a text-generation model generates per request, mean over the first 16 prompts.

    One request per prompt, so any max batch size takes it.
    """
    assert target.input_name is not None  # text-generation models have a text input (their task)
    inputs = generation_inputs(max_new_tokens)
    counts = []
    for prompt in prompts[:_PROBE_PROMPTS]:
        texts = {target.input_name: [prompt]}
        answer = infer(target.model, texts, [TOKEN_IDS_OUTPUT], target.url, protocol, inputs)
        counts.append(int((answer[TOKEN_IDS_OUTPUT] != TOKEN_PADDING).sum()))
    LOGGER.info("%s: %.1f generated tokens per request", target.model, sum(counts) / len(counts))
    return {
        "max_new_tokens": max_new_tokens,
        "tokens_per_request": sum(counts) / len(counts),
        "prompts": len(counts),
    }


class Sweeper:
    """Runs every measurement of one sweep and keeps what it measured."""

    def __init__(self, spec: SweepSpec, folder: Path, progress: Progress | None = None):
        self.spec = spec
        self.folder = folder
        self.progress = progress or (lambda message, fraction: None)
        self.budget = Budget(spec.budget_s)
        self.slo = analysis.parse_slo(spec.slo) if spec.slo else None
        self.prompts = load_prompts(spec.prompts)
        self.measurements = 0
        self.generation: dict[str, Any] | None = None  # tokens per request, once probed

    def _input_file(self, target: Target) -> Path | None:
        """perf_analyzer input data for the target's text input, written once per input name."""
        if self.spec.max_new_tokens is not None and not target.generates:
            raise SpecError(
                f"`--max-new-tokens` applies to text-generation models; {target.model} has no "
                f"{MAX_NEW_TOKENS_INPUT} input"
            )
        if not target.text_inputs:
            return None
        path = self.folder / "raw" / f"input_data_{'_'.join(target.text_inputs)}.json"
        if not path.is_file():
            write_text_input_data(path, target.text_inputs, self.prompts, self._generation_inputs())
        return path

    def _generation_inputs(self) -> dict[str, int]:
        return generation_inputs(self.spec.max_new_tokens)

    def probe_generation(self, target: Target) -> None:
        """For a text-generation model, count the tokens it generates per request (first 16 prompts).

        Requests/s times that mean is the sweep's tokens/s; measured once, on the first configuration.
        """
        if not target.generates or target.input_name is None or self.generation is not None:
            return
        self.generation = probe_generation(target, self.prompts, self.spec.protocol, self.spec.max_new_tokens)

    def measure(
        self,
        target: Target,
        mode: str,
        load: float,
        label: str,
        interval_ms: int | None = None,
        stability: float = 15.0,
        trials: int = 6,
    ) -> dict[str, Any]:
        """One perf_analyzer level.

        When the windows never agree within `stability` (a noisy, shared machine), the level is
        measured once more over exactly three windows and kept, marked `"stable": False`.
        """
        workdir = self.folder / "raw" / f"{label}-{mode}-{load:g}"
        settings = {"concurrency": int(load)} if mode == "concurrency" else {"request_rate": load}
        run = PerfRun(
            model=target.model,
            url=target.url,
            protocol=self.spec.protocol,
            input_data=self._input_file(target),
            measurement_interval_ms=interval_ms or self.spec.measurement_interval_ms,
            stability_percentage=stability,
            max_trials=trials,
            **settings,
        )  # type: ignore[arg-type]
        self.measurements += 1
        stable = True
        before = cache_counts(target.url, self.spec.protocol, target.model) if target.response_cache else None
        admitted = metrics.admission_times(target.metrics_url, target.model) if target.metrics_url else None
        try:
            try:
                result = run_perf_analyzer(run, workdir)
            except EmptyWindowError:
                LOGGER.warning(
                    "%s %s %g: no request finished inside a window; retrying with 4x longer windows",
                    label,
                    mode,
                    load,
                )
                run = dataclasses.replace(run, measurement_interval_ms=run.measurement_interval_ms * 4)
                result = run_perf_analyzer(run, workdir)
        except UnstableMeasurementError:
            LOGGER.warning(
                "%s %s %g: no 3 windows agreed within %g%%; keeping 3 more windows as they are",
                label,
                mode,
                load,
                stability,
            )
            stable = False
            result = run_perf_analyzer(
                dataclasses.replace(run, stability_percentage=1e6, max_trials=3), workdir
            )
        level = {**_level(result, mode), "stable": stable}
        if admitted is not None and target.metrics_url:
            # trb's own queue: Triton saw a request that went through it only while execute() admitted it.
            now = metrics.admission_times(target.metrics_url, target.model)
            if now is not None:
                level["breakdown"] = now.since(admitted).added_to(level["breakdown"])
                level["breakdown_includes"] = "trb admission queue and worker"
        if before is not None:
            counted = cache_counts(target.url, self.spec.protocol, target.model).since(before)
            level["cache_hits"], level["cache_misses"] = counted.hits, counted.misses
        return level

    def curve(self, target: Target, mode: str, loads: tuple[float, ...], label: str) -> list[dict[str, Any]]:
        """Measure increasing loads; stop past the SLO, past saturation, or when the budget is spent."""
        levels: list[dict[str, Any]] = []
        best_throughput, declines = 0.0, 0
        for index, load in enumerate(sorted(loads)):
            if self.budget.exhausted():
                LOGGER.warning("budget spent: %s stops before %s %g", label, mode, load)
                break
            self.progress(f"{label}: {mode} {load:g} ({index + 1}/{len(loads)})", self.fraction())
            try:
                level = self.measure(target, mode, load, label)
            except InferenceError as error:
                levels.append(
                    {
                        "mode": mode,
                        "load": float(load),
                        "error": str(error),
                        "throughput_rps": 0.0,
                        "p50_ms": None,
                        "p90_ms": None,
                        "p95_ms": None,
                        "p99_ms": None,
                        "avg_ms": None,
                        "errors": 1,
                    }
                )
                LOGGER.warning("%s", error)
                break
            if target.server is not None and target.server.pid:
                # The server's memory right after the level: `trb deploy k8s --plan` sizes pods from its peak.
                level["server_rss_bytes"] = metrics.process_tree_rss_bytes(target.server.pid)
            levels.append(level)
            if self.slo and level[self.slo.metric] > self.slo.latency_ms * 1.5:
                break
            declines = declines + 1 if level["throughput_rps"] < 0.95 * best_throughput else 0
            best_throughput = max(best_throughput, level["throughput_rps"])
            if declines >= 2:
                break
        return levels

    def fraction(self) -> float:
        """Share of the budget spent (0 without a budget), for progress display."""
        if self.spec.budget_s:
            return min(1.0, self.budget.spent() / self.spec.budget_s)
        return 0.0

    def analyse(self, name: str, settings: dict[str, Any], levels: list[dict[str, Any]]) -> dict[str, Any]:
        """Knee and SLO capacity of one configuration's concurrency curve."""
        points = [
            analysis.Measurement(**{k: level[k] for k in _MEASUREMENT_FIELDS})
            for level in levels
            if level["mode"] == "concurrency" and "error" not in level
        ]
        entry: dict[str, Any] = {
            "name": name,
            "settings": settings,
            "levels": levels,
            "knee": None,
            "capacity": {
                "met": False,
                "reason": "no level was measured successfully",
                "throughput_rps": 0.0,
                "load": None,
            },
        }
        if points:
            knee = analysis.find_knee(points)
            entry["knee"] = {
                "found": knee.found,
                "reason": knee.reason,
                "load": knee.point.load,
                "throughput_rps": knee.point.throughput_rps,
                "p99_ms": knee.point.p99_ms,
            }
            if self.slo:
                capacity = analysis.capacity_at_slo(points, self.slo)
                entry["capacity"] = {
                    "met": capacity.met,
                    "reason": capacity.reason,
                    "throughput_rps": capacity.throughput_rps,
                    "load": capacity.point.load if capacity.point else None,
                }
            else:
                entry["capacity"] = {
                    "met": True,
                    "reason": "no SLO: capacity is the knee",
                    "throughput_rps": knee.point.throughput_rps,
                    "load": knee.point.load,
                }
        return entry

    def measure_config(self, repository: Path | None, scheduling: Scheduling | None) -> dict[str, Any]:
        """Serve one configuration and measure its concurrency (and request-rate) curves."""
        name = scheduling.name if scheduling else "as-built"
        served = repository
        if repository is not None and scheduling is not None:
            served = make_variant(repository, self.folder / "variants" / name, scheduling)
        with serve(self.spec, served) as target:
            self.probe_generation(target)
            before = metrics.scrape(target.metrics_url) if target.metrics_url else {}
            levels = self.curve(target, "concurrency", tuple(map(float, self.spec.concurrency)), name)
            if self.spec.request_rates:
                levels += self.curve(target, "request_rate", self.spec.request_rates, name)
            after = metrics.scrape(target.metrics_url) if target.metrics_url else {}
        entry = self.analyse(name, dataclasses.asdict(scheduling) if scheduling else {}, levels)
        entry["server_metrics"] = {
            key: after[key] - before.get(key, 0.0) if key in metrics.COUNTERS else after[key] for key in after
        }
        return entry


# Two passes of coordinate descent: the second revisits each setting once the others have moved.
_SEARCH_PASSES = 2
_MEASUREMENT_FIELDS = ("load", "throughput_rps", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "avg_ms")


def _score(entry: dict[str, Any]) -> float:
    capacity = entry.get("capacity") or {}
    return float(capacity.get("throughput_rps") or 0.0) if capacity.get("met") else 0.0


def search(sweeper: Sweeper, repository: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Find the best scheduling under the SLO: coordinate descent over the grid, or the full grid.

    Coordinate descent changes one setting at a time from the current best and keeps a change only
    if capacity improves, until a pass changes nothing or after `_SEARCH_PASSES` passes; on smooth
    spaces it reaches the grid's best with a fraction of the configurations.
    """
    spec = sweeper.spec
    axes = {
        "instances": spec.search_instances,
        "max_batch_size": spec.search_max_batch_sizes,
        "max_queue_delay_us": spec.search_queue_delays_us,
    }
    grid_size = (
        len(spec.search_instances) * len(spec.search_max_batch_sizes) * len(spec.search_queue_delays_us)
    )
    measured: dict[Scheduling, dict[str, Any]] = {}

    def evaluate(candidate: Scheduling) -> dict[str, Any]:
        if candidate not in measured:
            measured[candidate] = sweeper.measure_config(repository, candidate)
        return measured[candidate]

    if spec.search_strategy == "grid":
        for instances in axes["instances"]:
            for batch in axes["max_batch_size"]:
                for delay in axes["max_queue_delay_us"]:
                    if not sweeper.budget.exhausted():
                        evaluate(
                            Scheduling(instances=instances, max_batch_size=batch, max_queue_delay_us=delay)
                        )
    else:
        current = Scheduling(
            instances=axes["instances"][0],
            max_batch_size=axes["max_batch_size"][-1],
            max_queue_delay_us=axes["max_queue_delay_us"][0],
        )
        best = _score(evaluate(current))
        improved, passes = True, 0
        while improved and passes < _SEARCH_PASSES and not sweeper.budget.exhausted():
            improved, passes = False, passes + 1
            for axis, values in axes.items():
                for value in values:
                    candidate = dataclasses.replace(current, **{axis: value})
                    if candidate in measured or sweeper.budget.exhausted():
                        continue
                    score = _score(evaluate(candidate))
                    if score > best:
                        best, current, improved = score, candidate, True
    configs = list(measured.values())
    summary = {
        "strategy": spec.search_strategy,
        "configurations_measured": len(configs),
        "grid_size": grid_size,
        "perf_analyzer_runs": sweeper.measurements,
    }
    return configs, summary


def _plan(sweeper: Sweeper, results: dict[str, Any], best: dict[str, Any]) -> None:
    spec = sweeper.spec
    capacity = best.get("capacity") or {}
    throughput = float(capacity.get("throughput_rps") or 0.0)
    if not capacity.get("met") or throughput <= 0:
        results["summary"] = (
            f"No configuration met {sweeper.slo.describe() if sweeper.slo else 'the objective'}: "
            f"{capacity.get('reason', 'nothing was measured')}."
        )
        return
    plan = analysis.replicas_needed(spec.target_qps, throughput, spec.headroom) if spec.target_qps else None
    cost = (
        analysis.cost_per_million(spec.cost_per_hour, throughput) if spec.cost_per_hour is not None else None
    )
    if plan:
        results["plan"] = dataclasses.asdict(plan)
    if cost is not None:
        results["cost_per_million_usd"] = cost
    if sweeper.slo:
        point = analysis.Measurement(
            load=capacity["load"], throughput_rps=throughput, p50_ms=0, p90_ms=0, p95_ms=0, p99_ms=0, avg_ms=0
        )
        result = analysis.CapacityResult(slo=sweeper.slo, met=True, point=point, reason=capacity["reason"])
        results["summary"] = analysis.summary_sentence(result, plan, cost)
    else:
        results["summary"] = (
            f"One replica ({best['name']}) reaches its knee at {throughput:.0f} req/s"
            + (f"; {plan.target_qps:g} req/s needs {plan.replicas} replicas" if plan else "")
            + (f", costing ${cost:.2f} per million inferences" if cost is not None else "")
            + "."
        )


def _add_tokens_per_s(results: dict[str, Any], generation: dict[str, Any]) -> None:
    """Give every level of a text-generation sweep its tokens/s: requests/s × tokens per request."""
    results["generation"] = generation
    for config in results["configs"]:
        for level in config["levels"]:
            level["tokens_per_s"] = level["throughput_rps"] * generation["tokens_per_request"]


def _tokens_sentence(best: dict[str, Any], generation: dict[str, Any]) -> str:
    capacity = best.get("capacity") or {}
    requests = float(capacity.get("throughput_rps") or 0.0)
    per_request = generation["tokens_per_request"]
    tokens = requests * per_request
    return f" At {per_request:.1f} generated tokens per request that is {tokens:.0f} tokens/s."


def _histogram(best: dict[str, Any]) -> dict[str, Any] | None:
    levels = [level for level in best["levels"] if level.get("latencies_ms")]
    if not levels:
        return None
    load = (best.get("capacity") or {}).get("load")
    chosen = next((level for level in levels if level["load"] == load), levels[-1])
    return {"config": best["name"], "load": chosen["load"], "latencies_ms": chosen["latencies_ms"]}


def _profiles(sweeper: Sweeper, repository: Path | None, best: dict[str, Any]) -> list[dict[str, Any]]:
    from model_repo_builder.perf import profiles

    spec = sweeper.spec
    users = max(spec.concurrency)
    knee_load = int((best.get("knee") or {}).get("load") or max(1, users // 2))
    served = repository
    if repository is not None and best["settings"]:
        served = sweeper.folder / "variants" / best["name"]
    done = []
    with serve(spec, served) as target:
        for kind in spec.profiles:
            if sweeper.budget.exhausted():
                break
            sweeper.progress(f"profile {kind}", sweeper.fraction())
            if kind == "ramp":
                done.append(profiles.ramp(sweeper, target, users, spec.profile_duration_s))
            elif kind == "interval":
                done.append(
                    profiles.fixed_interval(
                        sweeper, target, max(0.2, spec.profile_duration_s / 20), spec.profile_duration_s
                    )
                )
            elif kind == "soak":
                done.append(profiles.soak(sweeper, target, knee_load, spec.profile_duration_s))
            else:
                queue = _queue_size(served, target.model)
                done.append(
                    profiles.stress(
                        sweeper, target, max(4 * users, queue + 4 * users), min(spec.profile_duration_s, 20.0)
                    )
                )
    return done


def _queue_size(repository: Path | None, model: str) -> int:
    if repository is None:
        return 0
    config = model_config.parse((repository / model / "config.pbtxt").read_text(encoding="utf-8"))
    if "max_queue_size" in config.parameters:  # trb's own admission bound (the encoder templates)
        return int(config.parameters["max_queue_size"].string_value or 0)
    return int(config.dynamic_batching.default_queue_policy.max_queue_size)


def run_sweep(spec: SweepSpec, progress: Progress | None = None) -> SweepOutcome:
    """Measure, analyse and report; results measured before a failure are written all the same."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    model = read_manifest(spec.repository).name if spec.repository else str(spec.model)
    folder = spec.output or Path("runs") / f"{stamp}-{model}"
    folder.mkdir(parents=True, exist_ok=True)
    sweeper = Sweeper(spec, folder, progress)
    results: dict[str, Any] = {
        "trb_version": __version__,
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": model,
        "target": {
            "repository": str(spec.repository) if spec.repository else None,
            "url": spec.url,
            "protocol": spec.protocol,
        },
        "slo": dataclasses.asdict(sweeper.slo) if sweeper.slo else None,
        "options": {
            key: str(value) if isinstance(value, Path) else value
            for key, value in dataclasses.asdict(spec).items()
        },
        "configs": [],
        "profiles": [],
        "errors": [],
    }
    try:
        if spec.search:
            assert spec.repository is not None  # SweepSpec requires a repository for --search
            results["configs"], results["search"] = search(sweeper, spec.repository)
        else:
            results["configs"] = [sweeper.measure_config(spec.repository, None)]
        best = max(results["configs"], key=_score) if results["configs"] else None
        if sweeper.generation is not None:
            _add_tokens_per_s(results, sweeper.generation)
        if best is not None:
            results["best_config"] = best["name"]
            results["histogram"] = _histogram(best)
            _plan(sweeper, results, best)
            if sweeper.generation is not None:
                results["summary"] += _tokens_sentence(best, sweeper.generation)
            if spec.profiles:
                results["profiles"] = _profiles(sweeper, spec.repository, best)
    except TrbError as error:
        results["errors"].append(str(error))
        raise
    finally:
        results["measurements"] = sweeper.measurements
        results["elapsed_s"] = round(sweeper.budget.spent(), 1)
        results.setdefault("summary", "The sweep stopped before any result: " + "; ".join(results["errors"]))
        write_report(results, folder)
    best_config = next((c for c in results["configs"] if c["name"] == results.get("best_config")), None)
    if sweeper.slo and (best_config is None or not (best_config.get("capacity") or {}).get("met")):
        raise SweepError(f"{results['summary']} Results are in {folder}.")
    return SweepOutcome(folder=folder, results=results)
