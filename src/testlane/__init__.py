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

# What users touch: the values testlane's fixtures and `testlane.db` hand them (to annotate them), the web
# harness docs/web.md imports from here, and the errors they may catch. Internals (the service stack, run
# context, pools, templates) are imported from their own modules; the seam kit from `testlane.seams`.
_EXPORTS: dict[str, str] = {
    # errors
    "ConfigError": "testlane.core.errors",
    "DatabaseError": "testlane.core.errors",
    "LaneError": "testlane.core.errors",
    "MigrationError": "testlane.core.errors",
    "SeamError": "testlane.core.errors",
    "ServiceError": "testlane.core.errors",
    "ServiceStartError": "testlane.core.errors",
    "TestlaneError": "testlane.core.errors",
    "UnsafeDatabaseError": "testlane.core.errors",
    "WaitTimeout": "testlane.core.waiting",
    # what the fixtures hand out: `testlane_settings`, `postgres`, `valkey`, `mariadb`, `pg_database`,
    # `pg_conn` and `mysql_conn` in transaction isolation, `mysql_database`
    "Settings": "testlane.core.config",
    "MariaDbServer": "testlane.services.mariadb",
    "PostgresServer": "testlane.services.postgres",
    "ValkeyServer": "testlane.services.valkey",
    # ... and `nats`, `jetstream`, `rabbitmq`, `rabbitmq_vhost`, `mqtt`, `mqtt_namespace`, `s3`, `s3_bucket`
    "NatsServer": "testlane.services.nats",
    "JetStreamLease": "testlane.services.nats_isolation",
    "RabbitMqServer": "testlane.services.rabbitmq",
    "RabbitMqVhost": "testlane.pytest_plugin.rabbitmq",
    "MqttServer": "testlane.services.mqtt",
    "MqttNamespace": "testlane.services.mqtt_isolation",
    "S3Server": "testlane.services.s3",
    "S3Bucket": "testlane.databases.s3_isolation",
    "ImplicitCommitError": "testlane.databases.mariadb.transaction",
    "MysqlSavepointConnection": "testlane.databases.mariadb.transaction",
    "MysqlTestDatabase": "testlane.databases.mariadb.testdb",
    "SavepointConnection": "testlane.databases.transaction",
    "TestDatabase": "testlane.databases.testdb",
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

__all__ = [  # a literal list: type checkers read it to know what `from testlane import X` may import
    "ConfigError",
    "DatabaseError",
    "FakeStream",
    "FakeStreamError",
    "HttpMock",
    "ImplicitCommitError",
    "JetStreamLease",
    "LaneError",
    "LiveServer",
    "MariaDbServer",
    "MigrationError",
    "MqttNamespace",
    "MqttServer",
    "MysqlSavepointConnection",
    "MysqlTestDatabase",
    "NatsServer",
    "PostgresServer",
    "RabbitMqServer",
    "RabbitMqVhost",
    "S3Bucket",
    "S3Server",
    "SavepointConnection",
    "SeamError",
    "ServiceError",
    "ServiceStartError",
    "Settings",
    "Spies",
    "TestDatabase",
    "TestlaneError",
    "UnmockedRequestError",
    "UnsafeDatabaseError",
    "ValkeyServer",
    "WaitTimeout",
    "WsClient",
    "WsClosed",
    "WsConnectError",
    "WsTimeout",
    "aseed",
    "fake_stream",
    "seed",
]


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
    # The public API and the module's own dunders: not the helpers this module imports for itself.
    return sorted([*__all__, *(name for name in globals() if name.startswith("__"))])


if TYPE_CHECKING:
    from testlane.core.config import Settings
    from testlane.core.errors import (
        ConfigError,
        DatabaseError,
        LaneError,
        MigrationError,
        SeamError,
        ServiceError,
        ServiceStartError,
        TestlaneError,
        UnsafeDatabaseError,
    )
    from testlane.core.waiting import WaitTimeout
    from testlane.databases.mariadb.testdb import MysqlTestDatabase
    from testlane.databases.mariadb.transaction import ImplicitCommitError, MysqlSavepointConnection
    from testlane.databases.s3_isolation import S3Bucket
    from testlane.databases.testdb import TestDatabase
    from testlane.databases.transaction import SavepointConnection
    from testlane.pytest_plugin.rabbitmq import RabbitMqVhost
    from testlane.services.mariadb import MariaDbServer
    from testlane.services.mqtt import MqttServer
    from testlane.services.mqtt_isolation import MqttNamespace
    from testlane.services.nats import NatsServer
    from testlane.services.nats_isolation import JetStreamLease
    from testlane.services.postgres import PostgresServer
    from testlane.services.rabbitmq import RabbitMqServer
    from testlane.services.s3 import S3Server
    from testlane.services.valkey import ValkeyServer
    from testlane.web.factories import aseed, seed
    from testlane.web.live_server import LiveServer
    from testlane.web.mocks import HttpMock, UnmockedRequestError
    from testlane.web.spies import Spies
    from testlane.web.streams import FakeStream, FakeStreamError, fake_stream
    from testlane.web.websocket import WsClient, WsClosed, WsConnectError, WsTimeout
