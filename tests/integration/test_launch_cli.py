"""`trb launch` as an operator runs it: a real process, SIGTERM under load, the exit it makes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from model_repo_builder.client import embed_texts
from model_repo_builder.errors import InferenceError

pytestmark = pytest.mark.integration

DRAIN_BOUND_S = 30.0  # --exit-timeout below is 10 s; the rest is margin for 2 busy cores


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def test_sigterm_under_load_lets_in_flight_requests_finish_and_exits_zero(fp32_repo, free_ports) -> None:
    http, grpc, metrics = free_ports(3)
    command = [
        str(Path(sys.executable).with_name("trb")),
        "launch",
        str(fp32_repo.repository),
        "--http-port",
        str(http),
        "--grpc-port",
        str(grpc),
        "--metrics-port",
        str(metrics),
        "--exit-timeout",
        "10",
    ]
    launcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not _ready(http):
            assert launcher.poll() is None, launcher.stdout.read() if launcher.stdout else ""
            assert time.monotonic() < deadline, "trb launch was not ready in 120 s"
            time.sleep(0.2)
        results: list[tuple[float, str]] = []  # (sent at, outcome)
        stop = threading.Event()

        def client() -> None:
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    embed_texts(
                        fp32_repo.name, ["a sentence while the server stops"] * 8, url=f"127.0.0.1:{http}"
                    )
                    results.append((sent, "ok"))
                except InferenceError as error:
                    results.append((sent, str(error)))

        threads = [threading.Thread(target=client) for _ in range(4)]
        for thread in threads:
            thread.start()
        while sum(outcome == "ok" for _, outcome in results) < 20:
            time.sleep(0.01)
        signalled = time.monotonic()
        launcher.send_signal(signal.SIGTERM)
        code = launcher.wait(timeout=DRAIN_BOUND_S + 30)
        exited = time.monotonic() - signalled
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    output = launcher.stdout.read() if launcher.stdout else ""
    print(f"exit {code} {exited:.2f} s after SIGTERM")
    assert code == 0, output
    assert exited < DRAIN_BOUND_S
    assert "stopping: waiting for in-flight requests" in output
    # Every request is answered or cleanly refused; none is cut off with a server error mid-flight.
    failed = [outcome for _, outcome in results if outcome != "ok"]
    assert all("cannot reach" in outcome or "unavailable" in outcome.lower() for outcome in failed), failed[
        :3
    ]
    assert any(outcome == "ok" and sent > signalled - 1.0 for sent, outcome in results)


def _descendants(pid: int) -> set[int]:
    """Every process below `pid` (its children, theirs, …), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, stack = set(), [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.add(child)
            stack.append(child)
    return found


def _command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


ORPHAN_BOUND_S = 60.0  # each server's graceful exit (PyTriton's: 5 s) plus margin for 2 busy cores


def test_a_killed_launcher_leaves_no_server_sidecar_or_shared_memory_behind(
    tmp_path: Path, free_ports
) -> None:
    from model_repo_builder.build import build
    from model_repo_builder.spec import BuildSpec

    noop = Path(__file__).resolve().parents[2] / "examples" / "noop.py"
    built = build(
        BuildSpec(source="minilm", output=tmp_path / "repos", name="with-step", pre=(f"{noop}:identity",))
    )
    http, grpc, metrics = free_ports(3)
    command = [
        str(Path(sys.executable).with_name("trb")),
        "launch",
        str(built.repository),
        "--http-port",
        str(http),
        "--grpc-port",
        str(grpc),
        "--metrics-port",
        str(metrics),
    ]
    launcher = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not _ready(http):
            assert launcher.poll() is None and time.monotonic() < deadline, "trb launch was not ready"
            time.sleep(0.2)
        tree = _descendants(launcher.pid)
        servers = [pid for pid in tree if _command_name(pid) == "tritonserver"]
        assert len(servers) == 2  # trb's server and the sidecar's own PyTriton server
        launcher.kill()  # SIGKILL: no handler of trb's runs
        launcher.wait()
        deadline = time.monotonic() + ORPHAN_BOUND_S
        while any(_alive(pid) for pid in tree) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    left = {pid: Path(f"/proc/{pid}/cmdline").read_text()[:80] for pid in tree if _alive(pid)}
    assert not left, f"still running {ORPHAN_BOUND_S:.0f} s after the launcher was killed: {left}"
    # PyTriton names its regions after the process hosting its server: the sidecar's.
    regions = [
        name for name in os.listdir("/dev/shm") if any(name.startswith(f"pytrtion{pid}-") for pid in tree)
    ]
    assert not regions, f"shared memory left behind: {regions}"
