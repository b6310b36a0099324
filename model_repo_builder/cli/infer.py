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
@click.option("--max-new-tokens", type=int, help="Text generation: tokens to generate (model default).")
@click.option("--num-beams", type=int, help="Text generation: beam search width (default 1: greedy).")
def command(
    target: str,
    texts: tuple[str, ...],
    url: str,
    protocol: str,
    as_json: bool,
    max_new_tokens: int | None,
    num_beams: int | None,
) -> None:
    """Send TEXTs to the model of TARGET (a repository directory, or an embedding model's name)."""
    from model_repo_builder.client import infer_texts, resolve_target
    from model_repo_builder.errors import SpecError
    from model_repo_builder.models.registry import TEXT2TEXT_GENERATION
    from model_repo_builder.templates.seq2seq.generation import MAX_NEW_TOKENS_INPUT, NUM_BEAMS_INPUT

    model, io = resolve_target(target)
    generation = {
        name: value
        for name, value in ((MAX_NEW_TOKENS_INPUT, max_new_tokens), (NUM_BEAMS_INPUT, num_beams))
        if value is not None
    }
    if generation and io.task != TEXT2TEXT_GENERATION:
        raise SpecError("`--max-new-tokens` and `--num-beams` apply to text-generation repositories")
    output = infer_texts(model, io, texts, url=url, protocol=protocol, int_inputs=generation)
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
