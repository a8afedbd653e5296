"""Putting a used clone back into its template's state, when that can be proven exact.

Cloning and dropping a database each cost a few hundred file operations (about 7 ms and 3 ms of
kernel time on tmpfs here); most tests only insert, update or delete rows. So after a test, once
every backend that used its database has exited (only then are its statistics final), the
per-relation statistics say what the test changed:

* **nothing** (tuple counters and sequence block accesses unchanged): the database goes back as is;
* **only rows of tables that are empty in the template** (and have no TRUNCATE triggers, and whose
  owned sequences were never used in the template): ``TRUNCATE ... RESTART IDENTITY`` of those
  tables and the tables that reference them restores the template's state exactly;
* **anything else** — a catalog change (DDL, grants, comments, large objects), a row of a table
  that has rows in the template, a sequence not owned by a truncated table: the database is
  dropped and a new clone takes its place.

What is safe to truncate is learned once per template (:func:`analyze`), on a throwaway clone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "Counters",
    "TemplateFacts",
    "analyze",
    "backends_serving",
    "plan_reset",
    "read_counters",
    "reset",
    "sanitize",
]

CATALOG_SCHEMAS = ("pg_catalog", "information_schema")
TRUNCATE_TRIGGER = 1 << 5  # TRIGGER_TYPE_TRUNCATE in pg_trigger.tgtype


@dataclass(frozen=True)
class Counters:
    """Per-relation change counters of one database: tables (ins+upd+del), sequences (block accesses)."""

    tables: dict[int, int] = field(default_factory=dict)
    sequences: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class TemplateFacts:
    """What may be truncated to restore the template (learned once per template)."""

    truncatable: frozenset[int]  # user tables, by oid
    names: dict[int, str]  # oid -> quoted qualified name, for TRUNCATE
    catalog: frozenset[int]  # counters whose change means DDL or another catalog write (the catalog sum)
    referenced_by: dict[int, frozenset[int]]  # table -> tables with a foreign key to it
    sequence_owner: dict[int, int]  # sequence oid -> owning table oid


def analyze(conn: psycopg.Connection) -> TemplateFacts:
    """Learn, on a fresh clone of the template, which tables can be reset by TRUNCATE."""
    rows = conn.execute(
        """
        SELECT c.oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname), n.nspname,
               EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgtype & %s <> 0)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname <> 'pg_toast' AND NOT c.relisshared
        """,
        (TRUNCATE_TRIGGER,),
    ).fetchall()
    names: dict[int, str] = {}
    candidates: set[int] = set()
    for oid, name, schema, has_truncate_trigger in rows:
        if schema in CATALOG_SCHEMAS or schema.startswith("pg_temp"):
            continue
        names[oid] = name
        if not has_truncate_trigger:
            candidates.add(oid)
    empty = set()
    for oid in candidates:
        row = conn.execute(f"SELECT NOT EXISTS (SELECT 1 FROM {names[oid]})").fetchone()
        if row and row[0]:
            empty.add(oid)
    owners = {
        seq: table
        for seq, table in conn.execute(
            "SELECT d.objid, d.refobjid FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'"
            " WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass"
            " AND d.deptype IN ('a', 'i')"
        ).fetchall()
    }
    used_sequences = {
        oid
        for (oid,) in conn.execute(
            "SELECT c.oid FROM pg_sequences s JOIN pg_namespace n ON n.nspname = s.schemaname"
            " JOIN pg_class c ON c.relname = s.sequencename AND c.relnamespace = n.oid WHERE s.last_value IS NOT NULL"
        ).fetchall()
    }
    # A table whose sequence was used in the template would not get its template value back.
    empty -= {owners[seq] for seq in used_sequences if seq in owners}
    referenced: dict[int, set[int]] = {}
    for child, parent in conn.execute("SELECT conrelid, confrelid FROM pg_constraint WHERE contype = 'f'").fetchall():
        referenced.setdefault(parent, set()).add(child)
    return TemplateFacts(
        truncatable=frozenset(empty),
        names=names,
        catalog=frozenset({CATALOG}),
        referenced_by={k: frozenset(v) for k, v in referenced.items()},
        sequence_owner=owners,
    )


CATALOG = 0  # key of the one counter summing every (non-shared) catalog table

_CHANGES = "pg_stat_get_tuples_inserted(c.oid) + pg_stat_get_tuples_updated(c.oid) + pg_stat_get_tuples_deleted(c.oid)"
COUNTERS_QUERY = f"""
SELECT 0, false, sum({_CHANGES})::bigint FROM pg_class c
WHERE c.relkind IN ('r', 'p', 'm') AND NOT c.relisshared
  AND c.relnamespace IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
UNION ALL
SELECT c.oid, c.relkind = 'S',
       CASE WHEN c.relkind = 'S' THEN pg_stat_get_blocks_fetched(c.oid) ELSE {_CHANGES} END
FROM pg_class c
WHERE c.relkind IN ('r', 'p', 'm', 'S') AND NOT c.relisshared
  AND c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace,
                             'pg_toast'::regnamespace)
"""


def read_counters(conn: psycopg.Connection) -> Counters:
    """User tables' tuple changes, sequences' block accesses, and all catalogs' changes as one sum.

    The connection must use ``stats_fetch_consistency = none`` (live values, no cached snapshot).
    """
    tables: dict[int, int] = {}
    sequences: dict[int, int] = {}
    for oid, is_sequence, value in conn.execute(COUNTERS_QUERY).fetchall():
        (sequences if is_sequence else tables)[oid] = int(value or 0)
    return Counters(tables, sequences)


def plan_reset(facts: TemplateFacts, before: Counters, after: Counters) -> list[str] | None:
    """The tables to truncate to restore the template ([] when nothing changed), or None when impossible."""
    # Shared catalogs (pg_database, pg_authid, ...) belong to the whole server: every CREATE DATABASE
    # changes them, and no per-database isolation could undo a test's change to them anyway.
    changed = {
        oid
        for oid, n in after.tables.items()
        if n != before.tables.get(oid, 0) and (oid in facts.names or oid in facts.catalog)
    }
    touched_sequences = {oid for oid, n in after.sequences.items() if n != before.sequences.get(oid, 0)}
    if not changed and not touched_sequences:
        return []
    if changed & facts.catalog or not changed <= facts.truncatable:
        return None
    closure = set(changed)
    frontier = list(changed)
    while frontier:
        for child in facts.referenced_by.get(frontier.pop(), ()):
            if child not in closure:
                if child not in facts.truncatable:
                    return None  # TRUNCATE would have to remove a template row elsewhere
                closure.add(child)
                frontier.append(child)
    if any(facts.sequence_owner.get(seq) not in closure for seq in touched_sequences):
        return None
    return sorted(facts.names[oid] for oid in closure)


def reset(conn: psycopg.Connection, tables: list[str]) -> Counters:
    """Truncate ``tables`` (restarting their sequences) and return the counters afterwards."""
    if tables:
        # One round trip; our own changes are flushed when the backend goes idle, so they are part of
        # the counters read next (the new baseline).
        conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY; SELECT pg_stat_force_next_flush()")
    return read_counters(conn)


SANITIZE = (
    "RESET ALL; SET stats_fetch_consistency = none; DISCARD TEMP; UNLISTEN *; CLOSE ALL; DEALLOCATE ALL; "
    "SELECT pg_advisory_unlock_all(); SELECT pg_stat_force_next_flush()"
)


def sanitize(conn: psycopg.Connection) -> None:
    """Put a connection a test used back into a fresh session's state (autocommit on afterwards).

    Pool connections never prepare statements on the server (``prepare_threshold = None``), so
    ``DEALLOCATE ALL`` cannot confuse psycopg's cache.
    """
    if conn.info.transaction_status != 0:  # not idle: roll back whatever the test left open
        conn.rollback()
    conn.autocommit = True
    # One round trip. The forced flush happens when the backend goes idle after it, so the test's
    # writes on this connection are in the counters read next.
    conn.execute(SANITIZE)


def backends_serving(postmaster_pid: int, names: set[str], exclude: set[int] | None = None) -> set[str]:
    """Which of ``names`` still have a server process (whose statistics may not be flushed yet).

    A backend leaves pg_stat_activity *before* flushing its statistics, so the process list is the
    proof; process titles read ``postgres: <user> <database> <client> <state>``. Read from /proc
    directly: psutil's per-process objects cost more than the check is worth on this path.
    """
    busy: set[str] = set()
    try:
        with open(f"/proc/{postmaster_pid}/task/{postmaster_pid}/children", "rb") as fh:
            children = fh.read().split()
    except OSError:
        children = _children_via_psutil(postmaster_pid)
    tokens = {f" {name} ".encode(): name for name in names}
    skip = {str(pid).encode() for pid in exclude or ()}
    for child in children:
        if child in skip:
            continue
        try:
            with open(b"/proc/" + child + b"/cmdline", "rb") as fh:
                title = fh.read().replace(b"\0", b" ") + b" "
        except OSError:
            continue
        for token, name in tokens.items():
            if token in title:
                busy.add(name)
    return busy


def _children_via_psutil(pid: int) -> list[bytes]:
    import psutil

    try:
        return [str(c.pid).encode() for c in psutil.Process(pid).children()]
    except psutil.Error:
        return []


def can_scan_processes() -> bool:
    return os.path.isdir("/proc")
