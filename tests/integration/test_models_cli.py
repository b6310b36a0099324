"""`trb models list|load|unload` on a real server: the admin key, in-flight requests, the supervisor.

The model is a small random T5 whose end-of-sequence id can never win (its output row is zeroed, like
every id the tokenizer does not know), so a stream asked for 512 tokens really generates 512: long
enough to unload the model while it runs. In-flight is decided by events (the first token has
arrived; the final response has not when the unload call returns), never by sleeping.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
from click.testing import CliRunner
from conftest import running_server
from seq2seq_fixtures import SMALL_T5, request_inputs, write_t5
from tritonclient.utils import InferenceServerException

from model_repo_builder.build import build
from model_repo_builder.cli import main
from model_repo_builder.errors import ServerError
from model_repo_builder.runtime.admin import ModelRepository
from model_repo_builder.runtime.server import TritonServer
from model_repo_builder.runtime.supervisor import Supervisor, stub_processes
from model_repo_builder.spec import BuildSpec

pytestmark = pytest.mark.integration

NEW_TOKENS = 512
PROMPT = "translate English to German: the cat likes fresh coffee."


@pytest.fixture(scope="module")
def endless_t5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = write_t5(tmp_path_factory.mktemp("models") / "t5-endless", SMALL_T5, decodable=True)
    config = json.loads((directory / "config.json").read_text())
    config["eos_token_id"] = SMALL_T5["vocab_size"] - 1  # an id whose output row is zero: never chosen
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "generation_config.json").unlink(missing_ok=True)
    return directory


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, endless_t5: Path) -> Iterator[TritonServer]:
    output = tmp_path_factory.mktemp("repos-endless")
    built = build(BuildSpec(source=str(endless_t5), output=output, name="t5"))
    with running_server(built.repository) as running:
        yield running


def _trb(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def _wait_state(repository: ModelRepository, model: str, state: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while (entry := next(e for e in repository.index() if e.name == model)).state != state:
        assert time.monotonic() < deadline, f"{model} stayed {entry.state}"
        time.sleep(0.05)


def _stream(
    server: TritonServer, model: str = "t5_stream"
) -> tuple[grpcclient.InferenceServerClient, queue.Queue]:
    arrived: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(server.grpc_url)
    client.start_stream(callback=lambda result, error: arrived.put((result, error)))
    inputs = request_inputs(grpcclient, [PROMPT], MAX_NEW_TOKENS=("INT32", [NEW_TOKENS]))
    client.async_stream_infer(model, inputs, enable_empty_final_response=True)
    return client, arrived


def _collect(arrived: queue.Queue, ids: list[int]) -> None:
    """Append token ids until the final response; raise the stream's error."""
    while True:
        result, error = arrived.get(timeout=120)
        if error is not None:
            raise error
        if result.as_numpy("TOKEN_IDS") is not None:
            ids.append(int(result.as_numpy("TOKEN_IDS")[0, 0]))
        if result.get_response().parameters["triton_final_response"].bool_param:
            return


def test_the_repository_api_needs_the_key_the_launcher_wrote(server, tmp_path) -> None:
    assert server.key_path.read_text() == server.admin_key
    assert oct(server.key_path.stat().st_mode & 0o777) == "0o600"
    code, output = _trb("models", "list", "--url", server.http_url)
    assert code == 0, output
    assert [line.split()[:3] for line in output.splitlines()[1:]] == [
        ["t5", "1", "READY"],
        ["t5_stream", "1", "READY"],
    ]

    with pytest.raises(ServerError, match="refused the admin key"):
        ModelRepository(server.http_url, None).index()
    wrong = tmp_path / "wrong.key"
    wrong.write_text("not-the-key")
    code, output = _trb("models", "unload", "t5", "--url", server.http_url, "--key-file", str(wrong))
    assert code == 1 and "refused the admin key" in output
    code, output = _trb("models", "list", "--url", "127.0.0.1:1")
    assert code == 2 and "no admin key for 127.0.0.1:1" in output
    assert (
        next(e for e in ModelRepository(server.http_url, server.admin_key).index() if e.name == "t5").state
        == "READY"
    )


def test_unload_lets_in_flight_streams_finish_and_refuses_new_requests(server) -> None:
    repository = ModelRepository(server.http_url, server.admin_key)
    client, arrived = _stream(server)
    expected: list[int] = []
    try:
        _collect(arrived, expected)  # the same request, undisturbed: the ids to expect
    finally:
        client.stop_stream()
        client.close()
    assert len(expected) == NEW_TOKENS

    client, arrived = _stream(server)
    ids: list[int] = []
    try:
        first, error = arrived.get(timeout=60)  # the first token: the request is being generated
        assert error is None
        ids.append(int(first.as_numpy("TOKEN_IDS")[0, 0]))
        code, output = _trb("models", "unload", "t5_stream", "--url", server.http_url)
        assert code == 0, output
        still_running = arrived.qsize() < NEW_TOKENS  # the final response has not arrived yet
        assert still_running, "the stream ended before the unload returned: nothing was in flight"
        assert next(e for e in repository.index() if e.name == "t5_stream").state == "UNLOADING"
        with pytest.raises(InferenceServerException) as refused:
            late = grpcclient.InferenceServerClient(server.grpc_url)
            try:
                late.infer("t5_stream", request_inputs(grpcclient, [PROMPT]))
            finally:
                late.close()
        print(f"a request after the unload: {refused.value.message()}")
        _collect(arrived, ids)
    finally:
        client.stop_stream()
        client.close()
    assert ids == expected  # every token of the in-flight stream arrived, unchanged
    _wait_state(repository, "t5_stream", "UNAVAILABLE")
    (entry,) = [e for e in repository.index() if e.name == "t5_stream"]
    assert entry.unloaded and entry.reason == "unloaded"

    code, output = _trb("models", "load", "t5_stream", "--url", server.http_url)
    assert code == 0, output
    client, arrived = _stream(server)
    ids = []
    try:
        _collect(arrived, ids)
    finally:
        client.stop_stream()
        client.close()
    assert ids == expected


def test_the_supervisor_leaves_a_model_unloaded_on_purpose_and_heals_it_once_loaded(server) -> None:
    repository = ModelRepository(server.http_url, server.admin_key)
    supervisor = Supervisor(server)
    repository.unload("t5")
    _wait_state(repository, "t5", "UNAVAILABLE")
    assert supervisor.check_once() == []
    assert supervisor.unloaded == {"t5"}
    assert next(e for e in repository.index() if e.name == "t5").state == "UNAVAILABLE"

    repository.load("t5")
    assert supervisor.check_once() == [] and supervisor.unloaded == set()
    os.kill(stub_processes(server.pid)["t5_0_0"], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while "t5_0_0" in stub_processes(server.pid):  # the server reaps the killed stub
        assert time.monotonic() < deadline
        time.sleep(0.05)
    (recovery,) = supervisor.check_once()
    assert (recovery.model, recovery.ok) == ("t5", True)
    assert "t5_0_0" in stub_processes(server.pid)
