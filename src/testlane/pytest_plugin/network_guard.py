"""Blocking network connections from unit-lane tests.

While a unit-lane test runs (setup, call, teardown), ``socket.socket.connect``/``connect_ex`` to
an internet address (IPv4/IPv6) raise :class:`NetworkBlockedError` naming the test, the host and the
port, and the fix. That covers every Python-level client (redis-py, httpx, asyncio and asyncpg,
urllib). psycopg connects inside libpq, in C, below Python's socket module, so its ``connect``
class methods are guarded too. Unix sockets stay allowed (multiprocessing, local IPC), and so do the
hosts in ``lanes.unit_allow_hosts``, and testlane's own background threads (``testlane-*``).
Every blocked attempt is also recorded on the test, so a
library that swallows the error cannot hide it: the test then fails in teardown.

Written here rather than taken from pytest-socket: that plugin blocks socket *creation* (breaking
libraries that create sockets they never connect) and its messages do not name the port; neither
sees libpq.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

__all__ = ["NetworkBlockedError", "attempts_key", "network_blocked"]

attempts_key = pytest.StashKey[list[str]]()

_LOCAL_ALIASES = {
    "localhost": {"127.0.0.1", "::1", "localhost"},
    "127.0.0.1": {"127.0.0.1", "localhost"},
    "::1": {"::1", "localhost"},
}


class NetworkBlockedError(RuntimeError):
    """Raised when a unit-lane test tries to open a network connection."""


def _allowed(host: str, allow: list[str]) -> bool:
    # testlane's own background threads (pool workers) serve the integration lane, not the test.
    if threading.current_thread().name.startswith("testlane-"):
        return True
    return any(host == entry or host in _LOCAL_ALIASES.get(entry, ()) for entry in allow)


# Ports of the databases and caches testlane serves: a unit test reaching one belongs to the integration lane.
_SERVICE_PORTS = frozenset({"5432", "6379", "3306"})


def _message(nodeid: str, target: str) -> str:
    port = target.split(" ", 1)[0].rsplit(":", 1)[-1]
    service = "PostgreSQL" in target or "Unix socket" in target or port in _SERVICE_PORTS
    allow = (
        ""
        if service
        else " A local non-database service the unit lane may reach: "
        '[tool.testlane.lanes] unit_allow_hosts = ["127.0.0.1"].'
    )
    return (
        f"{nodeid} tried to connect to {target} from the unit lane, which never touches real services. "
        "If this test needs the service, it is an integration test: list its files in "
        '[tool.testlane.lanes] integration_patterns (e.g. ["tests/*"]; `testlane run` makes every test an '
        "integration test until you set it), mark it @pytest.mark.integration, or move it to tests/integration/ "
        "or a *_it.py file. Otherwise use a fake (or respx/an in-process transport for HTTP)." + allow
    )


@contextlib.contextmanager
def network_blocked(item: pytest.Item, allow: list[str]) -> Iterator[None]:
    attempts = item.stash.setdefault(attempts_key, [])

    def check(address: Any, family: int) -> None:
        if family not in (socket.AF_INET, socket.AF_INET6) or not isinstance(address, tuple):
            return
        host, port = str(address[0]), address[1]
        if _allowed(host, allow):
            return
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        attempts.append(target)
        raise NetworkBlockedError(_message(item.nodeid, target))

    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex

    def connect(self: socket.socket, address: Any) -> None:
        check(address, self.family)
        return original_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(address, self.family)
        return original_connect_ex(self, address)

    patches: list[tuple[Any, str, Any]] = [
        (socket.socket, "connect", connect),
        (socket.socket, "connect_ex", connect_ex),
    ]
    patches += _psycopg_patches(item, allow, attempts)
    missing = object()  # socket.socket inherits connect/connect_ex from the C class: shadow, then delete
    saved = [(owner, name, owner.__dict__.get(name, missing)) for owner, name, _ in patches]
    for owner, name, replacement in patches:
        setattr(owner, name, replacement)
    try:
        yield
    finally:
        for owner, name, value in saved:
            if value is missing:
                delattr(owner, name)
            else:
                setattr(owner, name, value)


def _psycopg_patches(item: pytest.Item, allow: list[str], attempts: list[str]) -> list[tuple[Any, str, Any]]:
    psycopg = sys.modules.get("psycopg")
    if psycopg is None:
        return []
    from psycopg.conninfo import conninfo_to_dict

    def target_of(conninfo: str, kwargs: dict[str, Any]) -> tuple[str, str]:
        try:
            params = conninfo_to_dict(conninfo, **kwargs)
        except Exception:
            return "postgres", "?"
        return str(params.get("host") or "localhost"), str(params.get("port") or 5432)

    def guard(conninfo: str, kwargs: dict[str, Any]) -> None:
        host, port = target_of(conninfo, kwargs)
        if _allowed(host, allow):
            return
        kind = " (Unix socket)" if host.startswith("/") else " (PostgreSQL, via libpq)"
        target = f"{host}:{port}{kind}"
        attempts.append(target)
        raise NetworkBlockedError(_message(item.nodeid, target))

    sync_connect = psycopg.Connection.__dict__["connect"].__func__
    async_connect = psycopg.AsyncConnection.__dict__["connect"].__func__

    def connect(cls: Any, /, conninfo: str = "", **kwargs: Any) -> Any:
        guard(conninfo, kwargs)
        return sync_connect(cls, conninfo, **kwargs)

    async def aconnect(cls: Any, /, conninfo: str = "", **kwargs: Any) -> Any:
        guard(conninfo, kwargs)
        return await async_connect(cls, conninfo, **kwargs)

    bound: Any = psycopg.__dict__.get("connect")  # `psycopg.connect` is `Connection.connect`, bound at import

    def module_connect(conninfo: str = "", **kwargs: Any) -> Any:
        guard(conninfo, kwargs)
        return bound(conninfo, **kwargs)

    patches: list[tuple[Any, str, Any]] = [
        (psycopg.Connection, "connect", classmethod(connect)),
        (psycopg.AsyncConnection, "connect", classmethod(aconnect)),
    ]
    if bound is not None:
        patches.append((psycopg, "connect", module_connect))
    return patches
