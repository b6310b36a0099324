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
@click.option("--query", help="Reranking: the query every TEXT (a passage) is scored against.")
@click.option("--max-new-tokens", type=int, help="Text generation: tokens to generate (model default).")
@click.option("--num-beams", type=int, help="Text generation: beam search width (default 1: greedy).")
@click.option(
    "--priority",
    type=click.IntRange(min=0),
    default=0,
    help="Priority level of the requests (1 is served first; 0: the model's default level).",
)
def command(
    target: str,
    texts: tuple[str, ...],
    url: str,
    protocol: str,
    as_json: bool,
    query: str | None,
    max_new_tokens: int | None,
    num_beams: int | None,
    priority: int,
) -> None:
    """Send TEXTs to the model of TARGET (a repository directory, or an embedding model's name).

    More TEXTs than the model's max batch size are sent in several requests.
    """
    from model_repo_builder.client import infer_task, resolve_target
    from model_repo_builder.errors import SpecError
    from model_repo_builder.templates.seq2seq.generation import MAX_NEW_TOKENS_INPUT, NUM_BEAMS_INPUT

    texts = tuple(_checked_text(text) for text in texts)
    model, task, max_batch_size = resolve_target(target)
    generation = {
        name: value
        for name, value in ((MAX_NEW_TOKENS_INPUT, max_new_tokens), (NUM_BEAMS_INPUT, num_beams))
        if value is not None
    }
    if generation and not task.generates:
        raise SpecError("`--max-new-tokens` and `--num-beams` apply to text-generation repositories")
    inputs = {task.text_inputs[-1]: list(texts)}
    if len(task.text_inputs) == 2:
        if query is None:
            raise SpecError(f"{model} is a {task.name} model: pass `--query QUERY` and the passages as TEXTs")
        inputs = {task.text_inputs[0]: [_checked_text(query)] * len(texts), task.text_inputs[1]: list(texts)}
    elif query is not None:
        raise SpecError(f"`--query` applies to reranking models; {model} is a {task.name} model")
    outputs = infer_task(model, task, inputs, url, protocol, generation, max_batch_size, priority)
    if as_json:
        click.echo(json.dumps({"model": model, **task.result_json(texts, outputs)}, ensure_ascii=False))
        return
    for line in task.format_result(texts, outputs):
        click.echo(line)


def _checked_text(text: str) -> str:
    """Arguments that are not valid UTF-8 reach Python as surrogate escapes; say so instead of crashing."""
    from model_repo_builder.errors import SpecError

    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise SpecError(
            f"the argument {text.encode('utf-8', 'surrogateescape')[:40]!r} is not valid UTF-8; "
            "pass UTF-8 text (check the terminal's or file's encoding)"
        ) from None
    return text
