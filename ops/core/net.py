"""Loopback ports for the servers a process binds."""

from __future__ import annotations

import socket


def free_port(preferred: int | None = None) -> int:
    """A free loopback port: ``preferred`` if it is free (a restart keeps its address)."""
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            # As servers do: a port whose old connections linger in TIME_WAIT is free.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise AssertionError("unreachable: port 0 always binds")
