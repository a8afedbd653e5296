"""Blocking network connections from unit-lane tests.

While a unit-lane test runs (setup, call, teardown), ``socket.socket.connect``/``connect_ex`` to
an internet address (IPv4/IPv6) raise :class:`NetworkBlockedError` naming the test, the host and the
port, and the fix. That covers every Python-level client (redis-py, httpx, asyncio and asyncpg,
urllib). psycopg and psycopg2 connect inside libpq, in C, below Python's socket module, so their
``connect`` functions are guarded too, with the target libpq would use (the conninfo, a service file,
``PGHOST``/``PGPORT``). Unix sockets stay allowed (multiprocessing, local IPC, a database reached
through a socket directory in ``PGHOST``), and so do the
hosts in ``lanes.unit_allow_hosts``, and testlane's own background threads (``testlane-*``).
Every blocked attempt is also recorded on the test, so a
library that swallows the error cannot hide it: the test then fails in teardown.

The patching itself (socket and libpq drivers) is :func:`testlane.services.egress.guarded`, shared with
the template build's guard.
"""

from __future__ import annotations

import contextlib

import pytest

from testlane.core.runenv import RunEnv
from testlane.services.egress import Allowlist, Attempt, guarded

__all__ = ["NetworkBlockedError", "attempts_key", "block_network", "check_swallowed", "lift_network_guard"]

attempts_key = pytest.StashKey[list[str]]()


class NetworkBlockedError(RuntimeError):
    """Raised when a unit-lane test tries to open a network connection."""


# Ports of the databases and caches testlane serves: a unit test reaching one belongs to the integration lane.
_SERVICE_PORTS = frozenset({"5432", "6379", "3306"})


def _detached(port: int | None) -> str | None:
    """The name of testlane's own detached service listening on ``port`` (``testlane services start``, its
    environment in ``TESTLANE_SERVICES_FILE``), or None. Read only when a connection is being refused."""
    path = RunEnv.current().services_file
    if not path or port is None:
        return None
    from testlane.services.stack import load_services_file  # the services layer: only for a refusal

    try:
        instances = load_services_file(path)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return next((inst.name for inst in instances.values() if inst.port == port), None)


# docs/lanes.md: the ways to run the integration lane.
RUN_THE_LANE = "run the integration lane: `pytest --it` (or `TESTLANE_IT=1 pytest`, or `testlane run`)"


def _message(nodeid: str, target: str, detached: str | None = None) -> str:
    endpoint = target.split(" ", 1)[0]
    port = endpoint.rsplit(":", 1)[-1]
    service = detached or "PostgreSQL" in target or "Unix socket" in target or port in _SERVICE_PORTS
    # That endpoint only: a whole host ("127.0.0.1") would open every server on it to the unit lane, databases too.
    allow = (
        ""
        if service
        else " A local non-database service the unit lane may reach: "
        f'[tool.testlane.lanes] unit_allow_hosts = ["{endpoint}"] (that port only).'
    )
    if detached:
        # Detached services (`eval "$(testlane services env)"`) and plain `pytest`: the unit lane only.
        return (
            f"{nodeid} tried to connect to {target}, testlane's detached {detached} (testlane services start), "
            "from the unit lane: plain `pytest` runs only the unit lane, which never touches real services, "
            f"detached ones included. To run this test against it, {RUN_THE_LANE}; a suite that declares no "
            "lanes then runs every test there. To keep a unit lane, list the integration tests' files in "
            "[tool.testlane.lanes] integration_patterns or mark them @pytest.mark.integration."
        )
    return (
        f"{nodeid} tried to connect to {target} from the unit lane, which never touches real services. "
        f"If this test needs the service, it is an integration test: {RUN_THE_LANE}, and list its files in "
        '[tool.testlane.lanes] integration_patterns (e.g. ["tests/*"]; `pytest --it` and `testlane run` make every '
        "test an integration test until you set it), mark it @pytest.mark.integration, or move it to "
        "tests/integration/ or a *_it.py file. Otherwise use a fake (or respx/an in-process transport for HTTP)."
        + allow
    )


class _SessionGuard:
    """The patches (socket, libpq drivers) of :func:`guarded`, put on at the first unit-lane test and left on
    while unit-lane tests follow one another, with the running test behind them (``item``; ``None`` between tests:
    every connection passes, as unpatched). Patching and unpatching ``socket.socket`` and the drivers around every
    test cost each test more than the rest of the guard; they come off before an integration-lane test, after the
    process's last test, and at the latest when pytest ends. Per test, only ``item`` changes: the allowlist is the
    session's, a test's attempts are recorded on it when there is one."""

    def __init__(self, allow: list[str]) -> None:
        self.item: pytest.Item | None = None
        self.allow = allow
        self.allowlist = Allowlist.of(allow)
        self._stack: contextlib.ExitStack | None = None

    def dispatch(self, host: str, port: int | None, via: str) -> None:
        __tracebackhide__ = True  # pytest shows the caller and the refusal, not the guard's frames
        item = self.item
        if item is None:
            return
        attempt = Attempt(host, port, via)
        if attempt.unix or self.allowlist.allows(host, port):
            return  # Unix sockets stay allowed in the unit lane (local IPC), libpq's (PGHOST=/dir) too
        target = attempt.describe()
        item.stash.setdefault(attempts_key, []).append(target)
        raise NetworkBlockedError(_message(item.nodeid, target, _detached(port)))

    def install(self) -> None:
        if self._stack is None:
            stack = contextlib.ExitStack()
            stack.enter_context(guarded(self.dispatch))
            self._stack = stack

    def remove(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()


_guard_key = pytest.StashKey[_SessionGuard]()


def lift_network_guard(config: pytest.Config) -> None:
    """Take the patches off (before an integration-lane test, after the last test); the next unit-lane test
    puts them back."""
    guard = config.stash.get(_guard_key, None)
    if guard is not None:
        guard.remove()


def block_network(item: pytest.Item, allow: list[str]) -> _SessionGuard:
    """Block ``item``'s connections (but to ``allow``) until the returned guard's ``item`` is set back to
    ``None``: lanes' ``pytest_runtest_protocol`` does, after the test."""
    guard = item.config.stash.get(_guard_key, None)
    if guard is None or guard.allow != allow:
        if guard is not None:
            guard.remove()
        guard = item.config.stash[_guard_key] = _SessionGuard(allow)
        item.config.add_cleanup(guard.remove)
    guard.install()
    guard.item = item
    return guard


def check_swallowed(item: pytest.Item) -> None:
    """After a test's teardown: a blocked connection that a library swallowed still fails the test (called by
    :mod:`testlane.pytest_plugin.runtest`)."""
    if attempts_key not in item.stash:  # the common case; `in`: a missing key's get raises and catches inside
        return
    attempts = item.stash[attempts_key]
    from testlane.pytest_plugin.databases import outcome_key

    if not any(report.failed for report in item.stash.get(outcome_key, {}).values()):
        pytest.fail(
            f"{item.nodeid} tried to connect to {', '.join(dict.fromkeys(attempts))} from the unit lane; the "
            "connection was blocked (and the error swallowed by the code under test). Use a fake, or move the "
            "test to the integration lane: @pytest.mark.integration, or list its files in "
            "[tool.testlane.lanes] integration_patterns.",
            pytrace=False,
        )
