"""Per-test database isolation as plain Python, for any runner (the pytest fixtures use the same parts).

Every helper takes a server (a :class:`~testlane.services.postgres.PostgresServer`, or the URL of
one testlane started) and refuses to run outside the integration lane (``TESTLANE_IT=1``) unless
``allow=True``, and refuses servers and databases testlane did not create unless
``allow_unmanaged=True``. Migration arguments default to ``[tool.testlane.db]``.

``template(server)``             build (once) the migrated template; returns its name
``database(server)``             a private clone of the template, dropped at the end
``pool(server)``                 a :class:`~testlane.databases.pool.ClonePool` of clones, filled ahead
``transaction(server)``          a connection whose work is rolled back at the end
``schema(server)``               a migrated, throwaway schema (the ``withTestDb()`` pattern); sync or async
``redis(server)``                a leased, flushed logical database of a Valkey/Redis server
``mysql_database(server)``       a private clone of the MariaDB/MySQL template, dropped at the end
``mysql_transaction(server)``    a PyMySQL connection to a migrated MariaDB database, rolled back at the end

The ``mysql_*`` helpers take a :class:`~testlane.services.mariadb.MariaDbServer` (or the URL of one
testlane knows) and default to ``[tool.testlane.mariadb]`` (``migrations``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from os import PathLike
from typing import TYPE_CHECKING, TypeAlias, TypedDict, TypeVar, Unpack, cast

from testlane.core.config import Settings, load_settings
from testlane.core.runenv import RunEnv
from testlane.core.runtime import new_run_id
from testlane.databases.guard import require_integration_lane, resolve_mariadb, resolve_postgres
from testlane.databases.isolation import (
    DatabaseIsolation,
    Isolated,
    MysqlDatabaseIsolation,
    MysqlTransactionIsolation,
    SchemaIsolation,
    TransactionIsolation,
)
from testlane.databases.naming import require_testlane_database, worker_database_name
from testlane.databases.pool import ClonePool
from testlane.databases.postgres_engine import PostgresDatabaseEngine, PostgresPool
from testlane.databases.redis_isolation import RedisLease, lease_database
from testlane.databases.schema import SchemaDatabase
from testlane.databases.template import TemplateSpec, ensure_template
from testlane.databases.testdb import TestDatabase
from testlane.databases.transaction import SavepointConnection
from testlane.services.driver_errors import driver_errors

if TYPE_CHECKING:
    import sqlalchemy

    from testlane.databases.mariadb.testdb import MysqlTestDatabase
    from testlane.databases.mariadb.transaction import MysqlSavepointConnection
    from testlane.databases.migrations import MigrationSource
    from testlane.services.base import Server
    from testlane.services.mariadb import MariaDbServer
    from testlane.services.postgres import PostgresServer
    from testlane.services.valkey import ValkeyServer

__all__ = [
    "Migration",
    "Migrations",
    "MysqlOptions",
    "Options",
    "TestDatabase",
    "database",
    "mysql_database",
    "mysql_transaction",
    "pool",
    "redis",
    "schema",
    "spec",
    "template",
    "transaction",
]

# One migration source as ``db.migrations`` takes it: a folder or file path, ``"module:attr"``, a SQLAlchemy
# ``MetaData``, a callable given a connection, or a source object. ``Migrations``: one, several, or None
# (the configured ones).
Migration: TypeAlias = "str | PathLike[str] | MigrationSource | sqlalchemy.MetaData | Callable[..., object]"
Migrations: TypeAlias = "Migration | Sequence[Migration] | None"
T = TypeVar("T")


class _Guards(TypedDict, total=False):
    settings: Settings | None
    allow: bool
    allow_unmanaged: bool


class Options(_Guards, total=False):
    """The keywords every Postgres helper takes (all optional).

    ``migrations``, ``seed``: the template's migration and seed sources (default: ``[tool.testlane.db]``);
    ``extensions``: extensions created in it first; ``settings``: default ``load_settings()``;
    ``allow``: run outside the integration lane (``TESTLANE_IT=1``); ``allow_unmanaged``: accept a
    server or database testlane did not create.
    """

    migrations: Migrations
    seed: Migrations
    extensions: Sequence[str] | None


class MysqlOptions(_Guards, total=False):
    """The keywords the ``mysql_*`` helpers take (all optional): ``migrations``, a folder of ``.sql``
    files (default: ``mariadb.migrations``), then ``settings``, ``allow``, ``allow_unmanaged`` as in
    :class:`Options`."""

    migrations: str | None


def spec(
    settings: Settings | None = None,
    *,
    migrations: Migrations = None,
    seed: Migrations = None,
    extensions: Sequence[str] | None = None,
) -> TemplateSpec:
    """The template spec from settings (default: ``load_settings()``), with the given overrides."""
    settings = settings or load_settings()
    given = {"migrations": migrations, "seed": seed, "extensions": extensions}
    return TemplateSpec.from_settings(settings, **{k: v for k, v in given.items() if v is not None})


def _run_id(server: Server) -> str:
    run_id = server.instance.run_id
    return run_id if len(run_id) == 8 else new_run_id()


def _prepare(target: PostgresServer | str, what: str, options: _Guards) -> PostgresServer:
    require_integration_lane(what, env=RunEnv.current(), allow=options.get("allow", False))
    allow_unmanaged = options.get("allow_unmanaged", False)
    return cast("PostgresServer", resolve_postgres(target, settings=load_settings(), allow_unmanaged=allow_unmanaged))


def _spec(options: Options) -> TemplateSpec:
    return spec(
        options.get("settings"),
        migrations=options.get("migrations"),
        seed=options.get("seed"),
        extensions=options.get("extensions"),
    )


@contextlib.contextmanager
def _own_work(cm: contextlib.AbstractContextManager[T], setup: str, teardown: Callable[[T], str]) -> Iterator[T]:
    """``cm`` entered and left as testlane's own work (a driver error becomes testlane's, see
    :mod:`testlane.services.driver_errors`); the caller's block runs outside, its errors untranslated."""
    stack = contextlib.ExitStack()
    with driver_errors(setup):
        value = stack.enter_context(cm)
    try:
        yield value
    finally:
        with driver_errors(teardown(value)):
            stack.close()


def template(target: PostgresServer | str, **options: Unpack[Options]) -> str:
    """Build the migrated template on the server (once per content hash); return its name."""
    server = _prepare(target, "testlane.db.template()", options)
    with driver_errors("testlane.db.template(): building the template"):
        return ensure_template(server, _spec(options))


@contextlib.contextmanager
def _private_clone(server: PostgresServer, template_name: str) -> Iterator[TestDatabase]:
    """A clone from a pool of its own (never started: it clones on demand), dropped when the block ends."""
    engine = PostgresDatabaseEngine(server, preconnect=False)
    clones = PostgresPool(
        engine, template_name, run_id=_run_id(server), worker=RunEnv.current().worker, size=0, drop_at_close=True
    )
    with contextlib.ExitStack() as stack:
        stack.callback(clones.close)
        yield stack.enter_context(DatabaseIsolation(clones, server))  # released (not started: dropped now), then closed


@contextlib.contextmanager
def database(target: PostgresServer | str, **options: Unpack[Options]) -> Iterator[TestDatabase]:
    """A private clone of the migrated template, dropped when the block ends.

    Preparing or dropping it raises testlane's :class:`~testlane.core.errors.ServiceError` or
    :class:`~testlane.core.errors.DatabaseError` (the driver's error as ``__cause__``).
    """
    server = _prepare(target, "testlane.db.database()", options)
    with driver_errors("testlane.db.database(): preparing a database"):
        name = ensure_template(server, _spec(options))
    with _own_work(
        _private_clone(server, name),
        "testlane.db.database(): preparing a database",
        lambda db: f"testlane.db.database(): dropping {db.name}",
    ) as db:
        yield db


@contextlib.contextmanager
def pool(
    target: PostgresServer | str, *, size: int = 4, workers: int = 2, **options: Unpack[Options]
) -> Iterator[PostgresPool]:
    """A started :class:`~testlane.databases.pool.ClonePool` of the migrated template (``acquire()``/
    ``release()``): ``size`` clones kept ready, filled by ``workers`` threads."""
    server = _prepare(target, "testlane.db.pool()", options)
    with driver_errors("testlane.db.pool(): building the template"):
        name = ensure_template(server, _spec(options))
    clones = PostgresPool(
        PostgresDatabaseEngine(server),
        name,
        run_id=_run_id(server),
        worker=RunEnv.current().worker,
        size=size,
        workers=workers,
        drop_at_close=True,
    ).start()
    try:
        yield clones
    finally:
        clones.close()


@contextlib.contextmanager
def transaction(target: PostgresServer | str, **options: Unpack[Options]) -> Iterator[SavepointConnection]:
    """A connection to a migrated database whose work (commits included) is rolled back at the end."""
    server = _prepare(target, "testlane.db.transaction()", options)
    resolved: Options = {**options, "allow": True, "allow_unmanaged": False}  # the server is resolved above
    with database(server, **resolved) as db:
        isolation = TransactionIsolation(server, db.name)
        with _own_work(
            _rolled_back(isolation),
            "testlane.db.transaction(): connecting",
            lambda _: "testlane.db.transaction(): rolling back",
        ) as conn:
            yield conn


@contextlib.contextmanager
def _rolled_back(isolation: TransactionIsolation) -> Iterator[SavepointConnection]:
    with isolation as db:
        assert db.savepoint_conn is not None, "transaction isolation has its savepoint connection"
        yield db.savepoint_conn


@contextlib.contextmanager
def schema(
    target: PostgresServer | str, *, database_name: str | None = None, **options: Unpack[Options]
) -> Iterator[SchemaDatabase]:
    """A migrated, throwaway schema (``withTestDb()``); in a fresh testlane database unless one is named."""
    server = _prepare(target, "testlane.db.schema()", options)
    template_spec = _spec(options)
    allow_unmanaged = options.get("allow_unmanaged", False)
    run_id = _run_id(server)
    name = database_name or worker_database_name(run_id, RunEnv.current().worker, f"s{new_run_id()[:4]}")
    require_testlane_database(name, allow_unmanaged=allow_unmanaged, action="use")
    schema_db = SchemaDatabase(
        server, name, template_spec, run_id=run_id, worker=RunEnv.current().worker, allow_unmanaged=allow_unmanaged
    )
    isolation = SchemaIsolation(schema_db, create_database=database_name is None)
    with _own_work(
        isolation,
        "testlane.db.schema(): preparing a schema",
        lambda db: f"testlane.db.schema(): dropping its schema in {db.name}",
    ) as db:
        assert db.schema is not None, "schema isolation has its schema"
        yield db.schema


@contextlib.contextmanager
def redis(target: ValkeyServer | str, *, allow: bool = False) -> Iterator[RedisLease]:
    """A leased logical database (flushed before and after) of a Valkey/Redis server."""
    import redis as redis_py

    require_integration_lane("testlane.db.redis()", env=RunEnv.current(), allow=allow)
    host, port, password = _redis_address(target)
    coordinator = redis_py.Redis(host=host, port=port, password=password, db=0)
    try:
        with driver_errors("testlane.db.redis(): leasing a database"):
            lease = lease_database(coordinator, host, port, password=password)
    except BaseException:
        coordinator.close()
        raise
    try:
        yield lease  # the caller's errors pass through untranslated
    finally:
        try:
            with driver_errors(f"testlane.db.redis(): flushing and returning database {lease.db}"):
                lease.release()
        finally:
            coordinator.close()


def _redis_address(target: ValkeyServer | str) -> tuple[str, int, str | None]:
    from testlane.core.urls import ServiceUrl

    if isinstance(target, str):
        url = ServiceUrl.parse(target)
        return url.host or "127.0.0.1", url.port or 6379, url.password
    return target.host, target.port, target.instance.password


def _prepare_mysql(target: MariaDbServer | str, what: str, options: _Guards) -> MariaDbServer:
    require_integration_lane(what, env=RunEnv.current(), allow=options.get("allow", False))
    allow_unmanaged = options.get("allow_unmanaged", False)
    return cast("MariaDbServer", resolve_mariadb(target, settings=load_settings(), allow_unmanaged=allow_unmanaged))


@contextlib.contextmanager
def _private_mysql_clone(
    server: MariaDbServer, migrations: str | None, settings: Settings | None
) -> Iterator[MysqlTestDatabase]:
    """A MariaDB clone from a pool of its own (never started: it clones on demand, drops on release)."""
    from testlane.databases.mariadb.engine import MariaDbDatabaseEngine
    from testlane.databases.mariadb.template import ensure_template as ensure_mysql_template
    from testlane.databases.mariadb.template import spec_from_settings

    name = ensure_mysql_template(server, spec_from_settings(settings or load_settings(), migrations))
    engine = MariaDbDatabaseEngine(server)
    clones = ClonePool(engine, name, run_id=_run_id(server), worker=RunEnv.current().worker, size=0, drop_at_close=True)
    with contextlib.ExitStack() as stack:
        stack.callback(clones.close)
        yield stack.enter_context(MysqlDatabaseIsolation(clones, server))


@contextlib.contextmanager
def mysql_database(target: MariaDbServer | str, **options: Unpack[MysqlOptions]) -> Iterator[MysqlTestDatabase]:
    """A private clone of the migrated MariaDB/MySQL template, dropped when the block ends.

    ``migrations``: a folder of ``.sql`` files (default: ``mariadb.migrations``). Preparing or dropping it
    raises testlane's :class:`~testlane.core.errors.ServiceError`/:class:`~testlane.core.errors.DatabaseError`.
    """
    server = _prepare_mysql(target, "testlane.db.mysql_database()", options)
    with _own_work(
        _private_mysql_clone(server, options.get("migrations"), options.get("settings")),
        "testlane.db.mysql_database(): preparing a database",
        lambda db: f"testlane.db.mysql_database(): dropping {db.name}",
    ) as db:
        yield db


@contextlib.contextmanager
def mysql_transaction(
    target: MariaDbServer | str, **options: Unpack[MysqlOptions]
) -> Iterator[MysqlSavepointConnection]:
    """A PyMySQL connection to a migrated MariaDB/MySQL database whose work (commits included) is rolled back."""
    require_integration_lane("testlane.db.mysql_transaction()", env=RunEnv.current(), allow=options.get("allow", False))
    in_lane: MysqlOptions = {**options, "allow": True}  # checked above
    with (
        mysql_database(target, **in_lane) as test_db,
        _own_work(
            _mysql_rolled_back(MysqlTransactionIsolation(test_db.server, test_db.name)),
            "testlane.db.mysql_transaction(): connecting",
            lambda _: "testlane.db.mysql_transaction(): rolling back",
        ) as conn,
    ):
        yield conn


@contextlib.contextmanager
def _mysql_rolled_back(isolation: Isolated[MysqlTestDatabase]) -> Iterator[MysqlSavepointConnection]:
    with isolation as db:
        assert db.savepoint_conn is not None, "transaction isolation has its savepoint connection"
        yield db.savepoint_conn
