"""testlane: a real integration-test lane for Python web backends.

The public API. Names load lazily, so ``import testlane`` (and the pytest plugin)
stays cheap; ``testlane.__all__`` lists everything public. Per-test isolation as plain
Python lives in :mod:`testlane.db` (``from testlane import db``); the web harness (live server,
WebSocket client, strict HTTP mocks, fake streams, spies, seeding) in :mod:`testlane.web`; the
seam kit (races, lock gates, kills, stalls, eventually, repeat) in :mod:`testlane.seams`.
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
    "SeamError": "testlane.core.errors",
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
    # seams
    "LockGate": "testlane.seams.gate",
    "Pause": "testlane.seams.pause",
    "RaceOutcome": "testlane.seams.race",
    "RaceResult": "testlane.seams.race",
    "SeamIteration": "testlane.seams.repeat",
    "assert_exactly_one": "testlane.seams.race",
    "assert_no_errors": "testlane.seams.race",
    "assert_winners": "testlane.seams.race",
    "async_race": "testlane.seams.race",
    "eventually": "testlane.seams.eventually",
    "eventually_passes": "testlane.seams.eventually",
    "kill_connection": "testlane.seams.kill",
    "kill_process": "testlane.seams.kill",
    "lock_gate": "testlane.seams.gate",
    "paused": "testlane.seams.pause",
    "race": "testlane.seams.race",
    "seam": "testlane.seams.repeat",
    "stop_thread": "testlane.seams.kill",
    "terminate_backend": "testlane.seams.kill",
}

__all__ = sorted(_EXPORTS)


def _mask_credentials_in_the_log() -> None:
    from testlane.core.logs import install_redaction

    install_redaction()


_mask_credentials_in_the_log()


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
        SeamError,
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
    from testlane.seams.eventually import eventually, eventually_passes
    from testlane.seams.gate import LockGate, lock_gate
    from testlane.seams.kill import kill_connection, kill_process, stop_thread, terminate_backend
    from testlane.seams.pause import Pause, paused
    from testlane.seams.race import (
        RaceOutcome,
        RaceResult,
        assert_exactly_one,
        assert_no_errors,
        assert_winners,
        async_race,
        race,
    )
    from testlane.seams.repeat import SeamIteration, seam
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
