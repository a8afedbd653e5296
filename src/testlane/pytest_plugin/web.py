"""Fixtures of the web harness (see docs/web.md; the helpers themselves live in :mod:`testlane.web`).

Fixtures (function scope):

``live_server``   factory: ``live_server(app, **options)`` starts a :class:`~testlane.web.live_server.LiveServer`,
                  stopped (connections force-closed) after the test
``ws_client``     factory: ``ws_client(url, **options)`` opens a :class:`~testlane.web.websocket.WsClient`
                  (``ws_client.many(n, url)`` several), closed after the test
``http_mock``     a strict :class:`~testlane.web.mocks.HttpMock` (respx); an unmocked request fails the test,
                  even when the code under test swallowed the error
``frozen_time``   the clock frozen (time-machine) at 2024-01-01 12:00 UTC or ``@pytest.mark.frozen_time(instant)``;
                  ``.shift(seconds)``, ``.move_to(instant)``. For a moving clock use time-machine's ``time_machine``
``spy``           :class:`~testlane.web.spies.Spies`: ``spy(obj, "name")``, ``spy.stub(...)``, restored after the test

uvicorn, websockets, respx and time-machine are imported by the fixtures that use them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from testlane.web.live_server import LiveServer
    from testlane.web.mocks import HttpMock
    from testlane.web.spies import Spies
    from testlane.web.websocket import WsClient

__all__ = ["FROZEN_AT", "HINT_PROPERTY", "LiveServers", "WsClients"]

FROZEN_AT = dt.datetime(2024, 1, 1, 12, 0, tzinfo=dt.UTC)
# A line that explains a test's failure, recorded on the test item while it runs (``item.user_properties``:
# copied onto each of its reports, carried by pytest-xdist, written to JUnit XML). The reports show it
# with the test's failure, in every format.
HINT_PROPERTY = "testlane_hint"


Finalizer = Callable[[Callable[[], object]], None]


class LiveServers:
    """What the ``live_server`` fixture returns: ``live_server(app, **options)`` → a running server.

    Each server is stopped in the test's teardown in the order teardown undoes setup: a server started
    after the test's database fixtures is stopped before they are released, whatever the order in which
    the fixtures were requested.
    """

    def __init__(self, at_teardown: Finalizer) -> None:
        self._at_teardown = at_teardown

    def __call__(self, app: Any, **options: Any) -> LiveServer:
        from testlane.web.live_server import LiveServer

        server = LiveServer(app, **options).start()
        self._at_teardown(server.stop)
        return server


class WsClients:
    """What the ``ws_client`` fixture returns: ``ws_client(url)`` → an open client; ``.many(n, url)``.

    Clients are closed in the test's teardown, in reverse order of opening.
    """

    def __init__(self, at_teardown: Finalizer) -> None:
        self._at_teardown = at_teardown

    def __call__(self, url: str, **options: Any) -> WsClient:
        from testlane.web.websocket import WsClient

        client = WsClient.connect(url, **options)
        self._at_teardown(client.close)
        return client

    def many(self, n: int, url: str, **options: Any) -> list[WsClient]:
        """``n`` clients on ``url`` (for broadcast tests)."""
        return [self(url, **options) for _ in range(n)]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "frozen_time(instant): the instant at which the frozen_time fixture stops the clock"
    )


def _loopback_blocked(request: pytest.FixtureRequest) -> bool:
    from testlane.pytest_plugin.lanes import lane_of
    from testlane.pytest_plugin.plugin import plugin_of

    lanes = plugin_of(request.config).settings.lanes
    if lane_of(request.node) != "unit" or not lanes.block_network:
        return False
    return not any(host in lanes.unit_allow_hosts for host in ("127.0.0.1", "localhost"))


@pytest.fixture
def live_server(request: pytest.FixtureRequest) -> LiveServers:
    """Start ASGI apps on free ports: ``server = live_server(app)``; ``server.url``, ``server.ws_url``."""
    if _loopback_blocked(request):
        pytest.fail(
            f"{request.node.nodeid} uses live_server in the unit lane, which blocks connections to 127.0.0.1. "
            "A test that talks to a server over a socket is an integration test: mark it @pytest.mark.integration, "
            "or move it to tests/integration/ or a *_it.py file. To allow loopback in the unit lane instead: "
            '[tool.testlane.lanes] unit_allow_hosts = ["127.0.0.1"].',
            pytrace=False,
        )
    # Registered on the test item when each server starts (not when this fixture is set up), so it is
    # stopped before fixtures set up earlier — the database its app uses — are torn down.
    return LiveServers(request.node.addfinalizer)


@pytest.fixture
def ws_client(request: pytest.FixtureRequest) -> WsClients:
    """Open WebSocket clients: ``client = ws_client(f"{server.ws_url}/path")``; closed after the test."""
    return WsClients(request.node.addfinalizer)


@pytest.fixture
def http_mock(request: pytest.FixtureRequest) -> Iterator[HttpMock]:
    """A strict respx router: unmocked requests fail (naming the URL); loopback requests pass through."""
    from testlane.pytest_plugin.databases import outcome_key
    from testlane.web.mocks import HttpMock

    hints: list[str] = []

    def record(hint: str) -> None:
        # From the app's thread too (a live server): the failing test's report lists it, so a test that
        # failed on the app's 500 says which request was not mocked.
        hints.append(hint)
        request.node.user_properties.append((HINT_PROPERTY, hint))

    with HttpMock(on_unmocked=record) as mock:
        yield mock
    reports = request.node.stash.get(outcome_key, {})
    if mock.unmocked and not any(report.failed for report in reports.values()):
        pytest.fail(
            f"{request.node.nodeid} made HTTP requests that no http_mock route matches (the code under test "
            "swallowed the error):\n" + "\n".join(f"  {hint}" for hint in dict.fromkeys(hints)),
            pytrace=False,
        )


@pytest.fixture
def frozen_time(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The clock stopped (every thread, ``time.time`` and ``datetime.now``; not ``time.monotonic``).

    At 2024-01-01 12:00 UTC unless ``@pytest.mark.frozen_time(instant)`` says otherwise; returns
    time-machine's ``Coordinates`` (``.shift(seconds)``, ``.move_to(instant)``, ``.time()``).
    """
    import time_machine

    marker = request.node.get_closest_marker("frozen_time")
    instant = marker.args[0] if marker is not None and marker.args else FROZEN_AT
    with time_machine.travel(instant, tick=False) as coordinates:
        yield coordinates


@pytest.fixture
def spy() -> Iterator[Spies]:
    """Spies and stubs restored after the test: ``spy(obj, "name")``, ``spy.stub(obj, "name", return_value=...)``."""
    from testlane.web.spies import Spies

    spies = Spies()
    try:
        yield spies
    finally:
        spies.restore()
