"""The integration lane: the real app on a live server, on the test's own Postgres database and Valkey database.

The app opens its own connections, so it gets the test's services through its settings factory
(``create_app(Settings(...))``) and the tests use ``database`` isolation, testlane's default: each
test has a private database cloned from the migrated template, a private logical Valkey database and a
pub/sub namespace of its own (``redis_channel_prefix``: channels are server-wide, databases do not isolate them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from chat.app import create_app
from chat.settings import Settings
from fastapi import FastAPI

from testlane import LiveServer, WsClient
from tests.fakes import FakeProvider


@pytest.fixture
def provider() -> FakeProvider:
    """The AI: a fake stream of "Hello", ", ", "world", "!" (override per test with parametrize)."""
    return FakeProvider()


@pytest.fixture
def settings(pg_url: str, redis_url: str, redis_channel_prefix: str) -> Settings:
    """The test's own database, logical Valkey database and pub/sub namespace (channels ignore databases)."""
    return Settings(database_url=pg_url, redis_url=redis_url, channel_prefix=redis_channel_prefix)


@pytest.fixture
def make_app(settings: Settings, provider: FakeProvider) -> Callable[[], FastAPI]:
    """A new app instance on the test's services (two instances: two servers sharing them)."""
    return lambda: create_app(settings, provider=provider)


@pytest.fixture
def server(live_server: Any, make_app: Callable[[], FastAPI]) -> LiveServer:
    server: LiveServer = live_server(make_app())
    return server


@pytest.fixture
def connect(ws_client: Any, server: LiveServer) -> Callable[..., WsClient]:
    """``connect()``: a client of ``server`` (or of ``connect(other_server)``), its welcome already read."""

    def open_client(to: LiveServer = server) -> WsClient:
        client: WsClient = ws_client(f"{to.ws_url}/chat-ws")
        client.wait_for_message({"type": "system", "message": "Connected"})
        return client

    return open_client
