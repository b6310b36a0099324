"""Load traces for `trb plan simulate`: `--trace KIND:key=value,...` specs and recorded request logs.

A trace is a sequence of segments played one after another. Open-loop segments send requests on a
schedule whatever the server does (a rate, a ramp of rates, bursts at fixed intervals — the Wallaroo
profiles of the shared seed 001 are `interval:every=15s,duration=40m`); closed-loop `users`
segments keep a number of users each sending its next request when the previous one is answered
(the shared seed 000's flan-t5 test is users: ramp to 20, hold, ramp down). A recorded log is one
timestamp per line and replaces the segments.

Grammar (durations take `ms`, `s`, `m` or `h`; plain numbers are seconds; rates are requests/s):

    constant:rate=50,duration=60[,arrivals=even|poisson]
    ramp:from=0,to=100,duration=2m[,arrivals=even|poisson]
    interval:every=15s,duration=40m[,requests=1]
    users:count=20,duration=5m[,think=0]          or   users:from=0,to=20,duration=3m[,think=1s]

`arrivals=even` (the default) spaces requests exactly as perf_analyzer's constant request
distribution does; `poisson` draws exponential gaps from the simulation's seed. A ramp's arrivals
follow the integral of its linearly changing rate, so a ramp from 0 to 100 over 60 s sends 3000.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_repo_builder.errors import SpecError

TRACE_KINDS = ("constant", "ramp", "interval", "users")
ARRIVAL_KINDS = ("even", "poisson")
# More requests than this would take the simulation minutes; such a trace is most likely a typo.
MAX_REQUESTS = 5_000_000
_KEYS = {
    "constant": ({"rate", "duration"}, {"arrivals"}),
    "ramp": ({"from", "to", "duration"}, {"arrivals"}),
    "interval": ({"every", "duration"}, {"requests"}),
    "users": ({"duration"}, {"count", "from", "to", "think"}),
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True, kw_only=True)
class OpenSegment:
    """Requests sent on a schedule: a rate changing linearly from `rate_from` to `rate_to`, or bursts.

    With `every_s`, `burst` requests leave together at the start of every interval instead.
    """

    duration_s: float
    rate_from: float = 0.0
    rate_to: float = 0.0
    every_s: float | None = None
    burst: int = 1
    poisson: bool = False

    @property
    def expected_requests(self) -> float:
        """How many requests the segment sends (on average, for Poisson arrivals)."""
        if self.every_s is not None:
            return math.ceil(self.duration_s / self.every_s) * self.burst
        return self.duration_s * (self.rate_from + self.rate_to) / 2

    def arrivals(self, rng: np.random.Generator) -> np.ndarray:
        """Send times in seconds from the segment's start, ascending."""
        if self.every_s is not None:
            starts = np.arange(0.0, self.duration_s, self.every_s)
            return np.repeat(starts, self.burst)
        total = self.expected_requests
        if self.poisson:
            draws = rng.exponential(1.0, size=int(total + 10 * math.sqrt(total) + 10))
            units = np.cumsum(draws) - draws[0]  # the first request leaves at the start, as with even
            units = units[units < total]
        else:
            units = np.arange(0.0, total)
        # Invert the cumulative rate Λ(t) = a t² + b t (a = slope / 2, b = rate_from) at each unit:
        # t = 2u / (b + sqrt(b² + 4au)), the form that stays exact when a is 0 or negative.
        a = (self.rate_to - self.rate_from) / (2 * self.duration_s)
        b = self.rate_from
        root = np.sqrt(np.maximum(b * b + 4 * a * units, 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            times = np.where(units > 0, 2 * units / (b + root), 0.0)
        return times[times < self.duration_s]


@dataclass(frozen=True, kw_only=True)
class UsersSegment:
    """Closed loop: `users_from` users changing linearly to `users_to`, each waiting for its answer.

    On a ramp up the k-th new user starts at `(k - 1) / added` of the segment (the first at once);
    on a ramp down the k-th leaving user stops at `k / removed` of it (the last at its end). A user
    who stops sends nothing more; a request it has in flight still finishes.
    """

    duration_s: float
    users_from: int
    users_to: int
    think_s: float = 0.0

    def changes(self) -> list[tuple[float, int]]:
        """(seconds from the segment's start, users from then on) at every change inside it."""
        step = self.users_to - self.users_from
        if step > 0:
            return [(self.duration_s * k / step, self.users_from + k + 1) for k in range(step)]
        return [(self.duration_s * (k + 1) / -step, self.users_from - k - 1) for k in range(-step)]


Segment = OpenSegment | UsersSegment


@dataclass(frozen=True, kw_only=True)
class UserChange:
    """From `at_s` on, `users` users are active, each thinking `think_s` between answer and request."""

    at_s: float
    users: int
    think_s: float


@dataclass(frozen=True, kw_only=True)
class Trace:
    """A load: segments played in order, or the arrival times of a recorded log."""

    description: str
    segments: tuple[Segment, ...] = ()
    recorded: tuple[float, ...] = ()

    @property
    def duration_s(self) -> float:
        """Seconds from the first request to the end of the last segment (or the last recorded one)."""
        if self.recorded:
            return self.recorded[-1]
        return sum(segment.duration_s for segment in self.segments)

    def open_arrivals(self, rng: np.random.Generator) -> np.ndarray:
        """Send times of every open-loop request, seconds from the trace's start, ascending."""
        if self.recorded:
            return np.asarray(self.recorded, dtype=float)
        parts, start = [], 0.0
        for segment in self.segments:
            if isinstance(segment, OpenSegment):
                parts.append(start + segment.arrivals(rng))
            start += segment.duration_s
        return np.sort(np.concatenate(parts)) if parts else np.empty(0)

    def user_changes(self) -> list[UserChange]:
        """When the number of closed-loop users changes; all users stop when their segments end."""
        changes: list[UserChange] = []
        start, current = 0.0, 0
        for index, segment in enumerate(self.segments):
            if isinstance(segment, UsersSegment):
                if segment.users_from != current:
                    changes.append(UserChange(at_s=start, users=segment.users_from, think_s=segment.think_s))
                changes += [
                    UserChange(at_s=start + at, users=users, think_s=segment.think_s)
                    for at, users in segment.changes()
                ]
                current = segment.users_to
                following = self.segments[index + 1] if index + 1 < len(self.segments) else None
                if current and not isinstance(following, UsersSegment):
                    changes.append(UserChange(at_s=start + segment.duration_s, users=0, think_s=0.0))
                    current = 0
            start += segment.duration_s
        return changes


def parse_duration(flag: str, text: str) -> float:
    """Seconds from "90", "90s", "1.5m", "500ms" or "1h"; a `SpecError` naming `flag` otherwise."""
    match = _DURATION.match(text)
    if not match:
        raise SpecError(f"`{flag}` must be a duration such as 30, 30s, 500ms, 3m or 1h; got {text!r}")
    return float(match.group(1)) * _UNIT_S[match.group(2) or "s"]


def _number(flag: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SpecError(f"`{flag}` must be a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise SpecError(f"`{flag}` must be a number ≥ 0, got {text!r}")
    return value


def _count(flag: str, text: str) -> int:
    if not text.strip().isdigit():
        raise SpecError(f"`{flag}` must be a whole number ≥ 0, got {text!r}")
    return int(text)


def _fields(text: str, kind: str, body: str) -> dict[str, str]:
    required, optional = _KEYS[kind]
    fields: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in body.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not value.strip():
            raise SpecError(f"`--trace` {text!r}: {part!r} must be key=value")
        if key not in required | optional:
            allowed = ", ".join(sorted(required | optional))
            raise SpecError(f"`--trace` {kind}: unknown key {key!r}; {kind} takes {allowed}")
        if key in fields:
            raise SpecError(f"`--trace` {text!r}: {key} given twice")
        fields[key] = value.strip()
    missing = sorted(required - set(fields))
    if missing:
        raise SpecError(f"`--trace` {kind} needs {', '.join(missing)} (e.g. {_EXAMPLES[kind]}); got {text!r}")
    return fields


_EXAMPLES = {
    "constant": "constant:rate=50,duration=60",
    "ramp": "ramp:from=0,to=100,duration=2m",
    "interval": "interval:every=15s,duration=40m",
    "users": "users:from=0,to=20,duration=3m",
}


def _arrivals(kind: str, fields: dict[str, str]) -> bool:
    arrivals = fields.get("arrivals", "even")
    if arrivals not in ARRIVAL_KINDS:
        raise SpecError(
            f"`--trace` {kind}: arrivals must be one of {', '.join(ARRIVAL_KINDS)}; got {arrivals!r}"
        )
    return arrivals == "poisson"


def parse_segment(text: str) -> Segment:
    """One `--trace` spec as a segment; a `SpecError` that says what is wrong otherwise."""
    kind, sep, body = text.strip().partition(":")
    if kind not in TRACE_KINDS or not sep:
        raise SpecError(
            f"`--trace` must start with one of {', '.join(k + ':' for k in TRACE_KINDS)} "
            f"(e.g. {_EXAMPLES['constant']}); got {text!r}"
        )
    fields = _fields(text, kind, body)
    duration = parse_duration(f"--trace {kind} duration", fields["duration"])
    if not duration > 0:
        raise SpecError(f"`--trace` {kind}: duration must be > 0, got {fields['duration']!r}")
    if kind == "constant":
        rate = _number("--trace constant rate", fields["rate"])
        if not rate > 0:
            raise SpecError(f"`--trace` constant: rate must be > 0 requests/s, got {fields['rate']!r}")
        return OpenSegment(duration_s=duration, rate_from=rate, rate_to=rate, poisson=_arrivals(kind, fields))
    if kind == "ramp":
        low, high = _number("--trace ramp from", fields["from"]), _number("--trace ramp to", fields["to"])
        if low == high == 0:
            raise SpecError("`--trace` ramp: from and to are both 0 requests/s; nothing would be sent")
        return OpenSegment(duration_s=duration, rate_from=low, rate_to=high, poisson=_arrivals(kind, fields))
    if kind == "interval":
        every = parse_duration("--trace interval every", fields["every"])
        if not every > 0:
            raise SpecError(f"`--trace` interval: every must be > 0, got {fields['every']!r}")
        burst = _count("--trace interval requests", fields.get("requests", "1"))
        if burst < 1:
            raise SpecError("`--trace` interval: requests must be ≥ 1 per interval")
        return OpenSegment(duration_s=duration, every_s=every, burst=burst)
    if "count" in fields and ({"from", "to"} & set(fields)):
        raise SpecError("`--trace` users: give count (a steady number) or from and to (a ramp), not both")
    if "count" not in fields and not {"from", "to"} <= set(fields):
        raise SpecError(f"`--trace` users needs count, or from and to; got {text!r}")
    low = _count("--trace users from", fields.get("from", fields.get("count", "")))
    high = _count("--trace users to", fields.get("to", fields.get("count", "")))
    if low == high == 0:
        raise SpecError("`--trace` users: 0 users would send nothing")
    think = parse_duration("--trace users think", fields.get("think", "0"))
    return UsersSegment(duration_s=duration, users_from=low, users_to=high, think_s=think)


def parse_trace(specs: Sequence[str]) -> Trace:
    """Segments from one or more `--trace` specs, played in the order given."""
    if not specs:
        raise SpecError("give a load: one or more `--trace` specs, or `--trace-file`")
    segments = tuple(parse_segment(text) for text in specs)
    requests = sum(s.expected_requests for s in segments if isinstance(s, OpenSegment))
    if requests > MAX_REQUESTS:
        raise SpecError(
            f"`--trace` sends about {requests:,.0f} requests, more than the {MAX_REQUESTS:,} a simulation "
            "takes; shorten it or lower the rate"
        )
    return Trace(description=" then ".join(s.strip() for s in specs), segments=segments)


def _timestamp(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.timezone.utc)
        return moment.timestamp()


def read_trace_file(path: Path) -> Trace:
    """Arrivals recorded in a log: one request per line, its time in the first comma/space field.

    A time is seconds (e.g. Unix time, any origin) or an ISO 8601 timestamp; times are taken
    relative to the earliest. Blank lines and lines starting with `#` are skipped, and so is a first
    line that is a header (not a time).
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(f"`--trace-file` {path}: cannot read it ({error})") from None
    times: list[float] = []
    content_lines = 0
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        content_lines += 1
        first = re.split(r"[,\s]+", stripped, maxsplit=1)[0]
        try:
            times.append(_timestamp(first))
        except ValueError:
            if content_lines == 1:
                continue  # a header line
            raise SpecError(
                f"`--trace-file` {path} line {number}: {first!r} is neither seconds nor an ISO 8601 time"
            ) from None
    if not times:
        raise SpecError(f"`--trace-file` {path} holds no request times (one per line)")
    if len(times) > MAX_REQUESTS:
        raise SpecError(f"`--trace-file` {path} holds {len(times):,} requests, more than {MAX_REQUESTS:,}")
    ordered = np.sort(np.asarray(times, dtype=float))
    offsets = tuple(float(t) for t in ordered - ordered[0])
    return Trace(description=f"{len(offsets):,} requests recorded in {path.name}", recorded=offsets)
