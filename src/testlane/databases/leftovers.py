"""Leftovers on an existing server (the ``url`` backend): found by their owner record, and reaped.

On a server testlane did not start, every database it creates (clones, per-worker and application
databases) is named ``tl_<run id>_...`` and carries testlane's owner record as its comment (see
:mod:`testlane.databases.owner`). A normal session drops its databases before it ends, and the
process that owns the run sweeps whatever carries its own record (:func:`sweep_run`). After a crash,
``testlane reap`` (and every start of a run on that server) drops a database only when

* its comment is exactly one owner record (anchored match) and its name carries the record's run id,
* and the record's owner ran on *this* host and is gone (pid dead, or recycled: its start time differs).

Records from other hosts cannot be checked from here: they are only dropped when the user asks for
it with an age (``testlane reap --other-hosts-older-than HOURS``). Templates (``tl_tpl_*``) are kept:
they are content-addressed and reused by the next run. Nothing without the ``tl_`` prefix is ever
listed. The same holds on MariaDB (database comments, 10.5+); on MySQL, which has no database
comments, leftovers are never guessed at.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from testlane.databases.naming import run_id_of
from testlane.databases.owner import OwnerRecord, this_host
from testlane.databases.template import drop_database
from testlane.services.process import pid_alive

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "Leftover",
    "classify",
    "find_leftovers",
    "find_mysql_leftovers",
    "mark_kept",
    "mark_owner",
    "owner_comment",
    "reap_leftovers",
    "sweep_run",
]

log = logging.getLogger("testlane")


def owner_comment(server: Any, name: str) -> str:
    """The owner record (comment text) for database ``name`` created now on ``server``.

    The run is the one named in ``name`` (``tl_<run id>_...``): on a detached server the server's own run
    (``testlane services start``) is not the session's that makes the database."""
    from testlane.core.runtime import owner_pid

    inst = server.instance
    pid = inst.owner_pid if inst.owner_pid is not None else owner_pid()
    return OwnerRecord.for_run(run_id_of(name) or inst.run_id, pid).render()


def mark_owner(admin: psycopg.Connection, name: str, server: Any) -> None:
    """Write the owner record on a database testlane just created on a shared server."""
    from psycopg import sql

    admin.execute(
        sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(owner_comment(server, name)))
    )


def mark_kept(server: Any, name: str, until: float) -> None:
    """On a server that outlives the run, mark database ``name`` (a failed test's, ``db.keep_failed``) as kept
    until ``until`` (Unix s) in its owner record: the run's sweep, the reaper and the next sessions leave it
    until then. PostgreSQL and MariaDB (its database comment, as the record is written at creation); a database
    without testlane's record (MySQL has no database comments) is left as it is."""
    if server.engine == "mariadb":
        with contextlib.closing(server.connect()) as conn, conn.cursor() as cur:
            cur.execute("SELECT SCHEMA_COMMENT FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (name,))
            row = cur.fetchone()
            record = OwnerRecord.parse(row[0] if row else None)
            if record is not None:
                from testlane.databases.mariadb.template import quote

                cur.execute(f"ALTER DATABASE {quote(name)} COMMENT = %s", (replace(record, kept=int(until)).render(),))
        return
    from psycopg import sql

    with server.connect() as admin:
        row = admin.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (name,))
        found = row.fetchone()
        record = OwnerRecord.parse(found[0] if found else None)
        if record is None:
            return
        text = replace(record, kept=int(until)).render()
        admin.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(text)))


@dataclass(frozen=True)
class Leftover:
    """A ``tl_`` database on a shared server, its owner record (None: not testlane's), and why it may
    be dropped (``reason`` None: keep)."""

    name: str
    comment: str
    reason: str | None
    record: OwnerRecord | None = None


def classify(
    name: str, comment: str, *, now: float, host: str, other_hosts_older_than: float | None = None
) -> Leftover:
    """Whether a ``tl_`` database may be dropped, from its owner record (engine-independent).

    ``other_hosts_older_than`` (seconds): also drop records of other hosts created longer ago than
    that; None (the default) never drops another host's databases.
    """
    record = OwnerRecord.parse(comment)
    if record is None or not record.names(name):
        return Leftover(name, comment, None)  # not exactly testlane's record: never guess
    if record.kept is not None and now < record.kept:
        return Leftover(name, comment, None, record)  # a failed test's, kept for inspection (db.keep_failed_ttl)
    if record.host == host:
        if not pid_alive(record.pid, record.ctime):
            return Leftover(name, comment, f"its owner (pid {record.pid} on this host) is gone", record)
        return Leftover(name, comment, None, record)
    if other_hosts_older_than is not None and now - record.created > other_hosts_older_than:
        return Leftover(
            name,
            comment,
            f"made on {record.host} more than {other_hosts_older_than / 3600:g} h ago (--other-hosts-older-than)",
            record,
        )
    return Leftover(name, comment, None, record)


def _postgres_rows(admin: psycopg.Connection) -> list[tuple[str, str]]:
    rows = admin.execute(
        "SELECT datname, coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database "
        "WHERE datname LIKE 'tl\\_%' AND datname NOT LIKE 'tl\\_tpl\\_%' AND NOT datistemplate"
    ).fetchall()
    return [(str(name), str(comment)) for name, comment in rows]


def _mysql_rows(conn: Any) -> list[tuple[str, str]]:
    from testlane.databases.mariadb.template import has_schema_comments

    if not has_schema_comments(conn):
        return []
    with conn.cursor() as cur:
        cur.execute(
            "SELECT SCHEMA_NAME, SCHEMA_COMMENT FROM information_schema.SCHEMATA "
            "WHERE SCHEMA_NAME LIKE 'tl\\_%' AND SCHEMA_NAME NOT LIKE 'tl\\_tpl\\_%'"
        )
        return [(str(name), str(comment or "")) for name, comment in cur.fetchall()]


def find_leftovers(
    admin: psycopg.Connection, *, other_hosts_older_than: float | None = None, now: float | None = None
) -> list[Leftover]:
    """Every ``tl_`` database (templates aside) on a Postgres server, classified."""
    return _classify_all(_postgres_rows(admin), other_hosts_older_than, now)


def find_mysql_leftovers(
    conn: Any, *, other_hosts_older_than: float | None = None, now: float | None = None
) -> list[Leftover]:
    """The same on MariaDB (its database comments); MySQL has none, so nothing is ever guessed there."""
    return _classify_all(_mysql_rows(conn), other_hosts_older_than, now)


def _classify_all(
    rows: list[tuple[str, str]], other_hosts_older_than: float | None, now: float | None
) -> list[Leftover]:
    now = time.time() if now is None else now
    host = this_host()
    found = [
        classify(name, comment, now=now, host=host, other_hosts_older_than=other_hosts_older_than)
        for name, comment in rows
    ]
    return _with_unmarked(found)


def _with_unmarked(found: list[Leftover]) -> list[Leftover]:
    """Also drop a database with *no* comment named for a run that another database proves gone.

    ``CREATE DATABASE`` and its owner record are two statements (Postgres cannot create a database in a
    transaction): a run killed between them leaves a clone without a record. Its name carries the run's
    random id; when another database of that run carries a complete record whose owner is gone, the
    unmarked one is that run's too. A ``tl_`` database with any other comment (or of a run with no such
    record) is still never guessed at.
    """
    gone = {lo.record.run_id: lo for lo in found if lo.reason is not None and lo.record is not None}
    out = []
    for lo in found:
        run = run_id_of(lo.name)
        if lo.reason is None and lo.comment == "" and run in gone:
            proof = gone[run]
            lo = Leftover(lo.name, "", f"unmarked, of run {run}, whose {proof.name} says: {proof.reason}", proof.record)
        out.append(lo)
    return out


def reap_leftovers(server: Any, *, other_hosts_older_than: float | None = None) -> list[Leftover]:
    """Drop this server's testlane leftovers whose owner is gone (see the module docstring).

    ``other_hosts_older_than``: seconds, or None (never drop another host's databases). Returns what
    was dropped; a database that cannot be dropped (in use after all) is left for next time.
    """
    if server.engine == "mariadb":
        with contextlib.closing(server.connect()) as conn:
            found = find_mysql_leftovers(conn, other_hosts_older_than=other_hosts_older_than)
            return _drop(server, conn, [lo for lo in found if lo.reason is not None])
    with server.connect() as admin:
        found = find_leftovers(admin, other_hosts_older_than=other_hosts_older_than)
        return _drop(server, admin, [lo for lo in found if lo.reason is not None])


def sweep_run(server: Any, run_id: str) -> list[Leftover]:
    """Drop every database on ``server`` that carries run ``run_id``'s owner record from this host.

    Called by the process that owns the run once its workers are done: whatever a worker could not
    drop (a clone still in use when its pool closed, a worker that ended early) goes here.
    """
    host = this_host()
    if server.engine == "mariadb":
        with contextlib.closing(server.connect()) as conn:
            rows = _mysql_rows(conn)
            return _drop(server, conn, _of_run(rows, run_id, host))
    with server.connect() as admin:
        return _drop(server, admin, _of_run(_postgres_rows(admin), run_id, host))


def _of_run(rows: list[tuple[str, str]], run_id: str, host: str) -> list[Leftover]:
    found = []
    for name, comment in rows:
        record = OwnerRecord.parse(comment)
        if record is not None and record.kept is not None and time.time() < record.kept:
            continue  # a failed test's database, kept for inspection (db.keep_failed_ttl)
        if record is not None and record.names(name) and record.run_id == run_id and record.host == host:
            found.append(Leftover(name, comment, f"left by this run ({run_id})", record))
        elif comment == "" and run_id_of(name) == run_id:  # ours, made by a worker killed before its record
            found.append(Leftover(name, comment, f"left unmarked by this run ({run_id})", None))
    return found


def _drop(server: Any, conn: Any, leftovers: list[Leftover]) -> list[Leftover]:
    from testlane.databases.mariadb.template import drop_database as drop_mysql_database

    dropped = []
    for leftover in leftovers:
        try:
            if server.engine == "mariadb":
                drop_mysql_database(conn, leftover.name)
            else:
                drop_database(conn, leftover.name)
        except Exception as exc:  # in use, or not ours to drop (privileges): leave it, and say why
            log.warning(
                "could not drop leftover database %s (%s): %s; it stays until a later reap, or drop it by hand",
                leftover.name,
                leftover.reason,
                str(exc).strip(),
            )
            continue
        log.info("dropped leftover database %s (%s)", leftover.name, leftover.reason)
        dropped.append(leftover)
    return dropped
