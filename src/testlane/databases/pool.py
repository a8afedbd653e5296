"""A pool of databases cloned from a template, kept ready in the background — for any database engine.

Per test, the critical path is: take a ready database (and the connection opened to it ahead, if the
engine opens one). Everything else is done by the pool's worker threads (``workers`` of them, named
``testlane-<kind>-pool-<n>``, so the leak detector and the network guard leave them alone; each with its
own admin connection), by priority:

1. **reset** a released database back into the template's state, when the engine can (Postgres, see
   :meth:`~testlane.databases.postgres_engine.PostgresDatabaseEngine.reset`); a database it cannot reset
   is dropped;
2. **clone** while fewer than ``size`` databases are ready or on their way (the engine's
   :meth:`~testlane.databases.engine.DatabaseEngine.clone`);
3. **drop** used databases — lazily: on a server testlane throws away after the run, only once more than
   ``drop_backlog`` wait (the rest go with the server's directory); with ``drop_at_close`` (a shared server,
   or MariaDB, whose databases are never reset), each at once, and everything left when the pool closes.

When no database is ready the caller waits up to ``wait`` seconds for one on its way, and otherwise clones
one itself: an exhausted pool is slower, never an error. A clone that fails in the background stops the
background cloning (it would fail the same way again); the next caller clones itself and gets that
attempt's error — one error per :meth:`ClonePool.acquire`, raised where the test asked.

:meth:`ClonePool.close` stops the workers (a clone in flight is finished and counted) and, with
``drop_at_close``, drops every database the pool made and did not hand out for keeps: ready, released,
used, and any a worker finishes after the close (a worker that outlives the join drops its own clone).

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Self

from testlane.core.waiting import Deadline
from testlane.databases.engine import AdminT, Closeable, ConnT

if TYPE_CHECKING:
    from testlane.databases.engine import DatabaseEngine

__all__ = ["ClonePool", "Lease", "PoolStats"]

log = logging.getLogger("testlane")

# Clone numbers are unique per process, not per pool: one process holds several pools with the same
# run id and worker name (a session's pool per template, testlane.db helpers' own), whose clones
# must never be given the same name.
_clone_numbers = itertools.count(1)

JOIN_TIMEOUT = 60.0  # seconds close() waits for a worker's clone in flight (it then drops it itself)


@dataclass
class Lease(Generic[ConnT]):
    """One database handed to one test.

    ``name``, ``url`` (with credentials), ``template`` (what it was cloned from); ``conn``: a connection
    opened ahead (autocommit off; None when the engine opens none), lent out by :meth:`connection`;
    ``baseline``: the engine's record of the database's state when handed out (Postgres: statistics
    counters); ``reused``: a reset database (``truncated``: rows were deleted or tables emptied);
    ``on_demand``: cloned by the caller, none being ready; ``released_at``: :func:`time.monotonic` of the release.
    """

    name: str
    url: str
    template: str = ""
    conn: ConnT | None = None
    baseline: object = None
    reused: bool = False
    truncated: bool = False
    on_demand: bool = False
    released_at: float = 0.0

    @contextlib.contextmanager
    def connection(self, fallback: Callable[[], ConnT]) -> Iterator[ConnT]:
        """The connection opened ahead, for the block; handed back when it ends (the pool's reset reuses or
        closes it, so do not close it). Without one: ``fallback()``, closed when the block ends."""
        conn, self.conn = self.conn, None
        if conn is None:
            with contextlib.closing(fallback()) as own:
                yield own
            return
        try:
            yield conn
        finally:
            self.conn = conn


@dataclass
class PoolStats:
    """What the pool did (counts), and how long callers waited for it (``wait_seconds``)."""

    cloned: int = 0
    on_demand: int = 0
    reused_unchanged: int = 0
    reused_truncated: int = 0
    dropped: int = 0
    handed_out: int = 0
    waited: int = 0
    wait_seconds: float = 0.0


class ClonePool(Generic[ConnT, AdminT]):
    """Databases cloned from ``template`` by ``engine`` for one process (see module docstring).

    ``size``: databases kept ready ahead (0: clone on demand only); ``workers``: background threads;
    ``drop_at_close``: drop every database made (a server that outlives the run); ``drop_backlog``: used
    databases left undropped until more wait (ignored with ``drop_at_close``).
    """

    def __init__(
        self,
        engine: DatabaseEngine[ConnT, AdminT, Any, Any],
        template: str,
        *,
        run_id: str,
        worker: str,
        size: int = 4,
        workers: int = 2,
        drop_at_close: bool = False,
        drop_backlog: int = 256,
    ) -> None:
        self.engine = engine
        self.template = template
        self.run_id = run_id
        self.worker = worker
        self.size = max(0, size)
        self.workers = max(1, workers)
        self.drop_at_close = drop_at_close
        self.drop_backlog = 0 if drop_at_close else drop_backlog
        self.stats = PoolStats()
        self._cond = threading.Condition()
        self._ready: deque[Lease[ConnT]] = deque()
        self._released: deque[Lease[ConnT]] = deque()
        self._dirty: deque[str] = deque()
        self._cloning = 0
        self._resetting = 0
        self._stopping = False
        self._closed = False
        self._error: BaseException | None = None
        self._threads: list[threading.Thread] = []
        self._kept: list[str] = []
        # The caller's admin connection: on-demand clones and drops outside the workers, one at a time
        # (a PyMySQL connection must not be shared by threads; psycopg serializes anyway).
        self._caller_admin: AdminT | None = None
        self._caller_lock = threading.Lock()

    # -- public ------------------------------------------------------------------------------
    def start(self) -> Self:
        """Start the workers (a pool never started clones on demand, and drops at once with
        ``drop_at_close``)."""
        if not self._threads:
            for index in range(self.workers):
                thread = threading.Thread(
                    target=self._work, name=f"testlane-{self.engine.kind}-pool-{index}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
        return self

    def acquire(self, wait: float = 0.25) -> Lease[ConnT]:
        """A database for one test: a ready one, one on its way (waiting up to ``wait`` seconds), or a new
        clone made now. Raises what the engine's clone raises when none is ready and cloning fails."""
        with self._cond:
            if not self._ready and self._coming() and self._error is None:
                self.stats.waited += 1
                self._cond.notify_all()  # a waiting caller is a change of state (tests observe it)
                waited_from = time.perf_counter()
                deadline = Deadline.after(wait)
                while not self._ready and self._coming() and not deadline.expired:
                    self._cond.wait(deadline.remaining)
                self.stats.wait_seconds += time.perf_counter() - waited_from
            if self._ready:
                lease = self._ready.popleft()
                self.stats.handed_out += 1
                self._cond.notify_all()  # room for the next clone
                return lease
        name = self._next_name()
        with self._caller_lock:
            admin = self._admin_for_caller()
            try:
                lease = self.engine.clone(admin, self.template, name, on_demand=True)
            except BaseException:
                self._discard_caller_admin()  # its session state is undefined after a failure
                raise
        with self._cond:
            self.stats.on_demand += 1
            self.stats.handed_out += 1
        return lease

    def release(self, lease: Lease[ConnT], *, keep: bool = False) -> None:
        """Give a database back: kept (a failed test, on request), reset or dropped in the background — or
        dropped now, with ``drop_at_close`` when no worker runs (a driver error then reaches the caller).

        An open connection left on the lease (the test's, handed back) is reused by the reset.
        """
        resettable = bool(self._threads) and self.engine.recycles and not keep
        if not resettable:
            _close(lease.conn)
            lease.conn = None
        drop_now = False
        with self._cond:
            if keep:
                self._kept.append(lease.name)
            elif resettable and not self._stopping:
                lease.released_at = time.monotonic()
                self._released.append(lease)
            elif self.drop_at_close and (not self._threads or self._closed):
                drop_now = True  # no worker will
            else:
                self._dirty.append(lease.name)
            self._cond.notify_all()
        if drop_now:
            self._drop_now([lease.name], quiet=False)

    @property
    def kept(self) -> list[str]:
        """Names of the databases released with ``keep=True`` (never dropped by the pool)."""
        return list(self._kept)

    def close(self) -> None:
        """Stop the workers; with ``drop_at_close``, drop every database made and not kept."""
        log.debug("%s pool of %s: %s", self.engine.kind, self.template, self.stats)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=JOIN_TIMEOUT)
        with self._cond:
            self._closed = True
            leases = [*self._ready, *self._released]
            leftovers = [lease.name for lease in leases] + list(self._dirty)
            self._ready.clear()
            self._released.clear()
            self._dirty.clear()
        for lease in leases:
            _close(lease.conn)
            lease.conn = None
        if self.drop_at_close and leftovers:
            self._drop_now(leftovers, quiet=True)
        with self._caller_lock:
            self._discard_caller_admin()

    # -- the workers ------------------------------------------------------------------------------
    def _next_name(self) -> str:
        return self.engine.clone_name(self.run_id, self.worker, next(_clone_numbers))

    def _coming(self) -> int:
        """Databases on their way into the pool: being cloned, or released and being reset."""
        return self._cloning + self._resetting + len(self._released)

    def _next_task(self) -> tuple[str, Lease[ConnT] | str | None]:
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
        admin: AdminT | None = None
        try:
            while True:
                task, item = self._next_task()
                if task == "stop":
                    return
                if isinstance(item, Lease):
                    self._recycle(item)
                    continue
                try:
                    if admin is None:
                        admin = self.engine.connect_admin()
                    if item is None:
                        lease = self.engine.clone(admin, self.template, self._next_name())
                    else:
                        self.engine.drop(admin, item)
                except BaseException as exc:  # recorded below: callers then see their own error
                    _close(admin)
                    admin = None  # a failed clone leaves the session's state undefined
                    if item is None:
                        self._clone_failed(exc)
                    else:
                        log.warning("could not drop %s database %s: %s", self.engine.kind, item, exc)
                    continue
                if item is None:
                    self._add_ready(lease)
                else:
                    with self._cond:
                        self.stats.dropped += 1
        finally:
            _close(admin)

    def _clone_failed(self, exc: BaseException) -> None:
        with self._cond:
            self._cloning -= 1
            if not self._stopping:
                self._error = exc  # no more background clones: callers clone and see their own error
                log.debug("%s pool stopped cloning: %s", self.engine.kind, exc)
            self._cond.notify_all()

    def _add_ready(self, lease: Lease[ConnT]) -> None:
        with self._cond:
            self._cloning -= 1
            self.stats.cloned += 1
            if not self._closed:
                self._ready.append(lease)
                self._cond.notify_all()
                return
        self._abandon(lease)

    def _recycle(self, lease: Lease[ConnT]) -> None:
        try:
            fresh = self.engine.reset(lease, stopping=lambda: self._stopping)
        except Exception as exc:  # an engine's reset should not raise; if one does, the database is dropped
            log.debug("could not reset %s database %s: %s", self.engine.kind, lease.name, exc)
            fresh = None
        if fresh is None:
            _close(lease.conn)
            lease.conn = None
        with self._cond:
            self._resetting -= 1
            self._cond.notify_all()
            if not self._closed:
                if fresh is None:
                    self._dirty.append(lease.name)
                else:
                    self._ready.append(fresh)  # even beyond `size`: a reset database is cheaper than a clone
                    if fresh.truncated:
                        self.stats.reused_truncated += 1
                    else:
                        self.stats.reused_unchanged += 1
                return
        self._abandon(fresh or lease)

    def _abandon(self, lease: Lease[ConnT]) -> None:
        """A database finished after the pool closed: nobody else will drop it."""
        _close(lease.conn)
        lease.conn = None
        if self.drop_at_close:
            self._drop_now([lease.name], quiet=True)

    # -- the caller's admin connection -------------------------------------------------------------
    def _admin_for_caller(self) -> AdminT:
        if self._caller_admin is None:
            self._caller_admin = self.engine.connect_admin()
        return self._caller_admin

    def _discard_caller_admin(self) -> None:
        _close(self._caller_admin)
        self._caller_admin = None

    def _drop_now(self, names: list[str], *, quiet: bool) -> None:
        """Drop ``names`` on the caller's admin connection; ``quiet``: log failures instead of raising."""
        with self._caller_lock:
            for name in names:
                try:
                    self.engine.drop(self._admin_for_caller(), name)
                except Exception as exc:
                    self._discard_caller_admin()
                    if not quiet:
                        raise
                    log.warning("could not drop %s database %s: %s", self.engine.kind, name, exc)
                    continue
                with self._cond:
                    self.stats.dropped += 1
            if self._closed:
                self._discard_caller_admin()


def _close(conn: Closeable | None) -> None:
    if conn is not None:
        with contextlib.suppress(Exception):
            conn.close()
