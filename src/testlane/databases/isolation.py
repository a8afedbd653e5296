"""Per-test isolation, one place for ``testlane.db`` and the pytest fixtures alike.

Each isolation mode is a small context manager over a :class:`contextlib.ExitStack`: entering it
builds the test's database step by step, each step registering its undo on the stack (so a step that
fails undoes the ones before it), and exiting undoes the test's work in the reverse order.

``database``     :class:`DatabaseIsolation` / :class:`MysqlDatabaseIsolation`: a clone leased from a
                 pool, given back at the end (or kept, when ``keep(db)`` says so)
``transaction``  :class:`TransactionIsolation` / :class:`MysqlTransactionIsolation`: the test inside an
                 outer transaction rolled back at the end, on a given database or on one of the above
``schema``       :class:`SchemaIsolation`: a migrated, throwaway schema (Postgres only: a MySQL schema
                 is a database)

``testlane.db`` enters them for one block (its own pool, its own database); the fixtures give them
the session's pools, per-worker databases and reused connections. :func:`connection` hands out
the connection of a test database (``pg_conn``, ``mysql_conn``) as a context manager, and
:func:`create_database` is the one place that creates a database and marks its owner on a shared
server. Errors are the drivers' own: the callers map them at their boundary
(:func:`testlane.services.driver_errors.driver_errors`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from testlane.core.errors import ConfigError
from testlane.databases.testdb import Isolation, TestDatabase

if TYPE_CHECKING:
    import psycopg
    import pymysql.connections

    from testlane.databases.mariadb.engine import MariaDbPool  # noqa: F401  # in a base class's string subscript
    from testlane.databases.mariadb.testdb import MysqlTestDatabase
    from testlane.databases.mariadb.transaction import MysqlSavepointConnection
    from testlane.databases.pool import ClonePool, Lease
    from testlane.databases.postgres_engine import PostgresPool  # noqa: F401  # in a base class's string subscript
    from testlane.databases.schema import SchemaDatabase
    from testlane.databases.transaction import Escape, SavepointConnection
    from testlane.services.mariadb import MariaDbServer
    from testlane.services.postgres import PostgresServer

__all__ = [
    "MODES",
    "DatabaseIsolation",
    "Isolated",
    "MysqlDatabaseIsolation",
    "MysqlTransactionIsolation",
    "SchemaIsolation",
    "TransactionIsolation",
    "connection",
    "create_database",
    "isolation_mode",
]

# The isolation modes each engine offers, in the order the error message lists them.
MODES: dict[str, tuple[Isolation, ...]] = {
    "postgres": ("database", "transaction", "schema"),
    "mariadb": ("database", "transaction"),
}
_ENGINE_NAMES = {"postgres": "PostgreSQL", "mariadb": "MariaDB/MySQL"}
# Why a mode is missing, said when that mode is the one asked for (a typo gets the list alone).
_WHY_NOT = {("mariadb", "schema"): " (a MySQL schema is a database)"}

DbT = TypeVar("DbT")
PoolT = TypeVar("PoolT", bound="ClonePool[Any, Any]")
ServerT = TypeVar("ServerT")


def isolation_mode(requested: object, engine: str, where: str) -> Isolation:
    """``requested`` (a marker's argument or the configured default) as one of ``engine``'s modes.

    Raises :class:`~testlane.core.errors.ConfigError` naming ``where`` (the test) and the modes there are:
    the same error, with the same wording, for every engine.
    """
    modes = MODES[engine]
    for mode in modes:
        if requested == mode:
            return mode
    raise ConfigError(
        f"{where}: isolation {requested!r} is not available for {_ENGINE_NAMES[engine]}"
        f"{_WHY_NOT.get((engine, str(requested)), '')}; use one of {', '.join(modes)}",
        hint='choose it per test with @pytest.mark.isolation("database"), or for the run with --isolation',
    )


def create_database(server: PostgresServer, name: str, template: str | None = None) -> None:
    """``CREATE DATABASE name [TEMPLATE template]`` and, on a shared server (the ``url`` backend), the owner
    record that lets a crashed run's databases be reaped (:mod:`testlane.databases.leftovers`)."""
    from testlane.databases.postgres_engine import PostgresDatabaseEngine

    with server.connect() as admin:
        PostgresDatabaseEngine(server, preconnect=False).create(admin, template, name)


class Isolated(Generic[DbT]):
    """One test's isolation: ``with`` it to get the test's database; leaving the block undoes the test."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()

    def _open(self, stack: contextlib.ExitStack) -> DbT:
        """Build the test's database, registering each step's undo on ``stack``."""
        raise NotImplementedError

    def __enter__(self) -> DbT:
        with contextlib.ExitStack() as stack:  # a failing step undoes the steps before it
            db = self._open(stack)
            self._stack = stack.pop_all()
        return db

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stack.close()  # the test's own error is never swallowed: nothing here returns True


def _keeps(keep: Callable[[DbT], bool] | None, db: DbT) -> bool:
    return keep is not None and keep(db)


class _PooledIsolation(Isolated[DbT], Generic[DbT, PoolT, ServerT]):
    """``database`` mode: a clone from ``pool``; ``keep(db)`` (true: keep the clone for inspection) at the end."""

    def __init__(self, pool: PoolT, server: ServerT, *, keep: Callable[[DbT], bool] | None = None) -> None:
        super().__init__()
        self.pool = pool
        self.server = server
        self.keep = keep

    def _database(self, lease: Lease[Any]) -> DbT:
        """The test database of ``lease`` (the engine's own class)."""
        raise NotImplementedError

    def _open(self, stack: contextlib.ExitStack) -> DbT:
        lease = self.pool.acquire()
        db = self._database(lease)
        stack.callback(lambda: self.pool.release(lease, keep=_keeps(self.keep, db)))
        return db


class DatabaseIsolation(_PooledIsolation[TestDatabase, "PostgresPool", "PostgresServer"]):
    """``database`` mode (Postgres): a clone from ``pool``, released at the end; kept when ``keep(db)``."""

    def _database(self, lease: Lease[Any]) -> TestDatabase:
        return TestDatabase(lease.name, lease.url, self.server, "database", lease=lease)


class TransactionIsolation(Isolated[TestDatabase]):
    """``transaction`` mode (Postgres): the test inside a :class:`SavepointConnection`'s outer transaction.

    ``database`` is a database's name, or an isolation entered first (``testlane.db.transaction`` over
    a private clone). ``connection(name)`` gives a connection reused across tests (the fixtures'); without
    it one is opened here and closed at the end. ``end(db)`` rolls the test back and says what escaped
    (default: ``end_test()``); its answer is ``db.extra["escaped"]``.
    """

    def __init__(
        self,
        server: PostgresServer,
        database: str | Isolated[TestDatabase],
        *,
        connection: Callable[[str], SavepointConnection] | None = None,
        end: Callable[[TestDatabase], Escape | None] | None = None,
    ) -> None:
        super().__init__()
        self.server = server
        self.database = database
        self.connection = connection
        self.end = end

    def _open(self, stack: contextlib.ExitStack) -> TestDatabase:
        from testlane.databases.transaction import SavepointConnection

        name = self.database if isinstance(self.database, str) else stack.enter_context(self.database).name
        url = self.server.dsn(name)
        if self.connection is not None:
            conn = self.connection(name)
        else:
            conn = SavepointConnection.connect(url, autocommit=False)
            stack.callback(conn.close)
            stack.callback(conn.rollback)
        db = TestDatabase(name, url, self.server, "transaction", savepoint_conn=conn)
        conn.begin_test()
        stack.callback(self._end, db, conn)
        return db

    def _end(self, db: TestDatabase, conn: SavepointConnection) -> None:
        db.extra["escaped"] = self.end(db) if self.end is not None else conn.end_test()


class SchemaIsolation(Isolated[TestDatabase]):
    """``schema`` mode (Postgres): ``schema`` (a :class:`SchemaDatabase` not created yet) migrated, and dropped
    at the end unless ``keep(db)``. ``create_database=True`` creates its database (empty) first and drops it
    at the end (``testlane.db.schema``)."""

    def __init__(
        self,
        schema: SchemaDatabase,
        *,
        create_database: bool = False,
        keep: Callable[[TestDatabase], bool] | None = None,
    ) -> None:
        super().__init__()
        self.schema = schema
        self.create_database = create_database
        self.keep = keep

    def _open(self, stack: contextlib.ExitStack) -> TestDatabase:
        from testlane.databases.template import drop_database

        schema = self.schema
        if self.create_database:
            create_database(schema.server, schema.database)

            def drop() -> None:
                with schema.server.connect() as admin:
                    drop_database(admin, schema.database)

            stack.callback(drop)
        schema.create()
        db = TestDatabase(schema.database, schema.url, schema.server, "schema", schema=schema)
        stack.callback(lambda: None if _keeps(self.keep, db) else schema.dispose())
        return db


class MysqlDatabaseIsolation(_PooledIsolation["MysqlTestDatabase", "MariaDbPool", "MariaDbServer"]):
    """``database`` mode (MariaDB/MySQL): a clone from ``pool``, given back (dropped) at the end.

    A database ``keep(db)`` keeps is released with ``keep=True``: the pool never drops it, so it outlives
    the run like a kept Postgres clone.
    """

    def _database(self, lease: Lease[Any]) -> MysqlTestDatabase:
        from testlane.databases.mariadb.testdb import MysqlTestDatabase

        return MysqlTestDatabase(lease.name, lease.url, self.server, "database", lease=lease)


class MysqlTransactionIsolation(Isolated["MysqlTestDatabase"]):
    """``transaction`` mode (MariaDB/MySQL): the test inside a new :class:`MysqlSavepointConnection`'s
    transaction, rolled back and closed at the end; ``db.extra["intact"]`` is False when an implicit
    commit let some of its work escape. ``database`` as for :class:`TransactionIsolation`."""

    def __init__(self, server: MariaDbServer, database: str | Isolated[MysqlTestDatabase]) -> None:
        super().__init__()
        self.server = server
        self.database = database

    def _open(self, stack: contextlib.ExitStack) -> MysqlTestDatabase:
        from testlane.databases.mariadb.testdb import MysqlTestDatabase
        from testlane.databases.mariadb.transaction import MysqlSavepointConnection

        name = self.database if isinstance(self.database, str) else stack.enter_context(self.database).name
        conn = MysqlSavepointConnection(**self.server.conninfo(name), autocommit=False)
        stack.callback(conn.close)
        conn.begin_test()
        db = MysqlTestDatabase(name, self.server.dsn(name), self.server, "transaction", savepoint_conn=conn)
        stack.callback(self._end, db, conn)
        return db

    @staticmethod
    def _end(db: MysqlTestDatabase, conn: MysqlSavepointConnection) -> None:
        db.extra["intact"] = conn.end_test()


@overload
def connection(db: TestDatabase) -> contextlib.AbstractContextManager[psycopg.Connection]: ...
@overload
def connection(db: MysqlTestDatabase) -> contextlib.AbstractContextManager[pymysql.connections.Connection]: ...


def connection(
    db: TestDatabase | MysqlTestDatabase,
) -> contextlib.AbstractContextManager[psycopg.Connection | pymysql.connections.Connection]:
    """The test database's connection (``pg_conn``, ``mysql_conn``; autocommit off): in ``transaction`` mode
    the rolled-back one (left open); a connection the pool opened ahead (Postgres, ``database`` mode), handed
    back still open at the end so the pool's reset reuses it; else a new one, closed at the end."""
    return _connection(db)


@contextlib.contextmanager
def _connection(db: TestDatabase | MysqlTestDatabase) -> Iterator[psycopg.Connection | pymysql.connections.Connection]:
    if db.savepoint_conn is not None:
        yield db.savepoint_conn
        return
    lease = db.lease
    if lease is not None and lease.conn is not None:  # opened ahead by the pool (Postgres, database mode)
        fallback: Callable[[], Any] = lambda: db.connect(autocommit=False)  # noqa: E731  # the lease's own type
        with lease.connection(fallback) as pooled:  # handed back for the reset
            yield pooled
        return
    conn = db.connect(autocommit=False)
    try:
        yield conn
    finally:
        with contextlib.suppress(Exception):  # a connection the server already closed is fine
            conn.close()
