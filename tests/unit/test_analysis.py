import math

import numpy as np
import pytest

from model_repo_builder.errors import SpecError
from model_repo_builder.perf.analysis import (
    Measurement,
    Slo,
    capacity_at_slo,
    compare_runs,
    cost_per_million,
    find_knee,
    latency_summary,
    parse_slo,
    percentile,
    replicas_needed,
    summary_sentence,
)


def level(load: float, rps: float, p99: float, errors: int = 0) -> Measurement:
    """A measurement whose lower percentiles are fixed fractions of p99."""
    return Measurement(
        load=load,
        throughput_rps=rps,
        p50_ms=p99 * 0.5,
        p90_ms=p99 * 0.8,
        p95_ms=p99 * 0.9,
        p99_ms=p99,
        avg_ms=p99 * 0.55,
        errors=errors,
    )


def curve(loads, rps, p99s):
    return [level(c, r, p) for c, r, p in zip(loads, rps, p99s, strict=True)]


# --- percentiles -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("q", [0, 1, 25, 50, 90, 95, 99, 99.9, 100])
def test_percentile_matches_numpy_linear(seed, q):
    values = np.random.default_rng(seed).lognormal(mean=3, sigma=1, size=997)
    assert percentile(values.tolist(), q) == pytest.approx(np.percentile(values, q), rel=1e-12)


def test_percentile_hand_computed():
    values = [40, 10, 30, 20]  # sorted 10 20 30 40, ranks 0..3
    assert percentile(values, 50) == pytest.approx(25.0)  # rank 1.5
    assert percentile(values, 90) == pytest.approx(37.0)  # rank 2.7 -> 30 + 0.7*10
    assert percentile(values, 0) == 10
    assert percentile(values, 100) == 40
    assert percentile([7.0], 99) == 7.0


def test_percentile_rejects_bad_input():
    with pytest.raises(SpecError, match="no values"):
        percentile([], 50)
    with pytest.raises(SpecError, match="between 0 and 100"):
        percentile([1.0], 101)


def test_latency_summary_converts_microseconds_to_ms():
    summary = latency_summary([1000, 2000, 3000, 4000, 5000])
    assert summary.count == 5
    assert summary.mean_ms == pytest.approx(3.0)
    assert summary.p50_ms == pytest.approx(3.0)
    assert summary.p90_ms == pytest.approx(4.6)
    assert summary.p99_ms == pytest.approx(4.96)
    assert summary.max_ms == pytest.approx(5.0)


def test_latency_summary_rejects_empty_and_negative():
    with pytest.raises(SpecError, match="no requests"):
        latency_summary([])
    with pytest.raises(SpecError, match="non-negative"):
        latency_summary([100, -1])


# --- knee --------------------------------------------------------------------------------------


def test_knee_on_hockey_stick_lands_on_the_bend():
    # Throughput rises linearly up to load 8, then saturates; latency flat then linear queueing.
    loads = list(range(1, 17))
    rps = [min(c, 8) * 100 + max(0, c - 8) * 1.5 for c in loads]
    p99 = [20 + 0.3 * c if c <= 8 else 22.4 + (c - 8) * 12.5 for c in loads]
    knee = find_knee(curve(loads, rps, p99))
    assert knee.found
    assert 7 <= knee.point.load <= 9


def test_knee_is_at_or_before_throughput_peak_when_throughput_drops():
    loads = list(range(1, 11))
    rps = [100, 200, 300, 400, 450, 470, 480, 440, 400, 350]
    p99 = [10, 10, 11, 12, 14, 17, 25, 40, 60, 90]
    knee = find_knee(curve(loads, rps, p99))
    assert knee.point.load <= 7  # the peak
    assert knee.found
    # The bend: load 4->5 buys 50 req/s for 2 ms, 5->6 only 20 req/s for 3 ms.
    assert 4 <= knee.point.load <= 6


def test_knee_never_lands_past_the_peak_even_on_a_noisy_latency_dip():
    # Load 6 sits past the throughput peak (load 5) but reports a suspiciously low p99.
    loads = [1, 2, 3, 4, 5, 6]
    rps = [100, 200, 300, 340, 350, 345]
    p99 = [10, 11, 12, 30, 60, 11]
    knee = find_knee(curve(loads, rps, p99))
    assert knee.found
    assert knee.point.load == 3


def test_knee_ignores_input_order():
    loads = list(range(1, 11))
    rps = [100, 200, 300, 400, 450, 470, 480, 440, 400, 350]
    p99 = [10, 10, 11, 12, 14, 17, 25, 40, 60, 90]
    points = curve(loads, rps, p99)
    assert find_knee(points[::-1]).point == find_knee(points).point


def test_knee_on_straight_line_reports_no_bend_and_uses_peak():
    loads = list(range(1, 9))
    knee = find_knee(curve(loads, [100 * c for c in loads], [10 * c for c in loads]))
    assert not knee.found
    assert knee.point.load == 8
    assert "no clear bend" in knee.reason


def test_knee_with_two_points_returns_best_throughput():
    knee = find_knee([level(1, 100, 10), level(2, 180, 15)])
    assert not knee.found
    assert knee.point.throughput_rps == 180
    assert "2 level" in knee.reason


def test_knee_with_flat_latency_uses_peak():
    loads = [1, 2, 4, 8]
    knee = find_knee(curve(loads, [100, 200, 400, 800], [5, 5, 5, 5]))
    assert not knee.found
    assert knee.point.load == 8


def test_knee_rejects_empty_and_unknown_metric():
    with pytest.raises(SpecError, match="no load levels"):
        find_knee([])
    with pytest.raises(SpecError, match="p42_ms"):
        find_knee([level(1, 1, 1)] * 3, metric="p42_ms")


def test_knee_uses_requested_metric():
    loads = list(range(1, 11))
    rps = [100, 200, 300, 400, 450, 470, 480, 440, 400, 350]
    p99 = [10, 10, 11, 12, 14, 17, 25, 40, 60, 90]
    points = curve(loads, rps, p99)
    # p50 is proportional to p99 here, so the knee must agree.
    assert find_knee(points, metric="p50_ms").point == find_knee(points).point


# --- capacity at SLO ---------------------------------------------------------------------------

SWEEP = [
    level(1, 60, 120),
    level(2, 115, 180),
    level(4, 212, 420),
    level(8, 240, 650),
    level(16, 238, 1300),
]


def test_capacity_picks_highest_throughput_meeting_slo():
    result = capacity_at_slo(SWEEP, Slo(percentile=99, latency_ms=500))
    assert result.met
    assert result.point is not None and result.point.load == 4
    assert result.throughput_rps == 212


def test_capacity_boundary_is_inclusive_and_respects_percentile():
    assert capacity_at_slo(SWEEP, Slo(percentile=99, latency_ms=650)).point.load == 8
    # p50 is half of p99: p50 at load 8 is 325 ms.
    assert capacity_at_slo(SWEEP, Slo(percentile=50, latency_ms=400)).point.load == 8


def test_capacity_reports_unmet_slo_instead_of_raising():
    result = capacity_at_slo(SWEEP, Slo(percentile=99, latency_ms=100))
    assert not result.met
    assert result.point is None
    assert result.throughput_rps == 0.0
    assert "120 ms" in result.reason


def test_capacity_skips_levels_with_errors():
    points = [level(1, 100, 50), level(2, 190, 60, errors=3)]
    assert capacity_at_slo(points, Slo(percentile=99, latency_ms=500)).point.load == 1


# --- parse_slo ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "pct", "ms"),
    [
        ("p99=500ms", 99, 500.0),
        ("p95=0.5s", 95, 500.0),
        ("p90=250", 90, 250.0),
        (" P50 = 12.5 MS ", 50, 12.5),
        ("p99=2s", 99, 2000.0),
    ],
)
def test_parse_slo_accepts(text, pct, ms):
    slo = parse_slo(text)
    assert (slo.percentile, slo.latency_ms) == (pct, ms)


@pytest.mark.parametrize(
    "text", ["", "p99", "500ms", "p99<500ms", "p99=500us", "p99=fast", "p99=-5ms", "99=500"]
)
def test_parse_slo_rejects_bad_form(text):
    with pytest.raises(SpecError, match="p99=500ms"):
        parse_slo(text)


def test_parse_slo_rejects_unsupported_percentile_and_zero():
    with pytest.raises(SpecError, match="p75"):
        parse_slo("p75=100ms")
    with pytest.raises(SpecError, match="positive"):
        parse_slo("p99=0ms")


# --- replicas and cost -------------------------------------------------------------------------


def test_replicas_classic_example_without_headroom():
    plan = replicas_needed(500, 65, headroom=0)
    assert plan.replicas == 8
    assert plan.replicas_without_headroom == 8


def test_replicas_with_default_headroom():
    plan = replicas_needed(500, 65)
    assert plan.usable_qps_per_replica == pytest.approx(52)
    assert plan.replicas == 10  # ceil(500 / 52) = ceil(9.6)
    assert plan.replicas_without_headroom == 8


def test_replicas_exact_multiple_is_not_rounded_up_by_float_noise():
    assert replicas_needed(520, 65, headroom=0.2).replicas == 10
    assert replicas_needed(0.3, 0.1, headroom=0).replicas == 3


@pytest.mark.parametrize(
    ("target", "capacity", "headroom", "message"),
    [
        (0, 65, 0.2, "target"),
        (500, -1, 0.2, "capacity"),
        (500, 65, 1.0, "headroom"),
        (500, 65, -0.1, "headroom"),
    ],
)
def test_replicas_rejects_bad_input(target, capacity, headroom, message):
    with pytest.raises(SpecError, match=message):
        replicas_needed(target, capacity, headroom)


def test_cost_per_million_hand_computed():
    # $3.60/hour at 100 req/s: 360,000 requests/hour -> $0.00001 each -> $10 per million.
    assert cost_per_million(3.60, 100) == pytest.approx(10.0)
    assert cost_per_million(1.0, 212) == pytest.approx(1.0 / (212 * 3600) * 1e6)


def test_cost_per_million_rejects_bad_input():
    with pytest.raises(SpecError, match="throughput"):
        cost_per_million(1.0, 0)
    with pytest.raises(SpecError, match="cost per hour"):
        cost_per_million(-1.0, 10)


# --- compare_runs ------------------------------------------------------------------------------

DIRECTIONS = {"throughput_rps": True, "p99_ms": False}


def test_compare_flags_throughput_drop_beyond_threshold():
    report = compare_runs({"throughput_rps": 200}, {"throughput_rps": 170}, 10, DIRECTIONS)
    (row,) = report.rows
    assert row.change_pct == pytest.approx(-15.0)
    assert row.regressed and report.regressed


def test_compare_passes_small_drop_and_improvements():
    report = compare_runs(
        {"throughput_rps": 200, "p99_ms": 100}, {"throughput_rps": 190, "p99_ms": 80}, 10, DIRECTIONS
    )
    assert not report.regressed
    assert [r.note for r in report.rows] == ["ok", "improved"]


def test_compare_flags_latency_increase():
    report = compare_runs({"p99_ms": 100}, {"p99_ms": 125}, 10, DIRECTIONS)
    assert report.regressed
    assert report.rows[0].change_pct == pytest.approx(25.0)


def test_compare_reports_missing_metrics_without_crashing():
    report = compare_runs(
        {"throughput_rps": 200, "p99_ms": 100}, {"throughput_rps": 200, "errors": 0}, 10, DIRECTIONS
    )
    rows = {r.metric: r for r in report.rows}
    assert rows["p99_ms"].note == "missing in candidate" and rows["p99_ms"].candidate is None
    assert rows["errors"].note == "missing in baseline" and rows["errors"].baseline is None
    assert not report.regressed


def test_compare_zero_baseline_and_bad_input():
    report = compare_runs({"errors": 0}, {"errors": 4}, 10, {"errors": False})
    assert math.isinf(report.rows[0].change_pct) and report.regressed
    with pytest.raises(SpecError, match="higher is better for: p50_ms"):
        compare_runs({"p50_ms": 1}, {"p50_ms": 2}, 10, DIRECTIONS)
    with pytest.raises(SpecError, match="threshold"):
        compare_runs({}, {}, -1, DIRECTIONS)


# --- summary -----------------------------------------------------------------------------------


def test_summary_sentence_full():
    capacity = capacity_at_slo(SWEEP, parse_slo("p99=500ms"))
    plan = replicas_needed(500, capacity.throughput_rps, headroom=0.2)
    cost = cost_per_million(0.40, capacity.throughput_rps)
    assert summary_sentence(capacity, plan, cost) == (
        "One replica sustains 212 req/s with p99 ≤ 500 ms; 500 req/s needs 3 replicas "
        "(20% headroom), costing $0.52 per million inferences."
    )


def test_summary_sentence_single_replica_no_headroom_and_unmet():
    capacity = capacity_at_slo(SWEEP, parse_slo("p99=500ms"))
    text = summary_sentence(capacity, replicas_needed(100, 212, headroom=0))
    assert (
        text == "One replica sustains 212 req/s with p99 ≤ 500 ms; 100 req/s needs 1 replica (no headroom)."
    )
    unmet = summary_sentence(capacity_at_slo(SWEEP, parse_slo("p99=50ms")))
    assert unmet == "No load level met p99 ≤ 50 ms; the lowest p99 was 120 ms."
