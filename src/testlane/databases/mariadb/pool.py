"""A small pool of MariaDB/MySQL clones, made ahead of demand in a background thread.

Per test the critical path is: take a ready clone's name. One background thread
(``testlane-mariadb-pool``, exempt from the leak detector and the network guard) keeps ``size``
clones ready (each one multi-statement round trip, see :mod:`testlane.databases.mariadb.clone`)
and drops used ones. When no clone is ready the caller waits briefly for one on its way and
otherwise clones its own: an exhausted pool is slower, never an error.

Used databases are always dropped, and :meth:`MysqlClonePool.close` drops every database the pool
still holds, so a session leaves nothing on the server — which matters on an existing server (the
``url`` backend), where testlane only ever creates and drops its own ``tl_<run id>_<worker>_m<n>``
databases. There is no reset in place (as Postgres has): MySQL offers no cheap proof that a database
is still in the template's state, and a clone costs a few milliseconds.

Hand-written: connection pools pool connections; no library pools databases made from a template.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from testlane.core.waiting import Deadline
from testlane.databases.mariadb.clone import CloneScript
from testlane.databases.mariadb.template import drop_database
from testlane.databases.naming import PREFIX

if TYPE_CHECKING:
    from testlane.services.mariadb import MariaDbServer

__all__ = ["MysqlClonePool", "MysqlLease", "MysqlPoolStats", "admin_connection", "clone_name", "owner_comment_for"]

log = logging.getLogger("testlane")

LOCK_WAIT_TIMEOUT = 30  # seconds a DROP may wait for a metadata lock before it fails instead of hanging


def clone_name(run_id: str, worker: str, n: int) -> str:
    """``tl_<run id>_<worker>_m<n>``: a MariaDB clone (the guard and leftover sweeps know the form)."""
    return f"{PREFIX}{run_id}_{worker}_m{n}"


def admin_connection(server: MariaDbServer) -> Any:
    """An autocommit connection that may send several statements at once (one round trip per clone)."""
    from pymysql.constants import CLIENT

    return server.connect(
        client_flag=CLIENT.MULTI_STATEMENTS, init_command=f"SET SESSION lock_wait_timeout = {LOCK_WAIT_TIMEOUT}"
    )


def owner_comment_for(server: MariaDbServer) -> str | None:
    """On a shared server (``url`` backend) a database's comment names its owner, so a crashed run's
    databases can be reaped (see :mod:`testlane.databases.leftovers`); elsewhere they go with the server."""
    if server.instance.backend != "url":
        return None
    from testlane.databases.leftovers import owner_comment

    return owner_comment(server)


@dataclass
class MysqlLease:
    """One clone handed to one test."""

    name: str
    url: str
    on_demand: bool = False


@dataclass
class MysqlPoolStats:
    """What the pool did, and how long callers waited for it."""

    cloned: int = 0
    on_demand: int = 0
    dropped: int = 0
    handed_out: int = 0
    waited: int = 0
    wait_seconds: float = 0.0


class MysqlClonePool:
    """Clones of ``template`` on ``server`` for one process (see module docstring)."""

    def __init__(self, server: MariaDbServer, template: str, *, run_id: str, worker: str, size: int = 3) -> None:
        self.server = server
        self.template = template
        self.run_id = run_id
        self.worker = worker
        self.size = max(0, size)
        self.stats = MysqlPoolStats()
        self._counter = itertools.count(1)
        self._cond = threading.Condition()
        self._ready: deque[str] = deque()
        self._dirty: deque[str] = deque()
        self._cloning = 0
        self._stopping = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._script: CloneScript | None = None
        self._script_lock = threading.Lock()
        self._caller_admin: Any = None

    # -- public ------------------------------------------------------------------------------
    def start(self) -> MysqlClonePool:
        """Start the background thread (a pool never started clones on demand and drops at once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="testlane-mariadb-pool", daemon=True)
            self._thread.start()
        return self

    def script(self, conn: Any | None = None) -> CloneScript:
        """The template's clone script, read once."""
        with self._script_lock:
            if self._script is None:
                if conn is not None:
                    self._script = CloneScript.read(conn, self.template)
                else:
                    with contextlib.closing(self.server.connect()) as own:
                        self._script = CloneScript.read(own, self.template)
            return self._script

    def acquire(self, wait: float = 0.25) -> MysqlLease:
        """A clone for one test: a ready one, one on its way, or a new one made now."""
        with self._cond:
            if not self._ready and self._cloning and self._error is None:
                self.stats.waited += 1
                started = time.perf_counter()
                deadline = Deadline.after(wait)
                while not self._ready and self._cloning and not deadline.expired:
                    self._cond.wait(deadline.remaining)
                self.stats.wait_seconds += time.perf_counter() - started
            if self._ready:
                name = self._ready.popleft()
                self.stats.handed_out += 1
                self._cond.notify_all()  # room for the next clone
                return MysqlLease(name, self.server.dsn(name))
        name = self._next_name()
        self._clone(self._admin_for_caller(), name)
        with self._cond:
            self.stats.on_demand += 1
            self.stats.handed_out += 1
        return MysqlLease(name, self.server.dsn(name), on_demand=True)

    def release(self, lease: MysqlLease) -> None:
        """Give a clone back: it is dropped (in the background when the pool runs)."""
        if self._thread is None:
            self._drop(self._admin_for_caller(), lease.name)
            return
        with self._cond:
            self._dirty.append(lease.name)
            self._cond.notify_all()

    def close(self) -> None:
        """Stop the thread and drop every database the pool still holds."""
        log.debug("MariaDB pool of %s: %s", self.template, self.stats)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=60)
        leftovers = [*self._ready, *self._dirty]
        self._ready.clear()
        self._dirty.clear()
        if leftovers:
            try:
                admin = self._admin_for_caller()
                for name in leftovers:
                    self._drop(admin, name)
            except Exception as exc:
                log.warning("could not drop MariaDB databases %s: %s", ", ".join(leftovers), exc)
        _close(self._caller_admin)
        self._caller_admin = None

    # -- the thread ------------------------------------------------------------------------------
    def _next_name(self) -> str:
        return clone_name(self.run_id, self.worker, next(self._counter))

    def _next_task(self) -> tuple[str, str | None]:
        with self._cond:
            while not self._stopping:
                if self._error is None and len(self._ready) + self._cloning < self.size:
                    self._cloning += 1
                    return "clone", None
                if self._dirty:
                    return "drop", self._dirty.popleft()
                self._cond.wait()
        return "stop", None

    def _work(self) -> None:
        admin: Any = None
        try:
            while True:
                task, item = self._next_task()
                if task == "stop":
                    return
                try:
                    if admin is None:
                        admin = admin_connection(self.server)
                    if task == "clone":
                        name = self._next_name()
                        self._clone(admin, name)
                        with self._cond:
                            self._ready.append(name)
                            self.stats.cloned += 1
                    else:
                        assert item is not None
                        self._drop(admin, item)
                except Exception as exc:
                    _close(admin)
                    admin = None
                    if task == "drop":
                        log.warning("could not drop MariaDB database %s: %s", item, exc)
                    else:
                        with self._cond:
                            self._error = exc  # callers clone on demand and see the error themselves
                        log.debug("MariaDB pool stopped cloning: %s", exc)
                finally:
                    if task == "clone":
                        with self._cond:
                            self._cloning -= 1
                            self._cond.notify_all()
        finally:
            _close(admin)

    # -- database work -----------------------------------------------------------------------------
    def _admin_for_caller(self) -> Any:
        if self._caller_admin is None or not self._caller_admin.open:
            self._caller_admin = admin_connection(self.server)
        return self._caller_admin

    def _clone(self, admin: Any, name: str) -> None:
        try:
            self.script(admin).run(admin, name, owner_comment_for(self.server))
        except BaseException:
            if admin is self._caller_admin:
                _close(admin)  # its session settings are undefined after a failed script
                self._caller_admin = None
            with contextlib.suppress(Exception), contextlib.closing(self.server.connect()) as fresh:
                drop_database(fresh, name)
            raise

    def _drop(self, admin: Any, name: str) -> None:
        drop_database(admin, name)
        with self._cond:
            self.stats.dropped += 1


def _close(conn: Any) -> None:
    if conn is not None:
        with contextlib.suppress(Exception):
            conn.close()
