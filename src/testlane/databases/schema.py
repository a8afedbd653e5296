"""Schema isolation: the ``withTestDb()`` pattern, a throwaway schema per use.

:class:`SchemaDatabase` creates a uniquely named schema (``tl_s_<run>_<worker>_<n>``) in a
testlane database, runs the migrations *into* that schema (its ``search_path`` points there), hands
out URLs and connections bound to it, and drops it on dispose. It is a context manager and an
async context manager, usable from any runner::

    from testlane import db

    with db.schema(postgres, migrations="migrations/") as test_db:
        with test_db.connect() as conn:
            conn.execute("INSERT INTO things ...")

Use it for query-correctness tests that want a migration-fresh schema without a database per test.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from types import TracebackType
from typing import TYPE_CHECKING, Self

from testlane.core.closing import Closing
from testlane.databases.build_scope import build_scope
from testlane.databases.migrations import Target
from testlane.databases.naming import require_testlane_database, schema_name
from testlane.databases.template import TemplateSpec

if TYPE_CHECKING:
    import psycopg

    from testlane.services.postgres import PostgresServer

__all__ = ["SchemaDatabase"]

log = logging.getLogger("testlane")

_counter = itertools.count(1)


class SchemaDatabase(Closing):
    """A migrated, throwaway schema in a testlane database (see module docstring)."""

    def __init__(
        self,
        server: PostgresServer,
        database: str,
        spec: TemplateSpec,
        *,
        run_id: str,
        worker: str,
        allow_unmanaged: bool = False,
    ) -> None:
        require_testlane_database(database, allow_unmanaged=allow_unmanaged, action="create a schema in")
        self.server = server
        self.database = database
        self.spec = spec
        self.schema = schema_name(run_id, worker, next(_counter))
        self._created = False

    @property
    def url(self) -> str:
        """libpq URL whose connections use the schema (``options=-csearch_path=...``)."""
        url = self.server.instance.service_url(self.database)
        return str(url.with_query({"options": f"-csearch_path={self.schema},public"}))

    def sqlalchemy_url(self, driver: str = "psycopg") -> str:
        return Target(self.server.dsn(self.database), self.schema).sqlalchemy_url(driver)

    def connect(self, *, autocommit: bool = False) -> psycopg.Connection:
        return Target(self.server.dsn(self.database), self.schema).connect(autocommit=autocommit)

    # -- lifecycle ---------------------------------------------------------------------------
    def create(self) -> Self:
        from psycopg import sql

        with self.server.connect(self.database) as conn:
            for ext in self.spec.extensions:
                conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(ext)))
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.schema)))
        self._created = True
        try:
            target = Target(self.server.dsn(self.database), self.schema)
            with build_scope(target, dict(self.spec.env), socket_dir=self.server.socket_dir) as scope:
                for source in (*self.spec.migrations, *self.spec.seed):
                    scope.apply(source, target)
        except BaseException:
            self.dispose()
            raise
        return self

    def dispose(self) -> None:
        """Drop the schema and everything in it."""
        if not self._created:
            return
        from psycopg import sql

        self._created = False
        with self.server.connect(self.database) as conn:
            # An open transaction still holding locks in the schema would block the drop forever.
            conn.execute("SET lock_timeout = '10s'")
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema)))

    def close(self) -> None:
        """The same as :meth:`dispose`: ``with schema_db:`` creates the schema, then disposes of it."""
        self.dispose()

    def __enter__(self) -> Self:
        return self.create()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.create)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.dispose)

    def __repr__(self) -> str:
        return f"<SchemaDatabase {self.database}.{self.schema}>"
