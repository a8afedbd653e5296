"""testlane: a real integration-test lane for Python web backends.

The public API. Names load lazily, so ``import testlane`` (and the pytest plugin)
stays cheap; ``testlane.__all__`` lists everything public. Per-test isolation as plain
Python lives in :mod:`testlane.db` (``from testlane import db``); the web harness (live server,
WebSocket client, strict HTTP mocks, fake streams, spies, seeding) in :mod:`testlane.web`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # core
    "BinaryNotFoundError": "testlane.core.errors",
    "ConfigError": "testlane.core.errors",
    "DatabaseError": "testlane.core.errors",
    "ExtensionMissingError": "testlane.core.errors",
    "LaneError": "testlane.core.errors",
    "MigrationError": "testlane.core.errors",
    "PortUnavailableError": "testlane.core.errors",
    "PrivilegeError": "testlane.core.errors",
    "ServiceError": "testlane.core.errors",
    "ServiceStartError": "testlane.core.errors",
    "TestlaneError": "testlane.core.errors",
    "UnreachableError": "testlane.core.errors",
    "UnsafeDatabaseError": "testlane.core.errors",
    "Settings": "testlane.core.config",
    "load_settings": "testlane.core.config",
    "RunContext": "testlane.core.runtime",
    "WaitTimeout": "testlane.core.waiting",
    "wait_until": "testlane.core.waiting",
    # services
    "Instance": "testlane.services.instance",
    "MariaDbServer": "testlane.services.mariadb",
    "PostgresServer": "testlane.services.postgres",
    "Server": "testlane.services.base",
    "ServiceStack": "testlane.services.stack",
    "ValkeyServer": "testlane.services.valkey",
    "reap": "testlane.services.stack",
    # databases
    "ClonePool": "testlane.databases.pool",
    "ImplicitCommitError": "testlane.databases.mariadb.transaction",
    "MysqlClonePool": "testlane.databases.mariadb.pool",
    "MysqlSavepointConnection": "testlane.databases.mariadb.transaction",
    "MysqlTestDatabase": "testlane.databases.mariadb.testdb",
    "Lease": "testlane.databases.pool",
    "SavepointConnection": "testlane.databases.transaction",
    "SchemaDatabase": "testlane.databases.schema",
    "TemplateSpec": "testlane.databases.template",
    "TestDatabase": "testlane.databases.testdb",
    "ensure_template": "testlane.databases.template",
    # web harness
    "FakeStream": "testlane.web.streams",
    "FakeStreamError": "testlane.web.streams",
    "HttpMock": "testlane.web.mocks",
    "LiveServer": "testlane.web.live_server",
    "Spies": "testlane.web.spies",
    "UnmockedRequestError": "testlane.web.mocks",
    "WsClient": "testlane.web.websocket",
    "WsClosed": "testlane.web.websocket",
    "WsConnectError": "testlane.web.websocket",
    "WsTimeout": "testlane.web.websocket",
    "aseed": "testlane.web.factories",
    "fake_stream": "testlane.web.streams",
    "seed": "testlane.web.factories",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'testlane' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


if TYPE_CHECKING:
    from testlane.core.config import Settings, load_settings
    from testlane.core.errors import (
        BinaryNotFoundError,
        ConfigError,
        DatabaseError,
        ExtensionMissingError,
        LaneError,
        MigrationError,
        PortUnavailableError,
        PrivilegeError,
        ServiceError,
        ServiceStartError,
        TestlaneError,
        UnreachableError,
        UnsafeDatabaseError,
    )
    from testlane.core.runtime import RunContext
    from testlane.core.waiting import WaitTimeout, wait_until
    from testlane.databases.mariadb.pool import MysqlClonePool
    from testlane.databases.mariadb.testdb import MysqlTestDatabase
    from testlane.databases.mariadb.transaction import ImplicitCommitError, MysqlSavepointConnection
    from testlane.databases.pool import ClonePool, Lease
    from testlane.databases.schema import SchemaDatabase
    from testlane.databases.template import TemplateSpec, ensure_template
    from testlane.databases.testdb import TestDatabase
    from testlane.databases.transaction import SavepointConnection
    from testlane.services.base import Server
    from testlane.services.instance import Instance
    from testlane.services.mariadb import MariaDbServer
    from testlane.services.postgres import PostgresServer
    from testlane.services.stack import ServiceStack, reap
    from testlane.services.valkey import ValkeyServer
    from testlane.web.factories import aseed, seed
    from testlane.web.live_server import LiveServer
    from testlane.web.mocks import HttpMock, UnmockedRequestError
    from testlane.web.spies import Spies
    from testlane.web.streams import FakeStream, FakeStreamError, fake_stream
    from testlane.web.websocket import WsClient, WsClosed, WsConnectError, WsTimeout
