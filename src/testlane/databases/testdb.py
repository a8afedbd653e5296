"""The database a test got: what the ``pg_database`` fixture and ``testlane.db.database()`` return.

:class:`IsolatedDatabase` holds what Postgres and MariaDB share, generic over the server, the pool's lease and
the savepoint connection, so :class:`TestDatabase` (Postgres) and
:class:`~testlane.databases.mariadb.testdb.MysqlTestDatabase` are typed without ``Any`` and without importing a
driver at run time (the types are only named for type checkers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, Literal, TypeVar

if TYPE_CHECKING:
    import psycopg

    # PostgresLease, SavepointConnection, PostgresServer: named (as strings) in TestDatabase's base class, which
    # ruff does not read as type expressions.
    from testlane.databases.postgres_engine import PostgresLease  # noqa: F401
    from testlane.databases.schema import SchemaDatabase
    from testlane.databases.transaction import SavepointConnection  # noqa: F401
    from testlane.services.postgres import PostgresServer  # noqa: F401

__all__ = ["IsolatedDatabase", "Isolation", "TestDatabase"]

Isolation = Literal["database", "transaction", "schema"]
ServerT = TypeVar("ServerT")
LeaseT = TypeVar("LeaseT")
SavepointT = TypeVar("SavepointT")


@dataclass
class IsolatedDatabase(Generic[ServerT, LeaseT, SavepointT]):
    """What every engine's test database has: ``name``, ``url``, ``server``, ``isolation``; ``lease`` (the
    pool's, in ``database`` mode), ``savepoint_conn`` (the connection rolled back, in ``transaction`` mode),
    ``kept`` (kept after a failure for inspection) and ``extra`` (testlane's own notes on the test)."""

    __test__ = False

    name: str
    url: str
    server: ServerT
    isolation: Isolation = "database"
    lease: LeaseT | None = None
    savepoint_conn: SavepointT | None = None
    kept: bool = False
    extra: dict[str, object] = field(default_factory=dict)


@dataclass
class TestDatabase(IsolatedDatabase["PostgresServer", "PostgresLease", "SavepointConnection"]):
    """A Postgres database testlane created for a test: its ``name``, ``url``, isolation mode, ``connect()``.

    In ``schema`` mode ``schema`` is the :class:`~testlane.databases.schema.SchemaDatabase` and URLs
    and connections put it on the search path; in ``transaction`` mode ``savepoint_conn`` is the
    connection whose work is rolled back.
    """

    __test__ = False

    schema: SchemaDatabase | None = None

    def connect(self, *, autocommit: bool = False) -> psycopg.Connection:
        """A new psycopg connection (in ``schema`` mode bound to the schema)."""
        if self.schema is not None:
            return self.schema.connect(autocommit=autocommit)
        return self.server.connect(self.name, autocommit=autocommit)

    def sqlalchemy_url(self, driver: str = "psycopg") -> str:
        """The URL for SQLAlchemy with ``driver`` (``psycopg``, ``asyncpg``)."""
        if self.schema is not None:
            return str(self.schema.sqlalchemy_url(driver))
        from testlane.core.urls import ServiceUrl

        return str(ServiceUrl.parse(self.url).for_sqlalchemy(driver))
