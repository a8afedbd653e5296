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
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from testlane.core.config import Settings, load_settings
from testlane.core.runtime import new_run_id
from testlane.databases.guard import require_integration_lane, resolve_mariadb, resolve_postgres
from testlane.databases.leftovers import mark_owner
from testlane.databases.naming import require_testlane_database, worker_database_name, worker_id
from testlane.databases.pool import ClonePool
from testlane.databases.postgres_engine import PostgresDatabaseEngine, PostgresPool
from testlane.databases.redis_isolation import RedisLease, lease_database
from testlane.databases.schema import SchemaDatabase
from testlane.databases.template import TemplateSpec, drop_database, ensure_template
from testlane.databases.testdb import TestDatabase
from testlane.databases.transaction import SavepointConnection
from testlane.services.driver_errors import driver_errors

if TYPE_CHECKING:
    from testlane.databases.mariadb.testdb import MysqlTestDatabase
    from testlane.databases.mariadb.transaction import MysqlSavepointConnection
    from testlane.services.postgres import PostgresServer

__all__ = [
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


def spec(settings: Settings | None = None, **overrides: Any) -> TemplateSpec:
    """The template spec from settings, with ``migrations=``, ``seed=``, ``extensions=`` overrides."""
    settings = settings or load_settings()
    return TemplateSpec.from_settings(settings, **{k: v for k, v in overrides.items() if v is not None})


def _run_id(server: Any) -> str:
    run_id = server.instance.run_id
    return run_id if len(run_id) == 8 else new_run_id()


def _prepare(target: Any, what: str, allow: bool, allow_unmanaged: bool) -> PostgresServer:
    require_integration_lane(what, allow=allow)
    return resolve_postgres(target, allow_unmanaged=allow_unmanaged)  # type: ignore[no-any-return]


def template(
    target: Any,
    *,
    migrations: Any = None,
    seed: Any = None,
    extensions: Any = None,
    settings: Settings | None = None,
    allow: bool = False,
    allow_unmanaged: bool = False,
) -> str:
    """Build the migrated template on the server (once per content hash); return its name."""
    server = _prepare(target, "testlane.db.template()", allow, allow_unmanaged)
    return ensure_template(server, spec(settings, migrations=migrations, seed=seed, extensions=extensions))


@contextlib.contextmanager
def database(
    target: Any,
    *,
    migrations: Any = None,
    seed: Any = None,
    extensions: Any = None,
    settings: Settings | None = None,
    allow: bool = False,
    allow_unmanaged: bool = False,
) -> Iterator[TestDatabase]:
    """A private clone of the migrated template, dropped when the block ends."""
    server = _prepare(target, "testlane.db.database()", allow, allow_unmanaged)
    with driver_errors("testlane.db.database(): preparing a database"):
        name = ensure_template(server, spec(settings, migrations=migrations, seed=seed, extensions=extensions))
        clones = ClonePool(
            PostgresDatabaseEngine(server, preconnect=False), name, run_id=_run_id(server), worker=worker_id(), size=0
        )
        lease = clones.acquire()  # an empty pool clones on demand
    try:
        yield TestDatabase(lease.name, lease.url, server)  # the caller's errors pass through untranslated
    finally:
        with driver_errors(f"testlane.db.database(): dropping {lease.name}"):
            clones.close()
            with server.connect() as admin:
                drop_database(admin, lease.name)


@contextlib.contextmanager
def pool(
    target: Any,
    *,
    migrations: Any = None,
    seed: Any = None,
    extensions: Any = None,
    size: int = 4,
    workers: int = 2,
    settings: Settings | None = None,
    allow: bool = False,
    allow_unmanaged: bool = False,
) -> Iterator[PostgresPool]:
    """A started :class:`ClonePool` of the migrated template (``acquire()``/``release()``)."""
    server = _prepare(target, "testlane.db.pool()", allow, allow_unmanaged)
    name = ensure_template(server, spec(settings, migrations=migrations, seed=seed, extensions=extensions))
    clones = ClonePool(
        PostgresDatabaseEngine(server),
        name,
        run_id=_run_id(server),
        worker=worker_id(),
        size=size,
        workers=workers,
        drop_at_close=True,
    ).start()
    try:
        yield clones
    finally:
        clones.close()


@contextlib.contextmanager
def transaction(
    target: Any,
    *,
    migrations: Any = None,
    seed: Any = None,
    extensions: Any = None,
    settings: Settings | None = None,
    allow: bool = False,
    allow_unmanaged: bool = False,
) -> Iterator[SavepointConnection]:
    """A connection to a migrated database whose work (commits included) is rolled back at the end."""
    server = _prepare(target, "testlane.db.transaction()", allow, allow_unmanaged)
    with database(server, migrations=migrations, seed=seed, extensions=extensions, settings=settings, allow=True) as db:
        conn = SavepointConnection.connect(db.url, autocommit=False)
        try:
            conn.begin_test()
            yield conn
        finally:
            conn.end_test()
            conn.rollback()
            conn.close()


@contextlib.contextmanager
def schema(
    target: Any,
    *,
    migrations: Any = None,
    seed: Any = None,
    extensions: Any = None,
    database_name: str | None = None,
    settings: Settings | None = None,
    allow: bool = False,
    allow_unmanaged: bool = False,
) -> Iterator[SchemaDatabase]:
    """A migrated, throwaway schema (``withTestDb()``); in a fresh testlane database unless one is named."""
    server = _prepare(target, "testlane.db.schema()", allow, allow_unmanaged)
    template_spec = spec(settings, migrations=migrations, seed=seed, extensions=extensions)
    run_id = _run_id(server)
    own_db = database_name is None
    name = database_name or worker_database_name(run_id, worker_id(), f"s{new_run_id()[:4]}")
    require_testlane_database(name, allow_unmanaged=allow_unmanaged, action="use")
    if own_db:
        from psycopg import sql

        with server.connect() as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            if server.instance.backend == "url":
                mark_owner(admin, name, server)
    try:
        with SchemaDatabase(
            server, name, template_spec, run_id=run_id, worker=worker_id(), allow_unmanaged=allow_unmanaged
        ) as schema_db:
            yield schema_db
    finally:
        if own_db:
            with server.connect() as admin:
                drop_database(admin, name)


@contextlib.contextmanager
def redis(target: Any, *, allow: bool = False) -> Iterator[RedisLease]:
    """A leased logical database (flushed before and after) of a Valkey/Redis server."""
    import redis as redis_py

    require_integration_lane("testlane.db.redis()", allow=allow)
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


def _redis_address(target: Any) -> tuple[str, int, str | None]:
    from testlane.core.urls import ServiceUrl

    if isinstance(target, str):
        url = ServiceUrl.parse(target)
        return url.host or "127.0.0.1", url.port or 6379, url.password
    return target.host, target.port, target.instance.password


@contextlib.contextmanager
def mysql_database(
    target: Any,
    *,
    migrations: Any = None,
    settings: Settings | None = None,
    allow: bool = False,
    allow_unmanaged: bool = False,
) -> Iterator[MysqlTestDatabase]:
    """A private clone of the migrated MariaDB/MySQL template, dropped when the block ends."""
    from testlane.databases.mariadb.engine import MariaDbDatabaseEngine
    from testlane.databases.mariadb.template import ensure_template as ensure_mysql_template
    from testlane.databases.mariadb.template import spec_from_settings
    from testlane.databases.mariadb.testdb import MysqlTestDatabase

    require_integration_lane("testlane.db.mysql_database()", allow=allow)
    server = resolve_mariadb(target, allow_unmanaged=allow_unmanaged)
    with driver_errors("testlane.db.mysql_database(): preparing a database"):
        name = ensure_mysql_template(server, spec_from_settings(settings or load_settings(), migrations))
        clones = ClonePool(
            MariaDbDatabaseEngine(server), name, run_id=_run_id(server), worker=worker_id(), size=0, drop_at_close=True
        )
        lease = clones.acquire()  # an empty pool clones on demand
    try:
        yield MysqlTestDatabase(lease.name, lease.url, server, lease=lease)  # the caller's errors pass through
    finally:
        with driver_errors(f"testlane.db.mysql_database(): dropping {lease.name}"):
            clones.release(lease)  # not started: dropped now
            clones.close()


@contextlib.contextmanager
def mysql_transaction(
    target: Any,
    *,
    migrations: Any = None,
    settings: Settings | None = None,
    allow: bool = False,
    allow_unmanaged: bool = False,
) -> Iterator[MysqlSavepointConnection]:
    """A PyMySQL connection to a migrated MariaDB/MySQL database whose work (commits included) is rolled back."""
    from testlane.databases.mariadb.transaction import MysqlSavepointConnection

    require_integration_lane("testlane.db.mysql_transaction()", allow=allow)
    with mysql_database(
        target, migrations=migrations, settings=settings, allow=True, allow_unmanaged=allow_unmanaged
    ) as test_db:
        conn = MysqlSavepointConnection(**test_db.server.conninfo(test_db.name), autocommit=False)
        try:
            conn.begin_test()
            yield conn
        finally:
            conn.end_test()
            conn.close()
