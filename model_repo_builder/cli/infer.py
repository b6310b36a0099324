"""`trb infer TARGET TEXT...`: embed texts with a running server and print the vectors."""

from __future__ import annotations

import json

import click


@click.command("infer")
@click.argument("target")
@click.argument("texts", nargs=-1, required=True)
@click.option("--url", default="127.0.0.1:8000", show_default=True, help="host:port of the server.")
@click.option("--protocol", type=click.Choice(["http", "grpc"]), default="http", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print full vectors as JSON.")
def command(target: str, texts: tuple[str, ...], url: str, protocol: str, as_json: bool) -> None:
    """Send TEXTs to the model of TARGET (a repository directory or a model name)."""
    from model_repo_builder.client import embed_texts, model_name_for

    model = model_name_for(target)
    embeddings = embed_texts(model, texts, url=url, protocol=protocol)
    if as_json:
        click.echo(json.dumps({"model": model, "embeddings": embeddings.round(6).tolist()}))
        return
    for text, vector in zip(texts, embeddings, strict=True):
        head = ", ".join(f"{value:+.4f}" for value in vector[:4])
        click.echo(
            f"{text[:48]!r:52} dim={vector.shape[0]} norm={float((vector**2).sum() ** 0.5):.4f} [{head}, …]"
        )
