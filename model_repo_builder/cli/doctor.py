"""`trb doctor`: report what is installed and what is missing."""

from __future__ import annotations

import click


@click.command("doctor")
def command() -> None:
    """Check tritonserver, perf_analyzer, libraries, the embedded model and Docker."""
    from model_repo_builder.doctor import run_checks
    from model_repo_builder.errors import ToolNotFoundError

    checks = run_checks()
    for check in checks:
        mark = (
            click.style("ok  ", fg="green")
            if check.ok
            else click.style("FAIL" if check.required else "--  ", fg="red" if check.required else "yellow")
        )
        click.echo(f"{mark} {check.name}: {check.detail}")
    failed = [check.name for check in checks if check.required and not check.ok]
    if failed:
        raise ToolNotFoundError(f"{len(failed)} required part(s) missing: {', '.join(failed)}")
