"""`trb models list|load|unload`: the running server's model-repository API, with the launch's admin key."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from model_repo_builder.runtime.admin import ModelRepository

_URL = click.option(
    "--url", default="127.0.0.1:8000", show_default=True, help="host:port of the server (HTTP)."
)
_KEY_FILE = click.option(
    "--key-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="File holding the admin key (default: the one `trb launch` wrote for this port and user).",
)


@click.group("models")
def command() -> None:
    """List, load and unload the models of a running `trb launch` (explicit model control)."""


def _repository(url: str, key_file: Path | None) -> ModelRepository:
    from model_repo_builder.runtime.admin import ModelRepository, read_key

    return ModelRepository(url, read_key(url, key_file))


@command.command("list")
@_URL
@_KEY_FILE
def list_models(url: str, key_file: Path | None) -> None:
    """Every model the server's repositories hold, loaded or not."""
    entries = _repository(url, key_file).index()
    click.echo(f"{'model':32} {'version':8} {'state':12} reason")
    for entry in entries:
        click.echo(f"{entry.name:32} {entry.version or '-':8} {entry.state:12} {entry.reason}")


@command.command("load")
@click.argument("name")
@_URL
@_KEY_FILE
def load(name: str, url: str, key_file: Path | None) -> None:
    """Load (or reload) model NAME from the server's repositories; returns once it is ready."""
    _repository(url, key_file).load(name)
    click.echo(f"loaded {name}")


@command.command("unload")
@click.argument("name")
@_URL
@_KEY_FILE
def unload(name: str, url: str, key_file: Path | None) -> None:
    """Unload model NAME: requests in flight finish, new ones are refused; the supervisor leaves it so."""
    _repository(url, key_file).unload(name)
    click.echo(f"unloading {name}: requests in flight finish first; `trb models load {name}` brings it back")
