"""NATS/JetStream fixtures: the server, and a JetStream of its own per test.

Fixtures:

``nats``        (session) the run's :class:`~testlane.services.nats.NatsServer`: ``.url`` (the
                application's account), ``await .connect()``; started on demand from ``nats.backend``
``jetstream``   the test's JetStream (:class:`~testlane.services.nats_isolation.JetStreamLease`): an
                account of its own on testlane's server (``.subject_prefix`` empty), or prefixes on an
                existing server; ``.url``, ``await .connect()``, ``.subject(name)``, ``.stream(name)``.
                For the test's duration the project's ``[tool.testlane.env]`` variables that refer to
                ``nats`` carry the test's coordinates. Integration lane only.

nats-py loads only when a fixture is used.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from testlane.pytest_plugin.boundary import around_test

if TYPE_CHECKING:
    from testlane.services.nats import NatsServer
    from testlane.services.nats_isolation import JetStreamLease

__all__: list[str] = []


@pytest.fixture(scope="session")
def nats(pytestconfig: pytest.Config) -> Iterator[NatsServer]:
    """The run's NATS server (JetStream on; ``.url``, ``await .connect()``), started on demand."""
    from testlane.pytest_plugin.plugin import plugin_of

    yield plugin_of(pytestconfig).server("nats")


def lock_dir_of(server: NatsServer, data_root: Path) -> Path:
    """Where every process using ``server`` keeps its account leases: in the directory of the run that started
    the server (for a detached server, ``testlane services start``'s, shared by every session against it: a
    session's own run directory would let two sessions lease one account, and hide what a killed one left)."""
    return data_root / server.instance.run_id / f"{server.name}-leases"


@contextlib.contextmanager
def _lease(request: pytest.FixtureRequest) -> Iterator[JetStreamLease]:
    from testlane.core.runenv import RunEnv
    from testlane.core.urls import ServiceUrl
    from testlane.databases.guard import require_integration_lane
    from testlane.pytest_plugin.lease_env import mapped_for_test
    from testlane.pytest_plugin.plugin import plugin_of
    from testlane.services.nats import NatsServer
    from testlane.services.nats_isolation import lease_jetstream

    nodeid = request.node.nodeid
    require_integration_lane(f"{nodeid} (fixture jetstream)", env=RunEnv.current())
    plugin = plugin_of(request.config)
    server = plugin.server("nats")
    assert isinstance(server, NatsServer)
    lease = lease_jetstream(server, lock_dir_of(server, plugin.provider.context.data_root), owner=nodeid)
    url = ServiceUrl.parse(lease.url)
    overrides = {
        ("nats", "url"): lease.url,
        ("nats", "user"): url.user or "",
        ("nats", "password"): url.password or "",
        ("nats", "subject_prefix"): lease.subject_prefix,
        ("nats", "stream_prefix"): lease.stream_prefix,
    }
    try:
        with mapped_for_test(plugin, "nats", server, overrides):
            yield lease
    finally:
        lease.release(reset=not server.gone())


@pytest.fixture
def jetstream(request: pytest.FixtureRequest) -> Iterator[JetStreamLease]:
    """The test's own JetStream: an account of its own (or prefixes on an existing server), cleaned after."""
    __tracebackhide__ = True
    nodeid = request.node.nodeid
    yield from around_test(
        lambda: _lease(request),
        setup=f"{nodeid}: leasing a NATS account",
        teardown=lambda lease: f"{nodeid}: cleaning and returning its NATS account {lease.account or '(prefix)'}",
    )
