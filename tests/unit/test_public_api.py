"""The public API is what `testlane.__all__` says: the names listed here, every one resolving and documented;
internals are imported from their own modules."""

from __future__ import annotations

import inspect
import re
import shutil
import subprocess
import sys
import typing
from pathlib import Path
from types import ModuleType

import pytest

import testlane

REPO = Path(__file__).resolve().parents[2]

PUBLIC = [
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


def test_all_is_exactly_the_public_api() -> None:
    """Adding a name to the public API is a decision: it is made here, and in docs/ where users read it."""
    assert testlane.__all__ == PUBLIC
    for name in testlane.__all__:
        assert getattr(testlane, name) is not None, name


def test_internals_are_not_exported() -> None:
    for name in ("Instance", "RunContext", "Lease", "ServiceStack", "ClonePool", "reap", "race", "load_settings"):
        assert not hasattr(testlane, name), name
    assert [name for name in dir(testlane) if not name.startswith("_")] == PUBLIC


def test_every_public_name_is_documented() -> None:
    for name in testlane.__all__:
        assert getattr(testlane, name).__doc__, f"testlane.{name} has no docstring"


def test_unknown_attribute_is_an_attribute_error() -> None:
    try:
        testlane.no_such_thing  # noqa: B018
    except AttributeError as exc:
        assert "no_such_thing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_importing_the_plugin_does_not_import_drivers() -> None:
    heavy = ("psycopg", "redis", "sqlalchemy", "psutil", "rich", "uvicorn", "websockets", "respx", "httpx")
    heavy += ("time_machine", "polyfactory", "fastapi", "starlette")
    code = (
        "import importlib, sys, testlane.pytest_plugin.plugin as plugin\n"
        "for name in plugin.FEATURES:\n"
        "    importlib.import_module(name)\n"
        f"heavy = [m for m in {heavy!r} if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# `Any` left in what users touch, and why: each is what the library underneath has, so nothing is lost.
ALLOWED_ANY = {
    "MariaDbServer.connect(kwargs)": "passed to pymysql.connect, which types its own keywords",
    "PostgresServer.connect(kwargs)": "passed to psycopg.connect, whose keywords are Any",
    "ValkeyServer.client(kwargs)": "passed to redis.Redis, which types its own keywords",
    "NatsServer.connect(kwargs)": "passed to nats.connect, whose options are many keywords",
    "JetStreamLease.connect(kwargs)": "passed to nats.connect, whose options are many keywords",
    "RabbitMqServer.connect(kwargs)": "passed to pika.ConnectionParameters, untyped",
    "RabbitMqServer.connection_parameters(kwargs)": "passed to pika.ConnectionParameters, untyped",
    "RabbitMqVhost.connect(kwargs)": "passed to pika.ConnectionParameters, untyped",
    "RabbitMqVhost.connection_parameters(kwargs)": "passed to pika.ConnectionParameters, untyped",
    "MqttServer.client(kwargs)": "passed to paho.mqtt.client.Client, which types its own keywords",
    "MqttNamespace.client(kwargs)": "passed to paho.mqtt.client.Client, which types its own keywords",
    "S3Server.client(kwargs)": "passed to boto3's client(), untyped without boto3-stubs",
    "S3Server.client(return)": "a boto3 client, Any as boto3 returns it (its classes are generated at run time)",
    "S3Bucket.client(kwargs)": "passed to boto3's client(), untyped without boto3-stubs",
    "S3Bucket.client(return)": "a boto3 client, Any as boto3 returns it (its classes are generated at run time)",
    "WsClient.command(return)": "a decoded JSON message, Any as json.loads returns it",
    "WsClient.recv(return)": "a decoded JSON message, Any as json.loads returns it",
    "WsClient.wait_for_message(return)": "a decoded JSON message, Any as json.loads returns it",
    "WsClient.collect(return)": "decoded JSON messages, Any as json.loads returns them",
}
_ANY = re.compile(r"\bAny\b")
_CALLED = {"__init__", "__call__", "__enter__", "__exit__", "__aenter__", "__aexit__", "__anext__"}


def _annotations(label: str, function: object) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    # What callers see of an overloaded function: its overloads, not the implementation behind them.
    for each in typing.get_overloads(function) or [function]:  # type: ignore[arg-type]
        try:
            signature = inspect.signature(each)
        except (TypeError, ValueError):
            continue
        found += [(f"{label}({p.name})", str(p.annotation)) for p in signature.parameters.values()]
        found.append((f"{label}(return)", str(signature.return_annotation)))
    return found


def _public_annotations() -> list[tuple[str, str]]:
    """Every annotation of the public names: functions, and classes' public fields and methods (inherited
    from testlane's own classes too), as written (a string, with `from __future__ import annotations`)."""
    import testlane.seams

    found: list[tuple[str, str]] = []
    for module in (testlane, testlane.seams):
        found += _module_annotations(module)
    return found


def _module_annotations(module: ModuleType) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for name in module.__all__:
        obj = getattr(module, name)
        if not inspect.isclass(obj):
            found += _annotations(name, obj)
            continue
        seen: set[str] = set()
        for klass in obj.__mro__:
            if not klass.__module__.startswith("testlane"):
                continue
            for attr, annotation in vars(klass).get("__annotations__", {}).items():
                if not attr.startswith("_") and attr not in seen:
                    found.append((f"{name}.{attr}", str(annotation)))
                seen.add(attr)
            for attr, value in vars(klass).items():
                if attr in seen or (attr.startswith("_") and attr not in _CALLED):
                    continue
                seen.add(attr)
                value = value.fget if isinstance(value, property) else value
                value = value.__func__ if isinstance(value, staticmethod | classmethod) else value
                if callable(value):
                    label = name if attr == "__init__" else f"{name}.{attr}"
                    found += _annotations(label, value)
    return found


def test_no_any_in_the_public_api_but_where_the_library_underneath_has_it() -> None:
    with_any = {where for where, annotation in _public_annotations() if _ANY.search(annotation)}
    assert with_any == set(ALLOWED_ANY)


def test_no_any_in_the_signatures_of_testlane_db() -> None:
    """``testlane.db``'s helpers take typed server handles (or a URL) and typed migration sources."""
    from testlane import db

    found: list[tuple[str, str]] = []
    for name in db.__all__:
        value = getattr(db, name)
        if inspect.isfunction(value):
            found += _annotations(f"db.{name}", inspect.unwrap(value))
    assert found, "testlane.db has public functions"
    assert [where for where, annotation in found if _ANY.search(annotation)] == []


USER_CODE = """
from typing import assert_type

import psycopg
import pymysql.connections
import redis

from testlane import db, {names}
from testlane.databases.postgres_engine import PostgresPool
from testlane.databases.redis_isolation import RedisLease
from testlane.databases.schema import SchemaDatabase
from testlane.pytest_plugin.plugin import TestlanePlugin


def check(
    pg: TestDatabase,
    my: MysqlTestDatabase,
    plugin: TestlanePlugin,
    postgres: PostgresServer,
    valkey: ValkeyServer,
    mariadb: MariaDbServer,
) -> None:
    assert_type(pg.server, PostgresServer)
    assert_type(my.server, MariaDbServer)
    assert_type(pg.savepoint_conn, SavepointConnection | None)
    assert_type(my.savepoint_conn, MysqlSavepointConnection | None)
    assert_type(pg.connect(), psycopg.Connection)
    assert_type(my.connect(), pymysql.connections.Connection)
    assert_type(plugin.server("postgres"), PostgresServer)
    assert_type(plugin.server("valkey"), ValkeyServer)
    assert_type(plugin.server("mariadb"), MariaDbServer)
    assert_type(postgres.conninfo()["port"], int)
    assert_type(mariadb.connect(), pymysql.connections.Connection)
    assert_type(valkey.client(), redis.Redis)
    assert_type(db.template(postgres, migrations="migrations/", extensions=["citext"]), str)
    with db.database(postgres, migrations=["migrations/", "seed.sql"]) as test_db:
        assert_type(test_db, TestDatabase)
    with db.transaction("postgresql://127.0.0.1:5432/postgres") as conn:
        assert_type(conn, SavepointConnection)
    with db.schema(postgres, seed="seed/") as schema_db:
        assert_type(schema_db, SchemaDatabase)
    with db.pool(postgres, size=2) as clones:
        assert_type(clones, PostgresPool)
    with db.redis(valkey) as lease:
        assert_type(lease, RedisLease)
    with db.mysql_database(mariadb, migrations="sql/") as my_db:
        assert_type(my_db, MysqlTestDatabase)
    with db.mysql_transaction("mysql://root@127.0.0.1:3306/x") as my_conn:
        assert_type(my_conn, MysqlSavepointConnection)
"""


# A seam test as users write it: what the kit takes and gives typed. (Race functions are named, not lambdas:
# mypy types a lambda given to an overloaded function as `Callable[[Any], Any]` while it picks the overload,
# and --disallow-any-expr reports that, whatever the overloads say.)
SEAMS_USER_CODE = """
import subprocess
import threading
from typing import assert_type

import psycopg
from psycopg.rows import TupleRow

from testlane import PostgresServer, TestDatabase, ValkeyServer
from testlane.seams import {names}


def backend(c: psycopg.Connection[TupleRow]) -> int:
    return c.info.backend_pid


async def abackend(c: psycopg.AsyncConnection[TupleRow]) -> int:
    return c.info.backend_pid


def double(i: int) -> int:
    return i * 2


def label(i: int) -> str:
    return str(i)


def shout(text: str) -> str:
    return text.upper()


def check(
    pg: TestDatabase,
    postgres: PostgresServer,
    valkey: ValkeyServer,
    conn: psycopg.Connection,
    proc: subprocess.Popen[bytes],
) -> None:
    result = race(2, backend, connect=pg)
    assert_type(result, RaceResult[int])
    assert_type(race(2, backend, connect="postgresql://localhost/x"), RaceResult[int])
    assert_type(race(2, double), RaceResult[int])
    assert_type(race(2, shout, setup=label), RaceResult[str])
    assert_no_errors(result)
    assert_type(assert_exactly_one(result), RaceOutcome[int])
    assert_type(result.winners(), list[RaceOutcome[int]])
    with lock_gate(pg, "SELECT pg_advisory_xact_lock(%(key)s)", {{"key": 1}}) as gate:
        assert_type(gate, LockGate)
    with lock_gate(postgres, "SELECT 1", (1, "a")):
        pass
    assert_type(terminate_backend(conn, via=postgres), int)
    assert_type(terminate_backend(42, via="postgresql://localhost/x"), int)
    assert_type(kill_connection(conn, via=conn), int)
    assert_type(kill_process(proc), int | None)
    with paused(valkey) as pause:
        assert_type(pause, Pause)
    with paused(conn), paused(proc), paused(42):
        pass
    stop_thread(threading.Thread(), threading.Event())
    assert_type(eventually(lambda: "done"), str)
    eventually_passes(lambda: None)


async def acheck(pg: TestDatabase) -> None:
    assert_type(await async_race(2, abackend, connect=pg), RaceResult[int])


@seam(repeat=2)
def test_repeated(seam_iteration: SeamIteration) -> None:
    pass


assert_type(test_repeated(SeamIteration()), None)
"""


def _mypy_config_with_strict_user_modules(modules: list[str]) -> str:
    """The project's ``[tool.mypy]`` (one place for it: pyproject.toml) plus ``disallow_any_expr`` for ``modules``."""
    import tomllib

    mypy = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mypy"]
    mypy.pop("files", None)
    overrides = [*mypy.pop("overrides", []), {"module": modules, "disallow_any_expr": True}]
    lines = ["[tool.mypy]", *(f"{key} = {_toml(value)}" for key, value in mypy.items())]
    for override in overrides:
        lines += ["[[tool.mypy.overrides]]", *(f"{key} = {_toml(value)}" for key, value in override.items())]
    return "\n".join(lines) + "\n"


def _toml(value: object) -> str:
    import json

    return "true" if value is True else "false" if value is False else json.dumps(value)


@pytest.mark.timeout(120)  # mypy, run cold: ~15 s; warm from the cache `make typecheck` leaves: ~2 s
def test_user_code_type_checks_strictly_with_no_any(tmp_path: Path) -> None:
    """What a user's strict mypy sees: every public name importable (`__all__` is read by type checkers),
    and the values testlane hands out typed, none of them `Any` (`--disallow-any-expr`); the seam kit's
    too, whose arguments give lambdas their parameter types."""
    import testlane.seams

    code = tmp_path / "user_code.py"
    code.write_text(USER_CODE.format(names=", ".join(testlane.__all__)))
    seams = tmp_path / "user_seams.py"
    seams.write_text(SEAMS_USER_CODE.format(names=", ".join(testlane.seams.__all__)))
    # `--disallow-any-expr` for the user's modules only: testlane's own modules are then checked with the
    # project's options, so the cache `make typecheck` left (copied, never written to) makes this run warm.
    config = tmp_path / "pyproject.toml"
    config.write_text(_mypy_config_with_strict_user_modules(["user_code", "user_seams"]))
    cache = tmp_path / "mypy_cache"
    if (REPO / ".mypy_cache").is_dir():
        shutil.copytree(REPO / ".mypy_cache", cache)
    command = [sys.executable, "-m", "mypy", "--config-file", str(config), "--cache-dir", str(cache)]
    result = subprocess.run(
        [*command, str(code), str(seams)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr
