"""Free loopback ports for servers trb starts itself (demo, sweeps, tests, benchmarks)."""

from __future__ import annotations

import contextlib
import socket


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports the OS reports free; every socket stays bound until all are picked."""
    with contextlib.ExitStack() as stack:
        sockets = [
            stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)
        ]
        for sock in sockets:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def preferred_or_free_ports(preferred: tuple[int, ...], host: str = "127.0.0.1") -> list[int]:
    """`preferred` when all of them are free, otherwise fresh free ports (e.g. Triton's 8000-8002)."""
    with contextlib.ExitStack() as stack:
        try:
            for port in preferred:
                stack.enter_context(socket.socket()).bind((host, port))
        except OSError:
            return free_ports(len(preferred), host)
    return list(preferred)
