"""Sweep reports people can read: PNG plots and one self-contained report.html (plots inlined).

Input is the plain-data results dictionary that `trb sweep` also writes as results.json, so a report
can be re-rendered from any past run without measuring again.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LEVEL_COLUMNS = (
    "config",
    "mode",
    "load",
    "throughput_rps",
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "avg_ms",
    "errors",
)
_STYLE = (
    "body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px}"
    "img{max-width:100%;display:block;margin:1em 0}.summary{font-size:18px;font-weight:bold}"
)
_BREAKDOWN_PARTS = (
    ("server_queue_ms", "queue"),
    ("server_compute_input_ms", "compute input"),
    ("server_compute_infer_ms", "compute infer"),
    ("server_compute_output_ms", "compute output"),
    ("network_ms", "network + server send/recv"),
)


def _figure() -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(8, 4.5), dpi=100)


def _save(fig: Any, path: Path) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    import matplotlib.pyplot as plt

    plt.close(fig)
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def _plot_curves(results: dict[str, Any], path: Path) -> bytes:
    fig, ax = _figure()
    for config in results["configs"]:
        for mode in ("concurrency", "request_rate"):
            levels = sorted(
                (lv for lv in config["levels"] if lv["mode"] == mode and lv.get("p99_ms") is not None),
                key=lambda level: level["load"],
            )
            if not levels:
                continue
            label = config["name"] if mode == "concurrency" else f"{config['name']} (open loop)"
            x = [level["throughput_rps"] for level in levels]
            style = "-" if mode == "concurrency" else ":"
            (line,) = ax.plot(
                x, [level["p99_ms"] for level in levels], marker="o", linestyle=style, label=f"{label} p99"
            )
            ax.plot(
                x,
                [level["p50_ms"] for level in levels],
                marker=".",
                linestyle="--",
                color=line.get_color(),
                label=f"{label} p50",
            )
            knee = config.get("knee") or {}
            if mode == "concurrency" and knee.get("found"):
                ax.scatter(
                    [knee["throughput_rps"]],
                    [knee["p99_ms"]],
                    s=140,
                    facecolors="none",
                    edgecolors=line.get_color(),
                    linewidths=2,
                )
    slo = results.get("slo")
    if slo:
        ax.axhline(slo["latency_ms"], color="red", linewidth=1, label=f"SLO p{slo['percentile']}")
    ax.set_xlabel("throughput (requests/s)")
    ax.set_ylabel("latency (ms)")
    ax.set_title("Latency vs throughput (circles: knee)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def _plot_breakdown(config: dict[str, Any], path: Path) -> bytes:
    fig, ax = _figure()
    levels = sorted(config["levels"], key=lambda level: level["load"])
    labels = [f"{level['load']:g}" for level in levels]
    bottom = [0.0] * len(levels)
    for key, label in _BREAKDOWN_PARTS:
        values = [level.get("breakdown", {}).get(key, 0.0) for level in levels]
        ax.bar(labels, values, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_xlabel(f"load ({levels[0]['mode'] if levels else ''})")
    ax.set_ylabel("average latency (ms)")
    ax.set_title(f"Where the time goes: {config['name']}")
    ax.legend(fontsize=7)
    return _save(fig, path)


def _plot_histogram(histogram: dict[str, Any], path: Path) -> bytes:
    fig, ax = _figure()
    ax.hist(histogram["latencies_ms"], bins=40, color="#4477aa")
    ax.set_xlabel("response time (ms)")
    ax.set_ylabel("requests")
    ax.set_title(f"Response times: {histogram['config']} at load {histogram['load']:g}")
    return _save(fig, path)


def _plot_profile(profile: dict[str, Any], path: Path) -> bytes:
    fig, ax = _figure()
    steps = profile["steps"]
    t = [step["start_s"] for step in steps]
    ax.step(t, [step["throughput_rps"] for step in steps], where="post", label="throughput (req/s)")
    ax.step(t, [step["load"] for step in steps], where="post", label="offered load", linestyle=":")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("requests/s or concurrency")
    second = ax.twinx()
    second.plot(t, [step["p99_ms"] for step in steps], color="red", marker=".", label="p99 (ms)")
    second.set_ylabel("p99 latency (ms)")
    ax.set_title(f"Load profile: {profile['name']}")
    ax.legend(loc="upper left", fontsize=7)
    second.legend(loc="upper right", fontsize=7)
    return _save(fig, path)


def level_columns(results: dict[str, Any]) -> tuple[str, ...]:
    """The per-level columns: a text-generation sweep adds tokens/s, a cached model its cache counts."""
    columns: tuple[str, ...] = LEVEL_COLUMNS
    if "generation" in results:
        after = LEVEL_COLUMNS.index("throughput_rps") + 1
        columns = (*LEVEL_COLUMNS[:after], "tokens_per_s", *LEVEL_COLUMNS[after:])
    levels = (level for config in results["configs"] for level in config["levels"])
    if any("cache_hits" in level for level in levels):
        columns += ("cache_hits", "cache_misses")
    return columns


def level_rows(results: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every measured level of every config, flat, for CSV and tables."""
    columns = level_columns(results)[1:]
    for config in results["configs"]:
        for level in sorted(config["levels"], key=lambda item: (item["mode"], item["load"])):
            yield {"config": config["name"], **{key: level.get(key) for key in columns}}


def write_csv(results: dict[str, Any], path: Path) -> Path:
    """levels.csv: one row per measured level."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(level_columns(results)))
        writer.writeheader()
        writer.writerows(level_rows(results))
    return path


def _table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(row.get(c)))}</td>" for c in columns) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return "" if value is None else str(value)


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _write_page(folder: Path, model: str, sections: list[str]) -> Path:
    """report.html: the sections in one self-contained page."""
    page = (
        f"<!doctype html><html><head><meta charset=utf-8><title>trb sweep {html.escape(model)}"
        f"</title><style>{_STYLE}</style></head><body>{''.join(sections)}</body></html>"
    )
    path = folder / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def write_report(results: dict[str, Any], folder: Path) -> Path:
    """Write results.json, levels.csv, the PNG plots and report.html into `folder`; return the HTML path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    write_csv(results, folder / "levels.csv")
    sections = [
        f"<h1>trb sweep: {html.escape(results['model'])}</h1>",
        f"<p class=summary>{html.escape(results.get('summary', ''))}</p>",
    ]
    sections.append(
        _img(_plot_curves(results, folder / "latency_vs_throughput.png"), "latency vs throughput")
    )
    best = next((c for c in results["configs"] if c["name"] == results.get("best_config")), None)
    if best is None and results["configs"]:
        best = results["configs"][0]
    if best is not None and best["levels"]:
        sections.append(_img(_plot_breakdown(best, folder / "latency_breakdown.png"), "latency breakdown"))
    if results.get("histogram"):
        sections.append(
            _img(_plot_histogram(results["histogram"], folder / "response_times.png"), "histogram")
        )
    for index, profile in enumerate(results.get("profiles", [])):
        if profile["steps"]:
            png = _plot_profile(profile, folder / f"profile_{index}_{profile['kind']}.png")
            sections.append(f"<h2>Profile: {html.escape(profile['name'])}</h2>")
            sections.append(f"<p>{html.escape(profile.get('verdict', ''))}</p>" + _img(png, profile["name"]))
    sections.append("<h2>Configurations</h2>")
    config_rows = [
        {
            "config": c["name"],
            "capacity_rps": (c.get("capacity") or {}).get("throughput_rps"),
            "knee_rps": (c.get("knee") or {}).get("throughput_rps"),
            "levels": len(c["levels"]),
        }
        for c in results["configs"]
    ]
    sections.append(_table(config_rows, ("config", "capacity_rps", "knee_rps", "levels")))
    if results.get("search"):
        sections.append(f"<p>Search: {html.escape(json.dumps(results['search']))}</p>")
    sections.append("<h2>Every measured level</h2>")
    sections.append(_table(list(level_rows(results)), level_columns(results)))
    return _write_page(folder, results["model"], sections)


SHARING_COLUMNS = (
    "model",
    "mode",
    "load",
    "solo_rps",
    "shared_rps",
    "throughput_ratio",
    "solo_p50_ms",
    "shared_p50_ms",
    "p50_ratio",
    "solo_p99_ms",
    "shared_p99_ms",
    "p99_ratio",
    "overlap",
)
_TOKEN_COLUMNS = ("solo_tokens_per_s", "shared_tokens_per_s")
_CACHE_COLUMNS = ("solo_cache_hits", "solo_cache_misses", "shared_cache_hits", "shared_cache_misses")


def sharing_columns(results: dict[str, Any]) -> tuple[str, ...]:
    """The columns of the solo-vs-shared table: token and cache columns only where a model has them."""
    models = results["models"]["models"]
    columns: tuple[str, ...] = SHARING_COLUMNS
    if any(model.get("tokens_per_request") is not None for model in models):
        columns += _TOKEN_COLUMNS
    if any(model.get("response_cache") for model in models):
        columns += _CACHE_COLUMNS
    return columns


def sharing_rows(results: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """One row per model and level of a multi-model sweep: solo, shared and shared ÷ solo."""
    for level in results["models"]["levels"]:
        fractions = (level.get("overlap") or {}).get("fractions") or {}
        for cost in level["costs"]:
            solo, shared = cost["solo"], cost.get("shared") or {}
            yield {
                "model": cost["model"],
                "mode": level["mode"],
                "load": level["load"],
                "solo_rps": solo["throughput_rps"],
                "shared_rps": shared.get("throughput_rps"),
                "throughput_ratio": cost["throughput_ratio"],
                "solo_p50_ms": solo["p50_ms"],
                "shared_p50_ms": shared.get("p50_ms"),
                "p50_ratio": cost["p50_ratio"],
                "solo_p99_ms": solo["p99_ms"],
                "shared_p99_ms": shared.get("p99_ms"),
                "p99_ratio": cost["p99_ratio"],
                "overlap": fractions.get(cost["model"]),
                "solo_tokens_per_s": solo.get("tokens_per_s"),
                "shared_tokens_per_s": shared.get("tokens_per_s"),
                "solo_cache_hits": solo.get("cache_hits"),
                "solo_cache_misses": solo.get("cache_misses"),
                "shared_cache_hits": shared.get("cache_hits"),
                "shared_cache_misses": shared.get("cache_misses"),
            }


def _plot_sharing(rows: list[dict[str, Any]], path: Path) -> bytes:
    fig, ax = _figure()
    labels = [f"{row['model']}\n{row['mode']} {row['load']:g}" for row in rows]
    positions = list(range(len(rows)))
    ax.bar([p - 0.2 for p in positions], [row["solo_rps"] for row in rows], width=0.4, label="solo")
    ax.bar(
        [p + 0.2 for p in positions], [row["shared_rps"] or 0.0 for row in rows], width=0.4, label="shared"
    )
    ax.set_xticks(positions, labels, fontsize=7)
    ax.set_ylabel("throughput (requests/s)")
    ax.set_title("Each model alone and driven together")
    ax.legend(fontsize=7)
    return _save(fig, path)


def write_models_report(results: dict[str, Any], folder: Path) -> Path:
    """Write a multi-model sweep's results.json, levels.csv, plot and report.html; return the HTML path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    columns = sharing_columns(results)
    rows = list(sharing_rows(results))
    with (folder / "levels.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    section = results["models"]
    sections = [
        f"<h1>trb sweep: {html.escape(results['model'])} together</h1>",
        f"<p class=summary>{html.escape(results.get('summary', ''))}</p>",
        "<p>Each model alone (the others loaded and idle in the same server), then all driven at once, "
        f"one perf_analyzer per model, {section['windows']} windows of {section['measurement_interval_ms']} "
        "ms each. Shared figures count the requests completed while every model's windows were open; "
        "overlap is that span's share of the model's own windows. Ratios are shared ÷ solo.</p>",
    ]
    if rows:
        sections.append(_img(_plot_sharing(rows, folder / "solo_vs_shared.png"), "solo vs shared"))
    sections.append("<h2>Solo and shared, per model and level</h2>")
    sections.append(_table(rows, columns))
    for error in results.get("errors", []):
        sections.append(f"<p>Error: {html.escape(error)}</p>")
    return _write_page(folder, results["model"], sections)
