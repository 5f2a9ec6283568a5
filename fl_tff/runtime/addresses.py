"""Addresses of remote TFF workers (`--workers`): parsed and checked for reachability before
a run starts."""

from __future__ import annotations

import socket
from collections.abc import Sequence



class WorkerUnreachableError(ConnectionError):
    """Nothing accepts connections at a worker address."""


def check_workers_reachable(addresses: Sequence[str], timeout: float = 5.0) -> None:
    """Raises WorkerUnreachableError naming the first address that refuses a TCP connection."""
    for address in addresses:
        host, _, port = address.rpartition(':')
        try:
            socket.create_connection((host, int(port)), timeout).close()
        except OSError as e:
            raise WorkerUnreachableError(
                f'no TFF worker at {address} ({e.strerror or e}); start workers with `python -m '
                'experiments.launch_workers` and pass the --workers= value it prints') from e


def parse_workers(text: str) -> list[str]:
    """"host:port,host:port" as a list; ValueError naming a malformed entry."""
    addresses = [a.strip() for a in text.split(',') if a.strip()]
    for address in addresses:
        host, sep, port = address.rpartition(':')
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f'{address!r} is not host:port (e.g. 127.0.0.1:8000)')
    if len(set(addresses)) != len(addresses):
        raise ValueError('the same worker is listed twice')
    return addresses
