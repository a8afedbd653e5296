"""Postgres as a :class:`~testlane.databases.engine.DatabaseEngine`: clone by template, reset in place.

* **clone**: ``CREATE DATABASE ... TEMPLATE ... STRATEGY FILE_COPY`` (measured fastest on tmpfs; Postgres
  15+), the owner record on a shared server (:mod:`testlane.databases.owner`), and — with ``preconnect`` —
  one connection opened to it (the first connection to a database is the slow one), its caches warmed
  (:data:`WARM_CACHES`: a test's first statement on a fresh backend would otherwise load them);
* **reset**: once no server process but our own connection serves a released database, back into the
  template's state when that is provably exact (see :mod:`testlane.databases.reset`: nothing changed; rows
  in tables empty in the template, deleted, or past a size truncated; rows only inserted into seeded tables,
  deleted by ``xmin``). The test's own connection is sanitized and reused, so a reset costs no new connection. Only
  where the server's processes can be scanned (``embedded``/``local``);
* **transaction wrapper**: :class:`~testlane.databases.transaction.SavepointConnection`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, TypeAlias

from testlane.core.errors import DatabaseError
from testlane.core.waiting import sleep
from testlane.databases.naming import clone_name
from testlane.databases.pool import ClonePool, Lease
from testlane.databases.reset import (
    SETTLE_TIMEOUT,
    Counters,
    ResetPlan,
    TemplateFacts,
    analyze,
    can_scan_processes,
    first_clone_xid,
    restore,
    sanitize,
    settle,
)

if TYPE_CHECKING:
    import psycopg

    from testlane.databases.template import TemplateSpec
    from testlane.databases.transaction import SavepointConnection
    from testlane.services.postgres import PostgresServer

__all__ = ["SETTLE_TIMEOUT", "WARM_CACHES", "PostgresDatabaseEngine", "PostgresLease", "PostgresPool"]

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

PostgresLease: TypeAlias = "Lease[psycopg.Connection]"


class PostgresPool(ClonePool["psycopg.Connection", "psycopg.Connection"]):
    """A :class:`ClonePool` over a :class:`PostgresDatabaseEngine` (what ``testlane.db.pool()`` hands out).

    A class, not an alias: a type solved through ``contextmanager`` would otherwise show psycopg's row
    type parameter to a user's strict type checker as ``Any``.
    """


class PostgresDatabaseEngine:
    """Databases on ``server`` (see module docstring). ``strategy``: ``file_copy`` or ``wal_log``;
    ``reuse``: reset released databases where possible; ``preconnect``: open each clone's connection ahead."""

    kind = "postgres"

    def __init__(
        self, server: PostgresServer, *, strategy: str = "file_copy", reuse: bool = True, preconnect: bool = True
    ) -> None:
        self.server = server
        self.recycles = reuse and can_scan_processes() and server.instance.backend in ("embedded", "local")
        self.preconnect = preconnect
        major = int(server.version.split(".")[0]) if server.version else 0
        self._strategy_clause = f" STRATEGY {strategy.upper()}" if major >= 15 else ""
        self._facts: dict[str, TemplateFacts] = {}
        self._facts_lock = threading.Lock()
        # Per template, the tables tests have written so far: a reset reads their counters first and the
        # others' only when those do not account for what changed (reset.read_counters). Replaced, not mutated
        # (the pool's workers read it without the lock).
        self._written: dict[str, frozenset[int]] = {}

    def ensure_template(self, spec: TemplateSpec) -> str:
        from testlane.databases.template import ensure_template

        return ensure_template(self.server, spec)

    def connect_admin(self) -> psycopg.Connection:
        return self.server.connect()

    def clone_name(self, run_id: str, worker: str, n: int) -> str:
        return clone_name(run_id, worker, n)

    def owner_comment(self, name: str) -> str | None:
        if not self.server.instance.outlives_run:
            return None  # the databases go with the server
        from testlane.databases.leftovers import owner_comment

        return owner_comment(self.server, name)

    def create(self, admin: psycopg.Connection, template: str | None, name: str) -> None:
        """``CREATE DATABASE name [TEMPLATE template]`` (``None``: an empty database) and, on a shared server,
        the owner record: the one place a Postgres database is made."""
        import psycopg
        from psycopg import sql

        query = "CREATE DATABASE {}" + (" TEMPLATE {}" + self._strategy_clause if template else "")
        parts = [sql.Identifier(name)] + ([sql.Identifier(template)] if template else [])
        try:
            admin.execute(sql.SQL(query).format(*parts))
        except psycopg.Error as exc:
            what = f"clone template {template} into {name}" if template else f"create database {name}"
            raise DatabaseError(
                f"could not {what}: {str(exc).strip()}",
                hint="the template may have been dropped or be in use; `testlane services logs postgres` shows "
                "the server's side.",
            ) from None
        if self.server.instance.outlives_run:
            from testlane.databases.leftovers import mark_owner

            # so a crashed run's clone can be reaped on a server that outlives it (existing or detached)
            mark_owner(admin, name, self.server)

    def clone(
        self, admin: psycopg.Connection, template: str, name: str, *, on_demand: bool = False
    ) -> Lease[psycopg.Connection]:
        self.create(admin, template, name)
        conn = self._connect(name, autocommit=False) if self.preconnect else None
        if conn is not None:
            _warm_caches(conn)
        # A new database has no statistics yet: its baseline is all zeros.
        return Lease(name, self.server.dsn(name), template, conn, Counters(), on_demand=on_demand)

    def drop(self, admin: psycopg.Connection, name: str) -> None:
        from testlane.databases.template import drop_database

        drop_database(admin, name)

    def savepoint_connection(self, name: str) -> SavepointConnection:
        from testlane.databases.transaction import SavepointConnection

        return SavepointConnection.connect(self.server.dsn(name), autocommit=False)

    # -- reset ---------------------------------------------------------------------------------------
    def reset(
        self, lease: Lease[psycopg.Connection], *, stopping: Callable[[], bool]
    ) -> Lease[psycopg.Connection] | None:
        conn = lease.conn
        own = {conn.info.backend_pid} if conn is not None and not conn.closed else set()

        def pause(seconds: float) -> bool:
            if stopping():
                return False
            sleep(seconds)
            return True

        if not settle(self.server.pid or 0, lease.name, own, released_at=lease.released_at, pause=pause):
            return None
        conn, lease.conn = lease.conn, None
        try:
            facts = self._template_facts(lease)
            if conn is not None and not conn.closed and not conn.broken:
                sanitize(conn)
            else:
                conn = self._connect(lease.name, autocommit=True)
                conn.execute("SET stats_fetch_consistency = none")
            assert isinstance(lease.baseline, Counters), lease.baseline
            done = restore(conn, facts, lease.baseline, self._written.get(lease.template, frozenset()))
            if done is None:
                _close(conn)
                return None
            baseline, plan = done
            self._note_written(lease.template, facts, plan)
            if plan.truncate:
                _warm_caches(conn, list(plan.truncate))  # a TRUNCATE invalidated their cache entries
            conn.autocommit = False
        except Exception as exc:
            log.debug("could not reset %s: %s", lease.name, exc)
            _close(conn)
            return None
        # `truncated`: tables were emptied or restored (which, is in the baseline: Counters.restored).
        return Lease(lease.name, lease.url, lease.template, conn, baseline, reused=True, truncated=bool(plan))

    def _note_written(self, template: str, facts: TemplateFacts, plan: ResetPlan) -> None:
        new = set(plan.oids) & facts.names.keys()
        with self._facts_lock:
            known = self._written.get(template, frozenset())
            if not new <= known:
                self._written[template] = known | new

    def _template_facts(self, lease: Lease[psycopg.Connection]) -> TemplateFacts:
        """What may be truncated or restored in ``lease``'s template, learned once on a throwaway clone named
        after the lease (analysis reads would count)."""
        with self._facts_lock:
            facts = self._facts.get(lease.template)
            if facts is None:
                scratch = f"{lease.name}_facts"
                with self.server.connect() as admin:
                    self.create(admin, lease.template, scratch)
                    try:
                        with self.server.connect(scratch, autocommit=True) as conn:
                            facts = analyze(conn)
                        facts = replace(facts, first_clone_xid=first_clone_xid(admin, lease.template))
                        self._facts[lease.template] = facts
                    finally:
                        self.drop(admin, scratch)
            return facts

    def _connect(self, name: str, *, autocommit: bool) -> psycopg.Connection:
        conn = self.server.connect(name, autocommit=autocommit)
        conn.prepare_threshold = None  # see reset.sanitize: nothing prepared server-side behind psycopg's back
        return conn


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
