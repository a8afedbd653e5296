"""MariaDB/MySQL as a :class:`~testlane.databases.engine.DatabaseEngine`: clone by script, always drop.

* **clone**: the template's DDL, read once per template (:class:`~testlane.databases.mariadb.clone.CloneScript`),
  replayed into the clone in one multi-statement round trip on an admin connection opened with
  ``CLIENT.MULTI_STATEMENTS``; on a shared server (``url`` backend) the clone's comment is its owner record
  (:mod:`testlane.databases.owner`). A failed script's half-made database is dropped at once;
* **reset**: never — MySQL offers no cheap proof that a database is still in the template's state, and a
  clone costs a few milliseconds — so a used database is always dropped (``recycles`` is False);
* **transaction wrapper**: :class:`~testlane.databases.mariadb.transaction.MysqlSavepointConnection`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias

from testlane.databases.mariadb.clone import CloneScript
from testlane.databases.mariadb.template import drop_database, ensure_template
from testlane.databases.naming import PREFIX
from testlane.databases.pool import ClonePool, Lease

if TYPE_CHECKING:
    import pymysql.connections

    from testlane.databases.mariadb.transaction import MysqlSavepointConnection
    from testlane.databases.template import TemplateSpec
    from testlane.services.mariadb import MariaDbServer

__all__ = [
    "LOCK_WAIT_TIMEOUT",
    "MariaDbDatabaseEngine",
    "MariaDbLease",
    "MariaDbPool",
    "admin_connection",
    "clone_name",
    "owner_comment_for",
]

LOCK_WAIT_TIMEOUT = 30  # seconds a DROP may wait for a metadata lock before it fails instead of hanging

MariaDbLease: TypeAlias = "Lease[pymysql.connections.Connection]"
MariaDbPool: TypeAlias = "ClonePool[pymysql.connections.Connection, pymysql.connections.Connection]"


def clone_name(run_id: str, worker: str, n: int) -> str:
    """``tl_<run id>_<worker>_m<n>``: a MariaDB clone (the guard and leftover sweeps know the form)."""
    return f"{PREFIX}{run_id}_{worker}_m{n}"


def admin_connection(server: MariaDbServer) -> pymysql.connections.Connection:
    """An autocommit connection that may send several statements at once (one round trip per clone)."""
    from pymysql.constants import CLIENT

    return server.connect(
        client_flag=CLIENT.MULTI_STATEMENTS, init_command=f"SET SESSION lock_wait_timeout = {LOCK_WAIT_TIMEOUT}"
    )


def owner_comment_for(server: MariaDbServer, name: str) -> str | None:
    """On a server that outlives the run (existing or detached) database ``name``'s comment names its owner,
    so a crashed run's databases can be reaped (see :mod:`testlane.databases.leftovers`); elsewhere they go
    with the server."""
    if not server.instance.outlives_run:
        return None
    from testlane.databases.leftovers import owner_comment

    return owner_comment(server, name)


class MariaDbDatabaseEngine:
    """Databases on ``server`` (see module docstring)."""

    kind = "mariadb"
    recycles = False

    def __init__(self, server: MariaDbServer) -> None:
        self.server = server
        self._scripts: dict[str, CloneScript] = {}
        self._scripts_lock = threading.Lock()

    def ensure_template(self, spec: TemplateSpec) -> str:
        return ensure_template(self.server, spec)

    def connect_admin(self) -> pymysql.connections.Connection:
        return admin_connection(self.server)

    def clone_name(self, run_id: str, worker: str, n: int) -> str:
        return clone_name(run_id, worker, n)

    def owner_comment(self, name: str) -> str | None:
        return owner_comment_for(self.server, name)

    def script(self, template: str, conn: pymysql.connections.Connection | None = None) -> CloneScript:
        """``template``'s clone script, read once (through ``conn``, else an own connection)."""
        with self._scripts_lock:
            script = self._scripts.get(template)
            if script is None:
                if conn is not None:
                    script = CloneScript.read(conn, template)
                else:
                    with contextlib.closing(self.server.connect()) as own:
                        script = CloneScript.read(own, template)
                self._scripts[template] = script
            return script

    def create(self, admin: pymysql.connections.Connection, template: str, name: str) -> None:
        try:
            self.script(template, admin).run(admin, name, self.owner_comment(name))
        except BaseException:
            # The half-made clone, on a fresh connection: ``admin``'s session state is undefined now.
            with contextlib.suppress(Exception), contextlib.closing(self.server.connect()) as fresh:
                drop_database(fresh, name)
            raise

    def clone(
        self, admin: pymysql.connections.Connection, template: str, name: str, *, on_demand: bool = False
    ) -> Lease[pymysql.connections.Connection]:
        self.create(admin, template, name)
        return Lease(name, self.server.dsn(name), template, on_demand=on_demand)

    def reset(
        self, lease: Lease[pymysql.connections.Connection], *, stopping: Callable[[], bool]
    ) -> Lease[pymysql.connections.Connection] | None:
        return None  # see the module docstring: always dropped

    def drop(self, admin: pymysql.connections.Connection, name: str) -> None:
        drop_database(admin, name)

    def savepoint_connection(self, name: str) -> MysqlSavepointConnection:
        from testlane.databases.mariadb.transaction import MysqlSavepointConnection

        return MysqlSavepointConnection(**self.server.conninfo(name), autocommit=False)
