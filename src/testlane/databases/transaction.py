"""Transaction isolation: each test inside an outer transaction that is rolled back.

One migrated database per worker; per test, a connection (reused across tests) opens a
transaction and a savepoint. The application's ``commit()`` becomes "release the savepoint and
take a new one", its ``rollback()`` goes back to the savepoint, and at the end of the test the
whole outer transaction is rolled back: nothing the test wrote survives, at the cost of three
round trips (under 0.5 ms).

* psycopg: :class:`SavepointConnection`, a ``psycopg.Connection`` with those ``commit``/``rollback``;
* SQLAlchemy 2, sync and async: the documented recipe "Joining a Session into an External
  Transaction": a ``Session`` bound to a connection whose transaction the test owns, with
  ``join_transaction_mode="create_savepoint"`` (:func:`joined_session`, :func:`joined_async_session`).

Only connections made through these helpers are rolled back. A connection the application opens
itself from a URL commits for real; use ``database`` isolation for such code, or inject the
test's connection/session (see docs/isolation.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg

__all__ = ["SavepointConnection", "joined_async_session", "joined_session", "rolled_back"]

SAVEPOINT = "testlane_app"


class SavepointConnection(psycopg.Connection[Any]):
    """A psycopg connection whose ``commit``/``rollback`` act on a savepoint of an outer transaction.

    ``begin_test()`` makes sure the outer transaction and savepoint are open, ``end_test()`` rolls
    everything back and — in the same round trip — opens the next test's transaction, so a test costs
    one round trip of its own. psycopg decides whether to send ``BEGIN`` from libpq's transaction
    status, so the raw ``BEGIN``/``ROLLBACK`` sent here keep it in step.
    """

    _in_test = False

    def begin_test(self) -> None:
        if self.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            psycopg.Connection.execute(self, f"BEGIN; SAVEPOINT {SAVEPOINT}")
        self._in_test = True

    def end_test(self) -> None:
        self._in_test = False
        if not self.closed:
            # Advisory locks are session-level: a rollback does not release them.
            psycopg.Connection.execute(self, f"ROLLBACK; SELECT pg_advisory_unlock_all(); BEGIN; SAVEPOINT {SAVEPOINT}")

    def close(self) -> None:
        self._in_test = False
        super().close()

    def commit(self) -> None:
        if not self._in_test:
            return psycopg.Connection.commit(self)
        self.execute(f"RELEASE SAVEPOINT {SAVEPOINT}; SAVEPOINT {SAVEPOINT}")
        return None

    def rollback(self) -> None:
        if not self._in_test:
            return psycopg.Connection.rollback(self)
        self.execute(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}")
        return None

    def _set_autocommit(self, value: bool) -> None:
        if value and self._in_test:
            raise psycopg.ProgrammingError(
                "testlane: this connection runs inside the test's rolled-back transaction; autocommit would "
                "escape it. Use `database` isolation for code that needs autocommit."
            )
        super()._set_autocommit(value)


@contextlib.contextmanager
def rolled_back(conn: SavepointConnection) -> Iterator[SavepointConnection]:
    """Run a block (one test) inside ``conn``'s outer transaction, rolled back afterwards."""
    conn.begin_test()
    try:
        yield conn
    finally:
        conn.end_test()


@contextlib.contextmanager
def joined_session(engine: Any, **session_kwargs: Any) -> Iterator[Any]:
    """A SQLAlchemy ``Session`` whose commits are savepoints of a transaction rolled back at the end."""
    from sqlalchemy.orm import Session

    connection = engine.connect()
    transaction = connection.begin()
    session = Session(bind=connection, join_transaction_mode="create_savepoint", **session_kwargs)
    try:
        yield session
    finally:
        session.close()
        if transaction.is_active:
            transaction.rollback()
        connection.close()


@contextlib.asynccontextmanager
async def joined_async_session(engine: Any, **session_kwargs: Any) -> AsyncIterator[Any]:
    """The same for SQLAlchemy's ``AsyncEngine``/``AsyncSession``."""
    from sqlalchemy.ext.asyncio import AsyncSession

    connection = await engine.connect()
    transaction = await connection.begin()
    session = AsyncSession(bind=connection, join_transaction_mode="create_savepoint", **session_kwargs)
    try:
        yield session
    finally:
        await session.close()
        if transaction.is_active:
            await transaction.rollback()
        await connection.close()
