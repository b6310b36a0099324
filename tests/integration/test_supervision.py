"""A python-backend stub killed under load: the model is reloaded and traffic recovers.

Requests the killed stub had admitted to its own queue (trb's admission bound) or was computing get
no answer from Triton 2.51 (the python backend answers only the requests of a running execute() with
an error), so the clients here carry a timeout, as production clients must; every failure is fast or
ends at that timeout, and new requests are answered once the model is reloaded.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from conftest import running_server

from model_repo_builder.client import embed_texts
from model_repo_builder.errors import InferenceError
from model_repo_builder.runtime.supervisor import Supervisor, expected_stubs, live_stubs, stub_processes

pytestmark = pytest.mark.integration

# What a recovery may take on 2 busy cores: noticing (≤ 1 interval) plus reloading MiniLM (~0.3 s
# measured here). Generous so a loaded CI machine cannot flip it.
RECOVERY_BOUND_S = 20.0
CLIENT_TIMEOUT_S = 3.0


def test_a_killed_stub_is_reloaded_while_clients_keep_sending(fp32_repo) -> None:
    with running_server(fp32_repo.repository) as server:
        names = expected_stubs(server.spec.repository, fp32_repo.name)  # one stub per instance
        assert live_stubs(server.pid) == names
        name = sorted(names)[0]
        supervisor = Supervisor(server, interval_s=0.5).start()
        outcomes: list[tuple[float, float, bool]] = []  # (sent at, took, ok)
        stop = threading.Event()

        def client() -> None:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    embed_texts(
                        fp32_repo.name,
                        ["a sentence under load"],
                        url=server.http_url,
                        timeout_s=CLIENT_TIMEOUT_S,
                    )
                    outcomes.append((started, time.monotonic() - started, True))
                except InferenceError:
                    outcomes.append((started, time.monotonic() - started, False))

        threads = [threading.Thread(target=client) for _ in range(2)]
        try:
            for thread in threads:
                thread.start()
            while len(outcomes) < 10:
                time.sleep(0.01)
            killed_at = time.monotonic()
            os.kill(stub_processes(server.pid)[name], signal.SIGKILL)
            deadline = killed_at + RECOVERY_BOUND_S + CLIENT_TIMEOUT_S
            # Recovered: traffic answered after the kill, and every instance's stub back.
            while time.monotonic() < deadline and not (
                any(ok and sent > killed_at + 0.1 for sent, _, ok in outcomes[-3:])
                and live_stubs(server.pid) == names
            ):
                time.sleep(0.05)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
            supervisor.stop()
        after = [(sent, took, ok) for sent, took, ok in outcomes if sent > killed_at]
        failed = [took for _, took, ok in after if not ok]
        recovered = next((sent for sent, _, ok in after if ok), None)
        assert supervisor.restarts() == {fp32_repo.name: 1}
        assert recovered is not None, "traffic did not recover"
        print(
            f"recovered {recovered - killed_at:.2f} s after the kill; {len(failed)} requests failed, "
            f"slowest failure {max(failed, default=0):.2f} s"
        )
        assert recovered - killed_at < RECOVERY_BOUND_S
        assert max(failed, default=0) < CLIENT_TIMEOUT_S + 2.0  # fast, or ended by the client's timeout
        assert live_stubs(server.pid) == names


def test_trb_status_shows_models_and_the_supervisors_restarts(fp32_repo) -> None:
    import json

    from click.testing import CliRunner

    from model_repo_builder.cli import main
    from model_repo_builder.runtime.status import state_file

    with running_server(fp32_repo.repository) as server:
        supervisor = Supervisor(server, interval_s=0.5, state_path=state_file(server.spec.http_port)).start()
        try:
            embed_texts(fp32_repo.name, ["counted once"], url=server.http_url)

            def status() -> dict:
                result = CliRunner().invoke(main, ["status", "--url", server.http_url, "--json"])
                assert result.exit_code == 0, result.output
                return json.loads(result.output)

            before = status()
            (model,) = before["models"]
            built_instances = fp32_repo.result.manifest.options["instances"]
            assert (model["name"], model["ready"], model["instances"], model["restarts"]) == (
                fp32_repo.name,
                True,
                built_instances,
                0,
            )
            assert model["successes"] >= 1 and model["pending"] == 0
            assert before["launcher"]["pid"] == server.pid
            name = sorted(expected_stubs(server.spec.repository, fp32_repo.name))[0]  # one of its instances
            os.kill(stub_processes(server.pid)[name], signal.SIGKILL)
            deadline = time.monotonic() + RECOVERY_BOUND_S
            restarts = 0
            while restarts < 1 and time.monotonic() < deadline:  # polls the state file the supervisor writes
                time.sleep(0.1)
                restarts = next(m["restarts"] for m in status()["models"] if m["name"] == fp32_repo.name)
            assert restarts == 1 == supervisor.restarts()[fp32_repo.name]
        finally:
            supervisor.stop()
    assert not state_file(server.spec.http_port).exists()
