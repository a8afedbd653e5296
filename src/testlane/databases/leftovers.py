"""Leftovers on an existing server (the ``url`` backend), found by name and owner, and reaped.

On a server testlane did not start, every database it creates (clones, per-worker databases) is
named ``tl_<run id>_...`` and carries a comment naming its owner::

    testlane run=1a2b3c4d host=ci-runner-7 pid=4242 ctime=1763790000.12 created=1763790012

A normal session drops its databases before it ends. After a crash, ``testlane reap`` (and every
start of a run on that server) drops a leftover when its owner ran on this host and is gone, or —
whoever made it — when it is older than ``max_age`` (runs on other machines cannot be checked).
Templates (``tl_tpl_*``) are kept: they are content-addressed and reused by the next run. Nothing
without the ``tl_`` prefix is ever touched. The same holds on MariaDB (database comments, 10.5+); on
MySQL, which has no database comments, leftovers are never guessed at.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from testlane.databases.template import drop_database
from testlane.services.process import pid_alive

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "Leftover",
    "classify",
    "find_leftovers",
    "find_mysql_leftovers",
    "mark_owner",
    "owner_comment",
    "reap_leftovers",
]

log = logging.getLogger("testlane")

_COMMENT = re.compile(
    r"testlane run=(?P<run>\w+) host=(?P<host>\S+) pid=(?P<pid>\d+|None) ctime=(?P<ctime>[\d.]+|None) "
    r"created=(?P<created>\d+)"
)


def owner_comment(server: Any) -> str:
    inst = server.instance
    from testlane.core.runtime import owner_pid

    pid = inst.owner_pid if inst.owner_pid is not None else owner_pid()
    from testlane.services.process import ProcessRef

    ref = ProcessRef.of(pid)
    ctime = f"{ref.create_time:.2f}" if ref else "None"
    return f"testlane run={inst.run_id} host={socket.gethostname()} pid={pid} ctime={ctime} created={int(time.time())}"


def mark_owner(admin: psycopg.Connection, name: str, server: Any) -> None:
    """Write the owner comment on a database testlane just created on a shared server."""
    from psycopg import sql

    admin.execute(
        sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(owner_comment(server)))
    )


@dataclass(frozen=True)
class Leftover:
    """A testlane database on a shared server, and why it may (or may not) be dropped."""

    name: str
    comment: str
    reason: str | None  # None: keep


def classify(name: str, comment: str, *, max_age: float, now: float, host: str) -> Leftover:
    """Whether a ``tl_`` database may be dropped, from its owner comment (engine-independent)."""
    match = _COMMENT.search(comment or "")
    if match is None:
        return Leftover(name, comment, None)  # not marked by us: never guess
    created = int(match["created"])
    pid = int(match["pid"]) if match["pid"] != "None" else None
    ctime = float(match["ctime"]) if match["ctime"] != "None" else None
    if match["host"] == host and pid is not None and not pid_alive(pid, ctime):
        return Leftover(name, comment, f"its owner (pid {pid} on this host) is gone")
    if now - created > max_age:
        return Leftover(name, comment, f"older than {max_age / 3600:g} h")
    return Leftover(name, comment, None)


def find_leftovers(admin: psycopg.Connection, *, max_age: float, now: float | None = None) -> list[Leftover]:
    now = time.time() if now is None else now
    host = socket.gethostname()
    rows = admin.execute(
        "SELECT datname, coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database "
        "WHERE datname LIKE 'tl\\_%' AND datname NOT LIKE 'tl\\_tpl\\_%' AND NOT datistemplate"
    ).fetchall()
    return [classify(name, comment, max_age=max_age, now=now, host=host) for name, comment in rows]


def find_mysql_leftovers(conn: Any, *, max_age: float, now: float | None = None) -> list[Leftover]:
    """The same on MariaDB (its database comments); MySQL has none, so nothing is ever guessed there."""
    from testlane.databases.mariadb.template import has_schema_comments

    if not has_schema_comments(conn):
        return []
    now = time.time() if now is None else now
    host = socket.gethostname()
    with conn.cursor() as cur:
        cur.execute(
            "SELECT SCHEMA_NAME, SCHEMA_COMMENT FROM information_schema.SCHEMATA "
            "WHERE SCHEMA_NAME LIKE 'tl\\_%' AND SCHEMA_NAME NOT LIKE 'tl\\_tpl\\_%'"
        )
        rows = cur.fetchall()
    return [classify(name, comment or "", max_age=max_age, now=now, host=host) for name, comment in rows]


def reap_leftovers(server: Any, *, max_age: float = 24 * 3600) -> list[Leftover]:
    """Drop this server's testlane leftovers whose owner is gone (or that are too old)."""
    if server.engine == "mariadb":
        return _reap_mysql_leftovers(server, max_age=max_age)
    dropped = []
    with server.connect() as admin:
        for leftover in find_leftovers(admin, max_age=max_age):
            if leftover.reason is None:
                continue
            try:
                drop_database(admin, leftover.name)
            except Exception as exc:  # in use by someone after all: leave it for next time
                log.debug("could not drop leftover %s: %s", leftover.name, exc)
                continue
            log.info("dropped leftover database %s (%s)", leftover.name, leftover.reason)
            dropped.append(leftover)
    return dropped


def _reap_mysql_leftovers(server: Any, *, max_age: float) -> list[Leftover]:
    import contextlib

    from testlane.databases.mariadb.template import drop_database as drop_mysql_database

    dropped = []
    with contextlib.closing(server.connect()) as admin:
        for leftover in find_mysql_leftovers(admin, max_age=max_age):
            if leftover.reason is None:
                continue
            try:
                drop_mysql_database(admin, leftover.name)
            except Exception as exc:
                log.debug("could not drop leftover %s: %s", leftover.name, exc)
                continue
            log.info("dropped leftover database %s (%s)", leftover.name, leftover.reason)
            dropped.append(leftover)
    return dropped
