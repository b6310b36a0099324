"""`trb infer TARGET TEXT...`: send texts to a running server and print what comes back."""

from __future__ import annotations

import json

import click


@click.command("infer")
@click.argument("target")
@click.argument("texts", nargs=-1, required=True)
@click.option("--url", default="127.0.0.1:8000", show_default=True, help="host:port of the server.")
@click.option("--protocol", type=click.Choice(["http", "grpc"]), default="http", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
def command(target: str, texts: tuple[str, ...], url: str, protocol: str, as_json: bool) -> None:
    """Send TEXTs to the model of TARGET (a repository directory, or an embedding model's name)."""
    from model_repo_builder.client import infer_texts, resolve_target
    from model_repo_builder.models.registry import TEXT2TEXT_GENERATION

    model, io = resolve_target(target)
    output = infer_texts(model, io, texts, url=url, protocol=protocol)
    if io.task == TEXT2TEXT_GENERATION:
        generated = [row.reshape(-1)[0].decode("utf-8", errors="replace") for row in output]
        if as_json:
            click.echo(json.dumps({"model": model, "generated": generated}, ensure_ascii=False))
            return
        for prompt, text in zip(texts, generated, strict=True):
            click.echo(f"{prompt!r} → {text!r}")
        return
    if as_json:
        click.echo(json.dumps({"model": model, "embeddings": output.round(6).tolist()}))
        return
    for text, vector in zip(texts, output, strict=True):
        head = ", ".join(f"{value:+.4f}" for value in vector[:4])
        click.echo(
            f"{text[:48]!r:52} dim={vector.shape[0]} norm={float((vector**2).sum() ** 0.5):.4f} [{head}, …]"
        )
