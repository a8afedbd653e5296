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

What a rollback cannot undo is checked after each test, in the same round trip as the rollback:

* **sequences**: ``nextval`` is never rolled back. The template's sequence values are read once per
  database (:func:`read_sequences`); after each test the server compares them with the sequences' state
  and puts back those that moved with ``setval``, in the same round trip;
* **a commit that escaped**: the outer transaction has a transaction id; after the rollback,
  ``txid_status`` of that id says ``committed`` when something (a raw ``COMMIT``, ``END``) committed it.
  Writes made through *another* connection are seen through the database's session counter (a new
  session since the test began) and, once those sessions have ended, the per-relation count of
  committed changes (``n_mod_since_analyze``, which a rollback never moves). The caller then rebuilds
  the database and fails the test (:class:`Escape`). The latter needs PostgreSQL 15 (statistics in
  shared memory).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg

__all__ = [
    "Escape",
    "EscapedCommit",
    "SavepointConnection",
    "Sequences",
    "joined_async_session",
    "joined_session",
    "read_sequences",
    "rolled_back",
]

SAVEPOINT = "testlane_app"

# Session-level state a rollback does not undo, on a connection the next test gets again (pg_conn's, and
# db_session's from the worker's pool): a test's prepared statements, advisory locks, and the sequences'
# currval/lastval. A SET, a temporary table or a LISTEN inside the test's transaction goes with its rollback.
# (SavepointConnection.end_test sends the same three, in the round trip that rolls back; async_db_session's
# engine pools nothing: each test's connection is a new session.)
SESSION_RESET = ("DEALLOCATE ALL", "SELECT pg_advisory_unlock_all()", "DISCARD SEQUENCES")
FIX = 'use @pytest.mark.isolation("database") on this test, or db.isolation = "database"'


class EscapedCommit(Exception):
    """A commit escaped the test's rolled-back transaction (raised by the joined sessions at exit)."""


@dataclass(frozen=True)
class Sequences:
    """The template's sequences: their names and state, and the statement that puts back those that moved."""

    names: tuple[str, ...] = ()  # quoted qualified names
    values: tuple[tuple[int, bool], ...] = ()  # (last_value, is_called), as in the template
    # One statement: ``setval`` of each sequence whose state differs from the template's (one row: how many).
    restore: str = ""
    oids: tuple[int, ...] = ()


def read_sequences(conn: psycopg.Connection[Any]) -> Sequences:
    """Every sequence of the database and its state (run on a database in the template's state).

    The exact state is one ``SELECT last_value, is_called FROM seq`` per sequence, read once. After each
    test :attr:`Sequences.restore` compares each one's state with the template's and puts back those that
    moved, on the server, in the round trip that rolls the test back: a function per sequence over arrays
    of their oids and states (no plan to build: a UNION of one sub-select per sequence costs about 1 ms to
    plan for 100 sequences, every time). ``pg_get_sequence_data`` (PostgreSQL 18) returns both fields;
    before, ``pg_sequence_last_value`` is NULL when ``is_called`` is false, so a ``setval(seq, n, false)`` on
    a sequence never used in the template goes unseen there.
    """
    rows = conn.execute(
        "SELECT c.oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'S' AND n.nspname NOT LIKE 'pg_temp%%'"
        " ORDER BY c.oid"
    ).fetchall()
    if not rows:
        return Sequences()
    names = tuple(name for _, name in rows)
    exact = " UNION ALL ".join(f"(SELECT last_value, is_called FROM {name})" for name in names)
    values = tuple((int(v), bool(c)) for v, c in conn.execute(exact).fetchall())
    oids = tuple(oid for oid, _ in rows)
    arrays = f"{_array(oids)}::oid[], {_array(v for v, _ in values)}::bigint[], {_array(c for _, c in values)}::bool[]"
    if conn.info.server_version >= 180000:
        # Each sequence's state as pg_get_sequence_data reads it in the template: what `values` holds.
        restore = (
            f"SELECT count(setval(x.oid, x.v, x.c)) FROM unnest({arrays}) x(oid, v, c), pg_get_sequence_data(x.oid) d"
            " WHERE (d.last_value, d.is_called) IS DISTINCT FROM (x.v, x.c)"
        )
    else:
        # pg_sequence_last_value in the template's state (NULL where not called), read once, is what it must read.
        seen = dict(
            conn.execute(f"SELECT s.oid, pg_sequence_last_value(s.oid) FROM unnest({_array(oids)}::oid[]) s(oid)")
        )
        last = _array(seen[oid] for oid in oids)
        restore = (
            f"SELECT count(setval(x.oid, x.v, x.c)) FROM unnest({arrays}, {last}::bigint[]) x(oid, v, c, seen)"
            " WHERE pg_sequence_last_value(x.oid) IS DISTINCT FROM x.seen"
        )
    return Sequences(names, values, restore, oids)


def _array(items: Iterable[int | bool | None]) -> str:
    """A Postgres array literal of integers, booleans and NULLs, quoted (the caller casts it to its type)."""

    def element(item: int | bool | None) -> str:
        if item is None:
            return "NULL"
        if isinstance(item, bool):
            return "t" if item else "f"
        return str(int(item))

    return "'{" + ",".join(element(item) for item in items) + "}'"


@dataclass
class Escape:
    """What escaped the test's transaction, for the teardown error (None fields: not known)."""

    how: str  # "pg_conn", "session", "connection" or "unproven"
    statement: str | None = None

    @property
    def proven(self) -> bool:
        """A commit certainly escaped (the test fails); else one cannot be ruled out (a warning)."""
        return self.how != "unproven"

    def message(self, database: str) -> str:
        committed = "committed the test's transaction: its writes were committed, not rolled back"
        if self.how == "pg_conn":
            what = (
                f"the statement {self.statement!r} on pg_conn {committed}"
                if self.statement
                else f"pg_conn {committed} (not through pg_conn.commit(), which only releases a savepoint)"
            )
        elif self.how == "session":
            what = f"the SQLAlchemy session's connection {committed} (e.g. a COMMIT sent through session.connection())"
        elif self.how == "connection":
            what = (
                "another connection to the test's database (e.g. one opened from pg_url) committed changes, "
                "which no rollback of the test's transaction undoes"
            )
        else:
            return (
                "a connection to the test's database other than pg_conn and db_session was still open after the "
                f"test (or ANALYZE ran), so testlane cannot tell whether it committed anything: {database} was "
                f"restored from the template for the next test. Close such connections in the test, or {FIX}."
            )
        return (
            f"transaction isolation did not hold: {what}. The database {database} was restored from the "
            f"template for the next test. Fix: {FIX}."
        )


class _WatchedCursor(psycopg.Cursor[Any]):
    """Notes the statement that ended the test's transaction (a raw ``COMMIT``), for the error message.

    Costs one attribute read per statement: libpq's transaction status is known locally.
    """

    def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().execute(query, *args, **kwargs)
        finally:
            _note_escape(self.connection, query)

    def executemany(self, query: Any, *args: Any, **kwargs: Any) -> None:
        try:
            super().executemany(query, *args, **kwargs)
        finally:
            _note_escape(self.connection, query)


def _note_escape(conn: Any, query: Any) -> None:
    if not isinstance(conn, SavepointConnection) or not conn._in_test or conn.escaped_by is not None:
        return
    if conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        try:
            text = (
                query
                if isinstance(query, str)
                else query.decode()
                if isinstance(query, bytes)
                else query.as_string(conn)
            )
        except Exception:
            text = repr(query)
        text = " ".join(str(text).split())
        conn.escaped_by = text if len(text) <= 80 else text[:77] + "..."


class SavepointConnection(psycopg.Connection[Any]):
    """A psycopg connection whose ``commit``/``rollback`` act on a savepoint of an outer transaction.

    ``begin_test()`` makes sure the outer transaction and savepoint are open, ``end_test()`` rolls
    everything back, checks what a rollback cannot undo and — in the same round trip — opens the next
    test's transaction, so a test costs one round trip of its own. psycopg decides whether to send
    ``BEGIN`` from libpq's transaction status, so the raw ``BEGIN``/``ROLLBACK`` sent here keep it in step.

    ``sequences`` (set by the caller, once per database) is the template's sequence state;
    ``own_pids`` the server processes whose sessions are the harness's own (this one, the worker
    engine's pool).
    """

    _in_test = False
    outer_xid: int | None = None  # the outer transaction's id
    sessions: int = -1  # the database's session counter when the outer transaction began
    escaped_by: str | None = None  # the statement after which the outer transaction was gone
    sequences: Sequences = Sequences()
    own_pids: set[int] = set()
    changes: tuple[int, int] | None = None  # committed-change counters (see committed_changes)
    _check_others = False  # prepare() on PostgreSQL 15+: other connections' commits are checked too
    _sessions_expr = "-1"

    def prepare(self, sequences: Sequences) -> None:
        """Set up a new connection: live statistics, the sequences' template state, the watching cursor."""
        self.sequences = sequences
        self.own_pids = {self.info.backend_pid}
        self.cursor_factory = _WatchedCursor
        if self.info.server_version < 150000:
            # Other connections are checked through statistics in shared memory (PostgreSQL 15): before,
            # a statistics collector process received them late, so no check could be trusted.
            return
        row = psycopg.Connection.execute(
            self,
            "SET stats_fetch_consistency = none; SELECT oid FROM pg_database WHERE datname = current_database()",
        )
        row.nextset()
        dboid = int((row.fetchone() or (0,))[0])
        psycopg.Connection.commit(self)
        self._sessions_expr = f"pg_stat_get_db_sessions({dboid})"
        self.changes = committed_changes(self)
        self._check_others = True

    @property
    def _open(self) -> str:
        return f"BEGIN; SAVEPOINT {SAVEPOINT}; SELECT txid_current(), {self._sessions_expr}"

    def _record_open(self, cur: psycopg.Cursor[Any]) -> None:
        while cur.nextset():  # psycopg starts at the first statement's result; the id is the last one's
            pass
        row = cur.fetchone()
        assert row is not None
        self.outer_xid, self.sessions = int(row[0]), int(row[1])

    def begin_test(self) -> None:
        self.escaped_by = None
        if self.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            # psycopg sends the BEGIN itself (autocommit is off).
            self._record_open(psycopg.Connection.execute(self, self._open.removeprefix("BEGIN; ")))
        self._in_test = True

    def end_test(self, settle: Callable[[set[int]], bool] | None = None) -> Escape | None:
        """Roll the test back, put moved sequences back; what escaped the rollback (None when nothing).

        ``settle(own_pids)`` waits until no other connection serves the database and says whether it
        could; it is called only when another session was opened during the test.
        """
        self._in_test = False
        if self.closed:
            return None
        xid = self.outer_xid
        status = f"txid_status({xid})" if xid is not None else "NULL"
        # Moved sequences are put back here, whatever the checks find (setval is not transactional: it stays
        # whatever happens to the transaction around it); a database a commit escaped from is rebuilt anyway.
        restore = f"; {self.sequences.restore}" if self.sequences.restore else ""
        # SESSION_RESET: advisory locks, prepared statements and the sequences' currval/lastval (which nextval
        # and setval set) are session-level: a rollback does not undo them. DISCARD SEQUENCES, after the
        # restore's setval, leaves the next test none, as in a new session. (psycopg forgets its own prepared
        # statements on the ROLLBACK and on DEALLOCATE ALL.)
        cur = psycopg.Connection.execute(
            self,
            f"ROLLBACK; DEALLOCATE ALL; SELECT {status}, {self._sessions_expr}, pg_advisory_unlock_all()"
            f"{restore}; DISCARD SEQUENCES; {self._open}",
        )
        # Results: ROLLBACK, DEALLOCATE, the checks, the restore (if any), DISCARD, BEGIN, SAVEPOINT, the new id.
        cur.nextset()
        cur.nextset()
        committed, sessions, _ = cur.fetchone() or (None, -1, None)
        began = self.sessions
        self._record_open(cur)
        if committed == "committed":
            return Escape("pg_conn", self.escaped_by)
        if self._check_others and sessions != began:
            return self._other_connections(settle)
        return None

    def _between_tests(self, query: str) -> list[Any]:
        """Run ``query`` between the rolled-back transaction and a new one (one round trip); its rows."""
        cur = psycopg.Connection.execute(self, f"ROLLBACK; {query}; {self._open}")
        cur.nextset()
        rows = cur.fetchall()
        self._record_open(cur)
        return rows

    def _other_connections(self, settle: Callable[[set[int]], bool] | None) -> Escape | None:
        """Another session was opened during the test: did it commit a change?

        Its counts are final only once it has ended (a server process flushes its statistics at exit),
        so ``settle`` waits for that first; a session still open cannot be proven clean.
        """
        if settle is not None and not settle(self.own_pids):
            return Escape("unproven")
        (row,) = self._between_tests(CHANGES_QUERY)
        before, self.changes = self.changes, (int(row[0]), int(row[1]))
        if before is None or self.changes == before:
            return None
        if self.changes[1] != before[1]:
            return Escape("unproven")  # an ANALYZE reset the counts: a change cannot be ruled out
        return Escape("connection")

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


# Committed row changes per relation (a rollback never counts: PostgreSQL adds to n_mod_since_analyze
# only at commit), user tables and catalogs alike (DDL writes catalog rows), and the ANALYZE counts
# that reset it. Read in the rolled-back transaction's place, outside any transaction snapshot.
CHANGES_QUERY = (
    "SELECT coalesce(sum(pg_stat_get_mod_since_analyze(c.oid)), 0)::bigint,"
    " coalesce(sum(pg_stat_get_analyze_count(c.oid) + pg_stat_get_autoanalyze_count(c.oid)), 0)::bigint"
    " FROM pg_class c WHERE c.relkind IN ('r', 'm', 't') AND NOT c.relisshared"
)


def committed_changes(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    """(committed row changes, ANALYZE runs) over the database's relations (on an idle connection)."""
    row = psycopg.Connection.execute(conn, CHANGES_QUERY).fetchone()
    psycopg.Connection.rollback(conn)
    assert row is not None
    return int(row[0]), int(row[1])


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
    """A SQLAlchemy ``Session`` whose commits are savepoints of a transaction rolled back at the end.

    Raises :class:`EscapedCommit` at exit when the outer transaction was committed after all (a raw
    ``COMMIT`` on the session's connection).
    """
    from sqlalchemy.orm import Session

    connection = engine.connect()
    transaction = connection.begin()
    xid = connection.exec_driver_sql("SELECT txid_current()").scalar()
    session = Session(bind=connection, join_transaction_mode="create_savepoint", **session_kwargs)
    try:
        yield session
    finally:
        try:
            with _unless_escaped(lambda: _sync_status(connection, xid)):
                session.close()
                if transaction.is_active:
                    transaction.rollback()
        finally:
            try:
                # One round trip: without parameters the driver sends it as one simple query.
                connection.exec_driver_sql("; ".join(SESSION_RESET))
                connection.rollback()
            except Exception:
                connection.invalidate()  # one that cannot be reset is not handed to the next test
            connection.close()


@contextlib.asynccontextmanager
async def joined_async_session(engine: Any, **session_kwargs: Any) -> AsyncIterator[Any]:
    """The same for SQLAlchemy's ``AsyncEngine``/``AsyncSession``."""
    from sqlalchemy.ext.asyncio import AsyncSession

    connection = await engine.connect()
    transaction = await connection.begin()
    xid = (await connection.exec_driver_sql("SELECT txid_current()")).scalar()
    session = AsyncSession(bind=connection, join_transaction_mode="create_savepoint", **session_kwargs)
    try:
        yield session
    finally:
        try:
            error: BaseException | None = None
            try:
                await session.close()
                if transaction.is_active:
                    await transaction.rollback()
            except Exception as exc:  # a savepoint gone with the committed transaction: see below
                error = exc
            await _async_rollback(connection)
            status = (await connection.exec_driver_sql(f"SELECT txid_status({int(xid)})")).scalar()
            if status == "committed":
                raise EscapedCommit("session")
            if error is not None:
                raise error
        finally:
            await connection.close()


@contextlib.contextmanager
def _unless_escaped(status: Callable[[], str | None]) -> Iterator[None]:
    """Run the session's clean-up; whatever it raised, an escaped commit is what gets reported."""
    error: BaseException | None = None
    try:
        yield
    except Exception as exc:  # e.g. "savepoint does not exist": it went with the committed transaction
        error = exc
    if status() == "committed":
        raise EscapedCommit("session")
    if error is not None:
        raise error


def _sync_status(connection: Any, xid: Any) -> str | None:
    if connection.in_transaction():
        connection.rollback()
    result = connection.exec_driver_sql(f"SELECT txid_status({int(xid)})").scalar()
    connection.rollback()
    return str(result) if result is not None else None


async def _async_rollback(connection: Any) -> None:
    if connection.in_transaction():
        await connection.rollback()
