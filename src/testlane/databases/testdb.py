"""The database a test got: what the ``pg_database`` fixture and ``testlane.db.database()`` return."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["TestDatabase"]


@dataclass
class TestDatabase:
    """A database testlane created for a test: its ``name``, ``url``, isolation mode, ``connect()``.

    In ``schema`` mode ``schema`` is the :class:`~testlane.databases.schema.SchemaDatabase` and URLs
    and connections put it on the search path; in ``transaction`` mode ``savepoint_conn`` is the
    connection whose work is rolled back.
    """

    __test__ = False

    name: str
    url: str
    server: Any
    isolation: str = "database"
    lease: Any = None
    savepoint_conn: Any = None
    schema: Any = None
    kept: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def connect(self, *, autocommit: bool = False) -> Any:
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
