"""`trb demo`: build, launch and query the embedded default model, end to end."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("demo")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=Path("repos"), show_default=True)
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="int8", show_default=True)
def command(output: Path, precision: str) -> None:
    """Build all-MiniLM-L6-v2 (ships offline), serve it with tritonserver, query it, check the vectors."""
    from rich.console import Console
    from rich.table import Table

    from model_repo_builder.demo import run_demo

    console = Console()
    with console.status("building, launching and querying all-minilm-l6-v2 (about a minute)"):
        report = run_demo(output, precision)
    table = Table(title=f"served by tritonserver from {report.repository}")
    table.add_column("text")
    table.add_column("cosine to source model", justify="right")
    table.add_column("closest other text")
    for index, text in enumerate(report.texts):
        others = [
            (report.similarity[index, j], report.texts[j]) for j in range(len(report.texts)) if j != index
        ]
        score, closest = max(others)
        table.add_row(text, f"{report.cosine_to_source[index]:.5f}", f"{closest} ({score:.2f})")
    console.print(table)
    console.print(
        f"single-text request latency over HTTP: p50 {report.latency_p50_ms:.1f} ms, "
        f"p99 {report.latency_p99_ms:.1f} ms"
    )
    console.print(f'next: trb launch {report.repository}   (then: trb infer {report.repository} "some text")')
