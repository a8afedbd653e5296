"""Lock gates: make racing transactions meet inside Postgres, so an interleaving is certain, not likely.

A thread barrier releases callers together, but a check-then-act bug (``SELECT`` then ``DELETE``)
only shows when *both* checks run before either act — which depends on scheduling. A gate removes
the luck: it holds, in its own open transaction, the lock the racers' writes need (a row locked
``FOR UPDATE``, an uncommitted row with the contended key, an advisory lock); every racer runs its
reads and then queues on that lock; once ``n`` of them wait, the gate rolls back and they proceed
together, from the same point. A correct ``DELETE ... RETURNING`` or ``INSERT ... ON CONFLICT``
then still yields exactly one winner; the check-then-act variant yields two — every time::

    with lock_gate(pg_database, "SELECT 1 FROM jobs WHERE id = %s FOR UPDATE", [job_id]) as gate:
        result = race(2, lambda conn: claim(conn, job_id), connect=pg_database,
                      during=lambda: gate.open(when_waiting=2))
    assert_exactly_one(result)

Waiting is counted from ``pg_blocking_pids``, transitively (the second racer on a row usually
waits for the first, not for the gate). Choose a gate statement that blocks the racers' *writes*
but not their reads: ``FOR UPDATE`` blocks ``UPDATE``/``DELETE``/``FOR UPDATE`` but not plain
``SELECT``; an uncommitted ``INSERT`` of the key blocks other inserts of that key (unique index).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from testlane.core.waiting import WaitTimeout, wait_until
from testlane.seams._pg import open_connection

if TYPE_CHECKING:
    import psycopg

    from testlane.seams._pg import PgSource

# The query's parameters, as psycopg takes them.
Params = Sequence[object] | Mapping[str, object]

__all__ = ["LockGate", "lock_gate"]

WAITERS_SQL = """
WITH RECURSIVE blocked(pid) AS (
    SELECT pid FROM pg_stat_activity WHERE %(gate)s = ANY(pg_blocking_pids(pid))
    UNION
    SELECT a.pid FROM pg_stat_activity a JOIN blocked b ON b.pid = ANY(pg_blocking_pids(a.pid))
)
SELECT count(*) FROM blocked
"""


class LockGate:
    """An open transaction holding the locks racers need; :meth:`open` releases them all at once.

    Use it as a context manager (the transaction starts on entry and is rolled back on exit if
    the gate was not opened before).
    """

    def __init__(self, via: PgSource, sql: str, params: Params | None = None) -> None:
        self.via = via
        self.sql = sql
        self.params = params
        self._conn: psycopg.Connection[Any] | None = None
        self.opened = False

    @property
    def pid(self) -> int:
        """The gate's backend pid (the one the racers wait for)."""
        return int(self._connection.info.backend_pid)

    @property
    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None:
            raise RuntimeError("the lock gate is not entered; use it as `with lock_gate(...) as gate:`")
        return self._conn

    def __enter__(self) -> Self:
        conn = open_connection(self.via, autocommit=False)
        try:
            conn.execute(self.sql, self.params)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return self

    def waiting(self) -> int:
        """How many backends wait, directly or through another waiter, on the gate's locks now."""
        conn = self._connection
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(WAITERS_SQL, {"gate": self.pid}).fetchone()
        return int(row[0]) if row else 0

    def wait_for(self, n: int, *, timeout: float = 10.0) -> None:
        """Wait until ``n`` backends are queued behind the gate."""
        __tracebackhide__ = True
        seen = [0]

        def enough() -> bool:
            seen[0] = self.waiting()
            return seen[0] >= n

        try:
            wait_until(enough, timeout=timeout, what=f"{n} backends to wait on the lock gate (pid {self.pid})")
        except WaitTimeout as exc:
            raise WaitTimeout(
                f"{exc}; {seen[0]} waited. Do the racers need the lock the gate holds ({self.sql!r})? "
                "Did one of them fail before reaching it?"
            ) from None

    def open(self, *, when_waiting: int | None = None, timeout: float = 10.0) -> None:
        """Roll the gate's transaction back, releasing every racer; first wait for ``when_waiting`` of them.

        The gate is opened (its locks released) even when that wait times out, so nothing stays
        blocked; the timeout is then raised.
        """
        __tracebackhide__ = True
        try:
            if when_waiting is not None and not self.opened:
                self.wait_for(when_waiting, timeout=timeout)
        finally:
            if not self.opened:
                self.opened = True
                self._connection.rollback()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.rollback()
            conn.close()
        self.opened = True


def lock_gate(via: PgSource, sql: str, params: Params | None = None) -> LockGate:
    """A :class:`LockGate` on its own connection from ``via`` (``pg_database``, a URL, a factory), running ``sql``."""
    return LockGate(via, sql, params)
