"""A pool of databases cloned from a template, kept ready in the background.

Per test, the critical path is: take a ready database, hand over its already-open connection.
Everything else is done by the pool's worker threads (``workers`` of them, each with its own admin
connection), by priority:

1. **reset** a released database, once no server process serves it any more, back into the
   template's state — when that is provably exact (see :mod:`testlane.databases.reset`: nothing
   changed, or rows only in tables empty in the template, truncated). The test's own connection is
   sanitized and reused, so a reset costs no new connection;
2. **clone** while fewer than ``size`` databases are ready or on their way:
   ``CREATE DATABASE ... TEMPLATE ... STRATEGY FILE_COPY`` (measured fastest on tmpfs) and one
   connection opened to it (the first connection to a database is the slow one), its caches warmed
   (:data:`WARM_CACHES`: a test's first statement on a fresh backend would otherwise load them);
3. **drop** databases that could not be reset — lazily: on a server testlane throws away after the
   run, only once more than ``drop_backlog`` wait (the rest go with the server's directory); on a
   shared server, all of them before the pool closes.

When no database is ready the caller waits briefly for one on its way, and otherwise clones one
itself: an exhausted pool is slower, never an error.

Hand-written: connection pools (psycopg_pool) pool connections to one database; no library pools
*databases* cloned from a template and reset between uses.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from testlane.core.errors import DatabaseError
from testlane.core.waiting import Deadline, sleep
from testlane.databases.leftovers import mark_owner
from testlane.databases.naming import clone_name
from testlane.databases.reset import (
    Counters,
    TemplateFacts,
    analyze,
    backends_serving,
    can_scan_processes,
    plan_reset,
    read_counters,
    reset,
    sanitize,
)
from testlane.databases.template import drop_database

if TYPE_CHECKING:
    import psycopg

    from testlane.services.postgres import PostgresServer

__all__ = ["ClonePool", "Lease", "PoolStats"]

log = logging.getLogger("testlane")

# A fresh backend loads each table's catalog entries (relation, indexes, ...) on first use, and a
# TRUNCATE invalidates them: measured here, a test's first INSERT took 1.4 ms on a fresh clone's
# connection and 0.35 ms after a TRUNCATE, against 0.2 ms on a warm one. Opening the tables once, in
# the background, moves most of that off the test's path (to 0.45-0.55 ms and 0.25 ms). Reads only:
# no counter that resets are planned from moves.
WARM_CACHES = """
DO $warm$
DECLARE rel regclass;
BEGIN
    FOR rel IN
        SELECT c.oid::regclass FROM pg_class c
        WHERE c.relkind IN ('r', 'p', 'm')
          AND c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace,
                                     'pg_toast'::regnamespace)
    LOOP
        EXECUTE format('SELECT FROM %s LIMIT 0', rel);
    END LOOP;
END
$warm$
"""

# Clone numbers are unique per process, not per pool: one process holds several pools with the same
# run id and worker name (a session's pool per template, testlane.db helpers' own), whose clones
# must never be given the same name.
_clone_numbers = itertools.count(1)

SETTLE_TIMEOUT = 2.0  # a released database whose connections stay open longer is dropped, not reset


@dataclass
class Lease:
    """One database handed to one test."""

    name: str
    url: str
    conn: psycopg.Connection | None = None  # opened ahead (autocommit off); handed back for the reset
    baseline: Counters = field(default_factory=Counters)
    reused: bool = False
    on_demand: bool = False
    released_at: float = 0.0

    def take_connection(self) -> psycopg.Connection | None:
        conn, self.conn = self.conn, None
        return conn


@dataclass
class PoolStats:
    """What the pool did, and how long callers waited for it."""

    cloned: int = 0
    on_demand: int = 0
    reused_unchanged: int = 0
    reused_truncated: int = 0
    dropped: int = 0
    handed_out: int = 0
    waited: int = 0
    wait_seconds: float = 0.0


class ClonePool:
    """Databases cloned from ``template`` on ``server`` for one process (see module docstring)."""

    def __init__(
        self,
        server: PostgresServer,
        template: str,
        *,
        run_id: str,
        worker: str,
        size: int = 4,
        workers: int = 2,
        strategy: str = "file_copy",
        reuse: bool = True,
        preconnect: bool = True,
        drop_at_close: bool = False,
        drop_backlog: int = 256,
    ) -> None:
        self.server = server
        self.template = template
        self.run_id = run_id
        self.worker = worker
        self.size = max(0, size)
        self.workers = max(1, workers)
        self.reuse = reuse and can_scan_processes() and server.instance.backend in ("embedded", "local")
        self.preconnect = preconnect
        self.drop_at_close = drop_at_close
        self.drop_backlog = 0 if drop_at_close else drop_backlog
        self.stats = PoolStats()
        major = int(server.version.split(".")[0]) if server.version else 0
        self._strategy_clause = f" STRATEGY {strategy.upper()}" if major >= 15 else ""
        self._counter = _clone_numbers
        self._cond = threading.Condition()
        self._ready: deque[Lease] = deque()
        self._released: deque[Lease] = deque()
        self._dirty: deque[str] = deque()
        self._cloning = 0
        self._resetting = 0
        self._stopping = False
        self._error: BaseException | None = None
        self._threads: list[threading.Thread] = []
        self._kept: list[str] = []
        self._facts: TemplateFacts | None = None
        self._facts_lock = threading.Lock()
        self._caller_admin: psycopg.Connection | None = None

    # -- public ------------------------------------------------------------------------------
    def start(self) -> ClonePool:
        """Start the workers (a pool never started only clones on demand)."""
        if not self._threads:
            for index in range(self.workers):
                thread = threading.Thread(target=self._work, name=f"testlane-pool-{index}", daemon=True)
                thread.start()
                self._threads.append(thread)
        return self

    def acquire(self, wait: float = 0.25) -> Lease:
        """A database for one test: a ready one, one on its way, or a new clone made now."""
        with self._cond:
            if not self._ready and self._coming() and self._error is None:
                self.stats.waited += 1
                waited_from = time.perf_counter()
                deadline = Deadline.after(wait)
                while not self._ready and self._coming() and not deadline.expired:
                    self._cond.wait(deadline.remaining)
                self.stats.wait_seconds += time.perf_counter() - waited_from
            if self._ready:
                lease = self._ready.popleft()
                self.stats.handed_out += 1
                self._cond.notify_all()
                return lease
        lease = self._clone(self._admin_for_caller(), on_demand=True)
        with self._cond:
            self.stats.on_demand += 1
            self.stats.handed_out += 1
        return lease

    def release(self, lease: Lease, *, keep: bool = False) -> None:
        """Give a database back: kept (a failed test, on request), or reset/dropped in the background.

        An open connection left on the lease (the test's, handed back) is reused by the reset.
        """
        resettable = bool(self._threads) and self.reuse and not keep
        if not resettable:
            _close(lease.take_connection())
        with self._cond:
            if keep:
                self._kept.append(lease.name)
            elif resettable and not self._stopping:
                lease.released_at = time.monotonic()
                self._released.append(lease)
            else:
                self._dirty.append(lease.name)
            self._cond.notify_all()

    @property
    def kept(self) -> list[str]:
        return list(self._kept)

    def close(self) -> None:
        """Stop the workers; drop what is left when the server outlives us (shared servers)."""
        log.debug("pool of %s: %s", self.template, self.stats)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=30)
        leftovers = [lease.name for lease in (*self._ready, *self._released)] + list(self._dirty)
        for lease in (*self._ready, *self._released):
            _close(lease.take_connection())
        self._ready.clear()
        self._released.clear()
        self._dirty.clear()
        if self.drop_at_close and leftovers:
            with contextlib.suppress(Exception), self.server.connect() as admin:
                for name in leftovers:
                    with contextlib.suppress(Exception):
                        drop_database(admin, name)
                        self.stats.dropped += 1
        _close(self._caller_admin)

    # -- the workers ------------------------------------------------------------------------------
    def _coming(self) -> int:
        """Databases on their way into the pool: being cloned, or released and being reset."""
        return self._cloning + self._resetting + len(self._released)

    def _next_task(self) -> tuple[str, Lease | str | None]:
        with self._cond:
            while not self._stopping:
                if self._released:
                    self._resetting += 1
                    return "reset", self._released.popleft()
                if self._error is None and len(self._ready) + self._coming() < self.size:
                    self._cloning += 1
                    return "clone", None
                if len(self._dirty) > self.drop_backlog:
                    return "drop", self._dirty.popleft()
                self._cond.wait()
        return "stop", None

    def _work(self) -> None:
        admin: psycopg.Connection | None = None
        try:
            while True:
                task, item = self._next_task()
                if task == "stop":
                    return
                if admin is None or admin.closed:
                    try:
                        admin = self.server.connect()
                    except Exception as exc:
                        self._fail(exc, task, item)
                        return
                if task == "reset":
                    assert isinstance(item, Lease)
                    self._recycle(item)
                elif task == "clone":
                    self._fill(admin)
                else:
                    assert isinstance(item, str)
                    try:
                        drop_database(admin, item)
                        self.stats.dropped += 1
                    except Exception as exc:
                        log.debug("could not drop %s: %s", item, exc)
        finally:
            _close(admin)

    def _fail(self, exc: BaseException, task: str, item: object) -> None:
        with self._cond:
            if task == "clone":
                self._cloning -= 1
            elif task == "reset" and isinstance(item, Lease):
                self._resetting -= 1
                self._dirty.append(item.name)
            if not self._stopping:
                self._error = exc
                log.debug("pool worker stopped: %s", exc)
            self._cond.notify_all()

    def _fill(self, admin: psycopg.Connection) -> None:
        try:
            lease = self._clone(admin)
        except BaseException as exc:
            self._fail(exc, "clone", None)
            return
        with self._cond:
            self._cloning -= 1
            self.stats.cloned += 1
            self._ready.append(lease)
            self._cond.notify_all()

    def _recycle(self, lease: Lease) -> None:
        fresh = self._reset(lease) if self._settled(lease) else None
        with self._cond:
            self._resetting -= 1
            if fresh is None:
                _close(lease.take_connection())
                self._dirty.append(lease.name)
            else:
                self._ready.append(fresh)  # even beyond `size`: a reset database is cheaper than a clone
            self._cond.notify_all()

    def _settled(self, lease: Lease) -> bool:
        """Wait until no server process but our own connection's serves the database."""
        own = {lease.conn.info.backend_pid} if lease.conn is not None and not lease.conn.closed else set()
        delay = 0.0005
        while backends_serving(self.server.pid or 0, {lease.name}, exclude=own):
            if self._stopping or time.monotonic() - lease.released_at > SETTLE_TIMEOUT:
                return False
            sleep(delay)
            delay = min(delay * 2, 0.02)
        return True

    def _reset(self, lease: Lease) -> Lease | None:
        conn = lease.take_connection()
        try:
            facts = self._template_facts()
            if conn is not None and not conn.closed and not conn.broken:
                sanitize(conn)
            else:
                conn = self._connect(lease.name, autocommit=True)
                conn.execute("SET stats_fetch_consistency = none")
            after = read_counters(conn)
            tables = plan_reset(facts, lease.baseline, after)
            if tables is None:
                _close(conn)
                return None
            baseline = reset(conn, tables) if tables else after
            if tables:
                _warm_caches(conn, tables)
            conn.autocommit = False
        except Exception as exc:
            log.debug("could not reset %s: %s", lease.name, exc)
            _close(conn)
            return None
        with self._cond:
            if tables:
                self.stats.reused_truncated += 1
            else:
                self.stats.reused_unchanged += 1
        return Lease(lease.name, lease.url, conn, baseline, reused=True)

    def _template_facts(self) -> TemplateFacts:
        """What may be truncated, learned once on a throwaway clone (analysis reads would count)."""
        with self._facts_lock:
            if self._facts is None:
                with self.server.connect() as admin:
                    lease = self._clone(admin, preconnect=False)
                    try:
                        with self.server.connect(lease.name, autocommit=True) as conn:
                            self._facts = analyze(conn)
                    finally:
                        drop_database(admin, lease.name)
            return self._facts

    # -- database work -----------------------------------------------------------------------------
    def _connect(self, name: str, *, autocommit: bool) -> psycopg.Connection:
        conn = self.server.connect(name, autocommit=autocommit)
        conn.prepare_threshold = None  # see reset.sanitize: nothing prepared server-side behind psycopg's back
        return conn

    def _admin_for_caller(self) -> psycopg.Connection:
        if self._caller_admin is None or self._caller_admin.closed:
            self._caller_admin = self.server.connect()
        return self._caller_admin

    def _clone(self, admin: psycopg.Connection, *, on_demand: bool = False, preconnect: bool | None = None) -> Lease:
        import psycopg
        from psycopg import sql

        name = clone_name(self.run_id, self.worker, next(self._counter))
        try:
            admin.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}" + self._strategy_clause).format(
                    sql.Identifier(name), sql.Identifier(self.template)
                )
            )
        except psycopg.Error as exc:
            raise DatabaseError(
                f"could not clone template {self.template} into {name}: {str(exc).strip()}",
                hint="the template may have been dropped or be in use; `testlane services logs postgres` shows "
                "the server's side.",
            ) from None
        if self.server.instance.backend == "url":
            mark_owner(admin, name, self.server)  # so a crashed run's clone can be reaped on a shared server
        connect = self.preconnect if preconnect is None else preconnect
        conn = self._connect(name, autocommit=False) if connect else None
        if conn is not None:
            _warm_caches(conn)
        # A new database has no statistics yet: its baseline is all zeros.
        return Lease(name, self.server.dsn(name), conn, Counters(), on_demand=on_demand)


def _warm_caches(conn: psycopg.Connection, tables: list[str] | None = None) -> None:
    """Load catalog entries into the connection's backend: of ``tables`` (quoted names), else of all
    user tables (best effort)."""
    try:
        # Without parameters psycopg sends the text as a simple query: one round trip for all.
        conn.execute("; ".join(f"SELECT FROM {name} LIMIT 0" for name in tables) if tables else WARM_CACHES)
    except Exception as exc:  # e.g. plpgsql dropped, a table the user may not read: only slower
        log.debug("could not warm the caches of %s: %s", conn.info.dbname, exc)
    with contextlib.suppress(Exception):
        if not conn.autocommit:
            conn.rollback()


def _close(conn: psycopg.Connection | None) -> None:
    if conn is not None:
        with contextlib.suppress(Exception):
            conn.close()
