"""Postgres plumbing the seam helpers share: reaching a server, and watching its backends.

A helper that needs "a connection to the server" accepts whatever the test has at hand: the
``pg_database`` fixture or ``testlane.db.database()`` (a ``TestDatabase``), the ``postgres`` fixture
(a ``PostgresServer``), a libpq URL, a zero-argument function returning a connection, or — where
the helper only reads — an open psycopg connection.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from testlane.core.errors import SeamError
from testlane.core.waiting import wait_until

if TYPE_CHECKING:
    from typing import TypeAlias

    import psycopg

    from testlane.databases.testdb import TestDatabase
    from testlane.services.postgres import PostgresServer

    # What the seam helpers' users pass (module doc); for type checkers only, so never evaluated at run time.
    # A source of new connections: pg_database / testlane.db.database(), the postgres fixture, a libpq URL, or a
    # zero-argument function returning a connection (of any row type).
    PgSource: TypeAlias = TestDatabase | PostgresServer | str | Callable[[], psycopg.Connection[object]]
    # Where a helper that only reads the server's state may also borrow an open connection.
    PgVia: TypeAlias = PgSource | psycopg.Connection[object]
    # A source of async connections: pg_database, the postgres fixture, a URL, or an async factory.
    AsyncPgSource: TypeAlias = (
        TestDatabase | PostgresServer | str | Callable[[], Awaitable[psycopg.AsyncConnection[object]]]
    )
    # A connection whose backend a helper acts on.
    PgConnection: TypeAlias = psycopg.Connection[object] | psycopg.AsyncConnection[object]

__all__ = [
    "admin_connection",
    "backend_alive",
    "backend_pid",
    "open_async_connection",
    "open_connection",
    "wait_backend_gone",
]


def _is_connection(obj: Any) -> bool:
    import psycopg

    return isinstance(obj, psycopg.Connection)


def open_connection(source: Any, *, autocommit: bool) -> psycopg.Connection[Any]:
    """A new psycopg connection from a URL, an object with ``connect(autocommit=...)``, or a factory."""
    import psycopg

    if isinstance(source, str):
        return psycopg.connect(source, autocommit=autocommit)
    if hasattr(source, "connect") and not _is_connection(source):
        conn: psycopg.Connection[Any] = source.connect(autocommit=autocommit)
        return conn
    if callable(source) and not _is_connection(source):
        conn = source()
        conn.autocommit = autocommit
        return conn
    raise SeamError(
        f"cannot open a connection from {source!r}",
        hint="pass pg_database, the postgres fixture, a postgresql:// URL, or a function returning a connection",
    )


async def open_async_connection(source: Any) -> psycopg.AsyncConnection[Any]:
    """A new autocommit async connection from a URL, an object with ``.url``, or an async factory."""
    import psycopg

    url = source if isinstance(source, str) else getattr(source, "url", None)
    if isinstance(url, str):
        return await psycopg.AsyncConnection.connect(url, autocommit=True)
    if callable(source):
        conn: psycopg.AsyncConnection[Any] = await source()
        await conn.set_autocommit(True)
        return conn
    raise SeamError(
        f"cannot open an async connection from {source!r}",
        hint="pass pg_database, a postgresql:// URL, or an async function returning a connection",
    )


@contextlib.contextmanager
def admin_connection(via: Any) -> Iterator[psycopg.Connection[Any]]:
    """A connection for reading the server's state: ``via`` itself if it is a connection, else a new one.

    A borrowed connection is left as it was found: if it was idle outside a transaction, the
    transaction our queries opened is rolled back.
    """
    if _is_connection(via):
        import psycopg

        idle = via.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        try:
            yield via
        finally:
            if idle and not via.autocommit and not via.closed:
                with contextlib.suppress(Exception):
                    via.rollback()
        return
    conn = open_connection(via, autocommit=True)
    try:
        yield conn
    finally:
        conn.close()


def backend_pid(conn: Any) -> int:
    """The server process id behind a psycopg connection (sync or async)."""
    try:
        return int(conn.info.backend_pid)
    except AttributeError:
        raise SeamError(
            f"{conn!r} is not a psycopg connection",
            hint="pass a psycopg (3) Connection/AsyncConnection, or the backend's pid as an int",
        ) from None


def backend_alive(admin: psycopg.Connection[Any], pid: int) -> bool:
    """True while ``pid`` is listed in ``pg_stat_activity`` (read afresh, even inside a transaction)."""
    admin.execute("SELECT pg_stat_clear_snapshot()")
    row = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return bool(row and row[0])


def wait_backend_gone(admin: psycopg.Connection[Any], pid: int, *, timeout: float, why: str) -> None:
    """Wait until backend ``pid`` has exited (its locks are released before it leaves pg_stat_activity)."""
    gone: Callable[[], bool] = lambda: not backend_alive(admin, pid)  # noqa: E731
    wait_until(gone, timeout=timeout, what=f"Postgres backend {pid} to exit ({why})")
