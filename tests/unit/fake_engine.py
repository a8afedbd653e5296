"""An in-memory :class:`~testlane.databases.engine.DatabaseEngine`: the pool's threads, without a server.

Its "server" is a set of database names. Every database made, dropped and every connection opened is
recorded, so a test can prove that nothing leaked. Background clones (made on the pool's worker threads)
can be held at a gate, so a test decides exactly when a clone in flight lands.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from testlane.core.errors import DatabaseError
from testlane.databases.pool import Lease

TEMPLATE = "tl_tpl_fake"


class FakeConnection:
    """A connection to one fake database; it records whether it was closed."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.closed = False

    def close(self) -> None:
        self.closed = True


class FakeEngine:
    """See the module docstring. ``recycles``: resets keep a database (unless ``reset_fails``)."""

    kind = "fake"

    def __init__(self, *, recycles: bool = True) -> None:
        self.recycles = recycles
        self.lock = threading.Lock()
        self.databases: set[str] = {TEMPLATE}  # what exists on the "server"
        self.made: list[str] = []
        self.dropped: list[str] = []
        self.connections: list[FakeConnection] = []
        self.clone_calls = 0
        self.fail_clones = 0  # this many clones fail (from the next one on); -1: all
        self.reset_fails: str | None = None  # "none": reset says drop; "raise": reset raises
        self.truncate = False  # a successful reset reports truncated tables
        self.gate: threading.Event | None = None  # background clones wait here when set
        self.background_clone_started = threading.Event()
        self.dropped_one = threading.Event()

    # -- the engine --------------------------------------------------------------------------------
    def ensure_template(self, spec: object) -> str:
        return TEMPLATE

    def connect_admin(self) -> FakeConnection:
        return self._open("(admin)")

    def clone_name(self, run_id: str, worker: str, n: int) -> str:
        return f"tl_{run_id}_{worker}_{n}"

    def owner_comment(self) -> str | None:
        return None

    def create(self, admin: FakeConnection, template: str, name: str) -> None:
        assert not admin.closed, "a clone on a closed admin connection"
        with self.lock:
            self.clone_calls += 1
            fail = self.fail_clones != 0
            if self.fail_clones > 0:
                self.fail_clones -= 1
        if threading.current_thread().name.startswith("testlane-fake-pool"):
            self.background_clone_started.set()
            if self.gate is not None:
                assert self.gate.wait(timeout=30), "the test never opened the gate"
        if fail:
            raise DatabaseError(f"could not clone template {template} into {name}: the fake said no")
        with self.lock:
            assert template in self.databases and name not in self.databases, name
            self.databases.add(name)
            self.made.append(name)

    def clone(
        self, admin: FakeConnection, template: str, name: str, *, on_demand: bool = False
    ) -> Lease[FakeConnection]:
        self.create(admin, template, name)
        return Lease(name, f"fake://{name}", template, self._open(name), on_demand=on_demand)

    def reset(self, lease: Lease[FakeConnection], *, stopping: Callable[[], bool]) -> Lease[FakeConnection] | None:
        if self.reset_fails == "raise":
            raise RuntimeError("the fake's reset broke")
        if self.reset_fails == "none":
            return None
        conn, lease.conn = lease.conn, None
        if conn is None or conn.closed:
            conn = self._open(lease.name)
        return Lease(lease.name, lease.url, lease.template, conn, reused=True, truncated=self.truncate)

    def drop(self, admin: FakeConnection, name: str) -> None:
        assert not admin.closed, "a drop on a closed admin connection"
        with self.lock:
            assert name in self.databases and name != TEMPLATE, name
            self.databases.discard(name)
            self.dropped.append(name)
        self.dropped_one.set()

    def savepoint_connection(self, name: str) -> FakeConnection:
        return self._open(name)

    # -- for the tests ---------------------------------------------------------------------------------
    def _open(self, database: str) -> FakeConnection:
        conn = FakeConnection(database)
        with self.lock:
            self.connections.append(conn)
        return conn

    def leftovers(self) -> set[str]:
        """Databases made and still there (the template aside)."""
        with self.lock:
            return self.databases - {TEMPLATE}

    def open_connections(self) -> list[FakeConnection]:
        with self.lock:
            return [conn for conn in self.connections if not conn.closed]
