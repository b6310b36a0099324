"""The `trb` command line: thin click commands that parse options, build a spec and call the library.

Heavy imports happen inside the commands, so `trb --help` stays instant.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from model_repo_builder import __version__
from model_repo_builder.errors import TrbError


class TrbGroup(click.Group):
    """Turns `TrbError` into a one-line message on stderr and the error's exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; people see messages, not tracebacks, for errors they can act on."""
        try:
            return super().invoke(ctx)
        except TrbError as error:
            click.secho(f"error: {error}", fg="red", err=True)
            sys.exit(error.exit_code)


@click.group(cls=TrbGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="trb")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors.")
def main(verbose: int, quiet: bool) -> None:
    """Build, launch and measure NVIDIA Triton repositories for Hugging Face models."""
    level = logging.ERROR if quiet else {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("root", "onnxruntime", "transformers", "optimum", "torch"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def _register() -> None:
    from model_repo_builder.cli import build, demo, deploy, doctor, infer, launch, models, plan, status, sweep

    for module in (build, launch, models, infer, status, sweep, plan, deploy, doctor, demo):
        main.add_command(module.command)


_register()
