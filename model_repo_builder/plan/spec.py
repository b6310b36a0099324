"""`SimulateSpec`: what `trb plan simulate` plays, through what, under which autoscaling rule.

The autoscaling fields mirror `DeploySpec`'s and resolve the same way (`deploy/autoscaling.py`): a
flag given wins, else the sweep run's plan, else trb's defaults — so a simulation of RUN_DIR predicts
the ScaledObject `trb deploy k8s --plan RUN_DIR` writes with the same flags.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from model_repo_builder.errors import SpecError
from model_repo_builder.spec import DeploySpec

# A new pod's time to ready when not given: scheduling, container start, tritonserver loading the
# model (1-7 s for trb's repositories in bench/results/startup.md) and the readiness probe's period.
DEFAULT_STARTUP_S = 30.0


def _require_int(flag: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"`{flag}` must be an integer ≥ {minimum}, got {value!r}")


def _require_seconds(flag: str, value: object, positive: bool = False) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or (positive and value == 0)
    ):
        raise SpecError(f"`{flag}` must be {'> 0' if positive else '≥ 0'} seconds, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class SimulateSpec:
    """A simulation of a measured service under a load and an autoscaling rule."""

    run: Path
    traces: tuple[str, ...] = ()
    trace_file: Path | None = None
    replicas: int | None = None  # a fixed count: no autoscaling
    min_replicas: int | None = None
    max_replicas: int | None = None
    scale_up_queue: float | None = None
    scale_down_queue: float | None = None
    window_s: int = 60
    polling_s: float = 15.0
    startup_s: float = DEFAULT_STARTUP_S
    cost_per_hour: float | None = None
    seed: int = 0
    config: str | None = None  # a configuration of the run other than its best
    output: Path | None = None  # None: a new folder under RUN_DIR/simulations
    plot: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "run", Path(self.run))
        object.__setattr__(self, "traces", tuple(self.traces))
        if bool(self.traces) == (self.trace_file is not None):
            raise SpecError("give the load as one or more `--trace` specs or as `--trace-file`, not both")
        if self.traces:
            from model_repo_builder.plan.trace import parse_trace  # numpy: not at `trb --help`

            parse_trace(self.traces)  # fails here, naming the flag, before anything is read
        if self.trace_file is not None:
            object.__setattr__(self, "trace_file", Path(self.trace_file))
        if self.output is not None:
            object.__setattr__(self, "output", Path(self.output))
        if self.replicas is not None:
            _require_int("--replicas", self.replicas, 1)
            given = [
                flag
                for flag, value in (
                    ("--min-replicas", self.min_replicas),
                    ("--max-replicas", self.max_replicas),
                    ("--scale-up-queue", self.scale_up_queue),
                    ("--scale-down-queue", self.scale_down_queue),
                )
                if value is not None
            ]
            if given:
                raise SpecError(
                    f"`--replicas` fixes the count; it takes no autoscaling flags ({', '.join(given)})"
                )
        # The autoscaling flags are checked exactly as `trb deploy k8s` checks them.
        DeploySpec(
            repository=Path("."),
            platform="k8s",
            min_replicas=self.min_replicas,
            max_replicas=self.max_replicas,
            scale_up_queue=self.scale_up_queue,
            scale_down_queue=self.scale_down_queue,
            window_s=self.window_s,
            wake_query="simulated" if self.min_replicas == 0 else None,
        )
        _require_seconds("--polling", self.polling_s, positive=True)
        _require_seconds("--startup", self.startup_s)
        if self.cost_per_hour is not None:
            _require_seconds("--cost-per-hour", self.cost_per_hour)
        _require_int("--seed", self.seed, 0)
