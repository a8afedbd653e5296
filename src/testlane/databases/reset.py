"""Putting a used clone back into its template's state, when that can be proven exact.

Cloning and dropping a database each cost a few hundred file operations (about 7 ms and 3 ms of
kernel time on tmpfs here); most tests only insert, update or delete rows. So after a test, once
every backend that used its database has exited (only then are its statistics final), the
statistics say what the test changed:

* **nothing** (the database's tuple counters and the sequences' block accesses unchanged; read first,
  before any per-table counter): the database goes back as is;
* **only rows of tables that are empty in the template** (and have no TRUNCATE triggers, and whose
  owned sequences were never used in the template): ``TRUNCATE ... RESTART IDENTITY`` of those
  tables and the tables that reference them restores the template's state exactly;
* **only inserts into tables that have rows in the template** (no update, no delete counted on them:
  every template row is untouched): ``DELETE ... WHERE xmin`` is one of the test's transactions removes
  exactly the test's rows — a template row's ``xmin`` is older than the clone (so than any transaction
  of a test), a test's row's is not (looked for from the template's last page on, the whole table only
  when the statistics' live count says rows are missing: :meth:`ResetPlan.run`). Done with
  ``session_replication_role = replica``, so no trigger
  fires (in the template those rows never existed, so neither did a deletion's side effects); tables
  with a DELETE trigger or rule that would fire anyway (``ENABLE ALWAYS``/``REPLICA``) are not restored
  this way. Sequences the test used go back to the template's ``last_value``/``is_called`` by ``setval``;
* **anything else** — a catalog change (DDL, grants, comments, large objects), an update or delete of
  a seeded table, a statistics reset, an xid past 2^31 (the 32-bit ``xmin`` could no longer be
  compared): the database is dropped and a new clone takes its place.

What is safe to truncate or restore is learned once per template (:func:`analyze`), on a throwaway clone.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "Counters",
    "ResetPlan",
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
DELETE_TRIGGER = 1 << 3  # TRIGGER_TYPE_DELETE
# Below it, a row's 32-bit xmin is its transaction's 64-bit id, and every normal xid is less than 2^31 older
# than the newest, so age() orders them (a frozen or bootstrap xmin's age is INT_MAX: a template row).
XID_LIMIT = 1 << 31


@dataclass(frozen=True)
class Counters:
    """One database's statistics at one moment.

    ``tables``: per user table, tuples inserted + updated + deleted (key :data:`CATALOG`: the sum over every
    catalog table); ``rewritten``: per user table, tuples updated + deleted + vacuums + analyzes (which
    overwrite ``live``); ``live``: per user table, live tuples (committed inserts - committed deletes, for
    what a test added to a seeded table; only read for tables whose counters are not 0); ``sequences``: per sequence,
    block accesses; ``database``: the database's own inserted + updated + deleted sum (None: not read);
    ``next_xid``: the first unassigned 64-bit transaction id when read (None: not read); ``stats_reset``:
    the database's statistics reset time, as text (None: never reset, or not read); ``sequence_sum``: all
    sequences' block accesses (None: not read); ``restored``:
    what the reset that produced these counters restored by deleting the test's rows (for tests and
    reports). Missing keys count as 0.
    """

    tables: dict[int, int] = field(default_factory=dict)
    sequences: dict[int, int] = field(default_factory=dict)
    rewritten: dict[int, int] = field(default_factory=dict)
    database: int | None = None
    next_xid: int | None = None
    restored: tuple[str, ...] = ()
    stats_reset: str | None = None  # when this database's statistics were last reset (a test may reset them)
    sequence_sum: int | None = None  # the sum of ``sequences`` over every sequence (None: not read)
    live: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class TemplateFacts:
    """What may be truncated or restored to get back to the template (learned once per template)."""

    truncatable: frozenset[int]  # user tables, by oid
    names: dict[int, str]  # oid -> quoted qualified name, for TRUNCATE/DELETE
    catalog: frozenset[int]  # counters whose change means DDL or another catalog write (the catalog sum)
    referenced_by: dict[int, frozenset[int]]  # table -> tables with a foreign key to it
    sequence_owner: dict[int, int]  # sequence oid -> owning table oid
    # Plain tables whose inserted rows a DELETE by xmin removes without anything firing (see module doc).
    restorable: frozenset[int] = frozenset()
    # sequence oid -> (quoted name, last_value, is_called) in the template
    sequence_state: dict[int, tuple[str, int, bool]] = field(default_factory=dict)
    # First 64-bit xid any transaction on a clone can have (the template's sealing xid + 1); None: unknown.
    first_clone_xid: int | None = None
    pages: dict[int, int] = field(default_factory=dict)  # restorable table -> its size in pages in the template


@dataclass(frozen=True)
class ResetPlan:
    """Statements that put a database back: tables to truncate (quoted names), tables whose rows with an
    ``xmin`` at or after ``first_xid`` are deleted, and ``setval`` arguments (name, last_value, is_called)."""

    truncate: tuple[str, ...] = ()
    delete: tuple[str, ...] = ()
    setval: tuple[tuple[str, int, bool], ...] = ()
    first_xid: int = 0
    oids: tuple[int, ...] = field(default=(), compare=False)  # every relation the statements change
    # Per table of ``delete``: (name, first page to look at, how many rows of the test it holds); see run().
    ranged: tuple[tuple[str, int, int], ...] = field(default=(), compare=False)

    def __bool__(self) -> bool:
        return bool(self.truncate or self.delete or self.setval)

    def statement(self) -> str:
        """One simple-query string (one implicit transaction: all or nothing)."""
        parts = []
        if self.truncate:
            parts.append(f"TRUNCATE {', '.join(self.truncate)} RESTART IDENTITY")
        if self.delete:
            # Superuser-only; refused on a shared server's non-superuser, which then means a new clone.
            # row_security = off makes a policy that would hide a row an error, not a silent partial delete.
            parts.append("SET LOCAL session_replication_role = replica; SET LOCAL row_security = off")
            # xmin >= first_xid, as ages from the same stable "now" (cheaper than casting xmin per row).
            test_rows = f"age(xmin) <= age('{self.first_xid}'::xid)"
            parts += [f"DELETE FROM ONLY {name} WHERE {test_rows}" for name in self.delete]  # (not inheritors)
        parts += [
            "SELECT setval('{}', {}, {})".format(name.replace("'", "''"), value, called)
            for name, value, called in self.setval
        ]
        # setval and nextval leave currval/lastval defined on this backend: a fresh session has neither.
        parts.append("DISCARD SEQUENCES")
        return "; ".join(parts)

    def run(self, conn: psycopg.Connection) -> None:
        """Carry the plan out in one transaction (``conn`` in autocommit mode).

        Without a seeded table with more than one page, :meth:`statement` in one round trip. Otherwise a
        test's rows are first looked for from the template's last page on (a TID range scan: new rows
        go to the end, unless the free space map offers an earlier page); when fewer rows were found than
        the statistics say the test added (``live``: committed inserts, exact since no update, delete,
        vacuum or analyze is counted on the table), the whole table is scanned for the rest.
        """
        ranged = [entry for entry in self.ranged if entry[1] > 0]
        if not ranged:
            conn.execute(f"{self.statement()}; SELECT pg_stat_force_next_flush()")
            return
        test_rows = f"age(xmin) <= age('{self.first_xid}'::xid)"
        whole = {name for name in self.delete} - {entry[0] for entry in ranged}
        head = [f"TRUNCATE {', '.join(self.truncate)} RESTART IDENTITY"] if self.truncate else []
        head += ["SET LOCAL session_replication_role = replica", "SET LOCAL row_security = off"]
        head += [f"DELETE FROM ONLY {name} WHERE {test_rows}" for name in sorted(whole)]
        conn.execute("BEGIN")
        try:
            conn.execute("; ".join(head))
            for name, page, expected in ranged:
                found = conn.execute(f"DELETE FROM ONLY {name} WHERE ctid >= '({page},0)'::tid AND {test_rows}")
                if found.rowcount != expected:
                    conn.execute(f"DELETE FROM ONLY {name} WHERE {test_rows}")
            rest = [
                "SELECT setval('{}', {}, {})".format(name.replace("'", "''"), value, called)
                for name, value, called in self.setval
            ]
            conn.execute("; ".join([*rest, "DISCARD SEQUENCES", "COMMIT", "SELECT pg_stat_force_next_flush()"]))
        except BaseException:
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
            raise


def analyze(conn: psycopg.Connection) -> TemplateFacts:
    """Learn, on a fresh clone of the template, which tables can be reset by TRUNCATE or restored by DELETE."""
    rows = conn.execute(
        """
        SELECT c.oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname), n.nspname, c.relkind,
               pg_relation_size(c.oid) / current_setting('block_size')::bigint,
               EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgtype & %s <> 0),
               EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgtype & %s <> 0
                       AND t.tgenabled IN ('A', 'R'))
               OR EXISTS (SELECT 1 FROM pg_rewrite r WHERE r.ev_class = c.oid AND r.ev_type = '4')
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname <> 'pg_toast' AND NOT c.relisshared
        """,
        (TRUNCATE_TRIGGER, DELETE_TRIGGER),
    ).fetchall()
    names: dict[int, str] = {}
    candidates: set[int] = set()
    restorable: set[int] = set()
    pages: dict[int, int] = {}
    for oid, name, schema, relkind, size, has_truncate_trigger, fires_on_delete in rows:
        if schema in CATALOG_SCHEMAS or schema.startswith("pg_temp"):
            continue
        names[oid] = name
        if not has_truncate_trigger:
            candidates.add(oid)
        if relkind == "r" and not fires_on_delete:
            restorable.add(oid)
            pages[oid] = int(size)
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
    sequences = conn.execute(
        "SELECT c.oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'S'"
    ).fetchall()
    state: dict[int, tuple[str, int, bool]] = {}
    if sequences:
        values = " UNION ALL ".join(
            f"(SELECT {oid}::bigint, last_value, is_called FROM {name})" for oid, name in sequences
        )
        quoted: dict[int, str] = {oid: name for oid, name in sequences}
        state = {oid: (quoted[oid], int(last), bool(called)) for oid, last, called in conn.execute(values).fetchall()}
    used_sequences = {oid for oid, (_, _, called) in state.items() if called}
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
        restorable=frozenset(restorable - empty),
        sequence_state=state,
        pages={oid: n for oid, n in pages.items() if oid not in empty},
    )


def first_clone_xid(admin: psycopg.Connection, template: str) -> int | None:
    """The first xid a transaction on a clone of ``template`` can have, or None when unknown.

    Every row of the template was written before its ``pg_database`` row was last changed (testlane seals
    a template with ``ALTER DATABASE ... ALLOW_CONNECTIONS false`` once built, and nobody can connect to it
    after); a clone, and so every transaction on it, comes later. Valid while xids stay below
    :data:`XID_LIMIT` (checked at each reset), where the 32-bit ``xmin`` is the xid itself.
    """
    row = admin.execute(
        "SELECT xmin::text::bigint, datallowconn FROM pg_database WHERE datname = %s", (template,)
    ).fetchone()
    if row is None or row[1]:
        return None
    return int(row[0]) + 1


CATALOG = 0  # key of the one counter summing every (non-shared) catalog table

_CHANGES = "pg_stat_get_tuples_inserted(c.oid) + pg_stat_get_tuples_updated(c.oid) + pg_stat_get_tuples_deleted(c.oid)"
# Reading a counter costs about 1 us on the server (a shared hash lookup and a copy, with
# stats_fetch_consistency = none), so a read skips what it can. First, three sums: the database's own tuple
# counters (which sum every table's, catalogs and TOAST included), the sequences' block accesses, and —
# for the next xid and the statistics' reset time — nothing per relation. Every counter only grows (until
# a statistics reset, which moves the reset time), so an unchanged sum means no member changed: the
# per-table counters are read only when the database's sum moved, the per-sequence ones only when the
# sequences' sum did (one-time filters: the server skips the branch), and only relations whose counters are
# not 0 are returned (a missing one counts as 0), updates+deletes only for tables whose counters moved.
_DATABASE = """
SELECT -1::bigint, 'd', (pg_stat_get_db_tuples_inserted(d.oid) + pg_stat_get_db_tuples_updated(d.oid)
                         + pg_stat_get_db_tuples_deleted(d.oid))::bigint AS total,
       txid_snapshot_xmax(txid_current_snapshot()), pg_stat_get_db_stat_reset_time(d.oid)::text
FROM pg_database d WHERE d.datname = current_database()
"""
_CATALOG = f"""
SELECT 0::bigint, 'c', sum({_CHANGES})::bigint, 0, NULL FROM pg_class c
WHERE c.relkind IN ('r', 'p', 'm') AND NOT c.relisshared
  AND c.relnamespace IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace) {{gate}}
"""
_USER_TABLES = """c.relkind IN ('r', 'p', 'm') AND NOT c.relisshared
      AND c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace,
                                 'pg_toast'::regnamespace)"""
_PER_TABLE = f"""
SELECT oid::bigint, 'r', n,
       CASE WHEN n <> 0 THEN pg_stat_get_tuples_updated(oid) + pg_stat_get_tuples_deleted(oid)
            + pg_stat_get_vacuum_count(oid) + pg_stat_get_autovacuum_count(oid)
            + pg_stat_get_analyze_count(oid) + pg_stat_get_autoanalyze_count(oid) END,
       CASE WHEN n <> 0 THEN pg_stat_get_live_tuples(oid)::text END
FROM (SELECT c.oid, {_CHANGES} AS n FROM pg_class c WHERE {{where}} OFFSET 0) per_table WHERE n <> 0
"""
# Literal values, no parameters: the simple query protocol (with parameters, the extended protocol and a
# custom plan per call cost about 0.4 ms more here).
COUNTERS_QUERY = f"""
WITH db AS MATERIALIZED ({_DATABASE}),
seqs AS MATERIALIZED (
    SELECT c.oid, pg_stat_get_blocks_fetched(c.oid) AS n FROM pg_class c WHERE c.relkind = 'S'
), seq_sum AS MATERIALIZED (SELECT coalesce(sum(n), 0)::bigint AS total FROM seqs)
SELECT * FROM db
UNION ALL
SELECT -2::bigint, 'q', total, 0, NULL FROM seq_sum
UNION ALL
SELECT oid::bigint, 'S', n, 0, NULL FROM seqs
WHERE n <> 0 AND (SELECT total FROM seq_sum) IS DISTINCT FROM {{sequences}}::bigint
UNION ALL
{_CATALOG}
UNION ALL
{_PER_TABLE}
"""
# (When the database's sum is unchanged the gated branches read nothing; the catalog's aggregate then
# still returns its one row, with NULL, which read_counters replaces by the baseline's like every table.)
_GATE = "AND (SELECT total FROM db) IS DISTINCT FROM {database}::bigint"


def _literal(value: int | None) -> str:
    return "NULL" if value is None else str(int(value))


def read_counters(conn: psycopg.Connection, baseline: Counters | None = None) -> Counters:
    """The database's counters (see :class:`Counters`), in one round trip. With ``baseline``: per-table and
    per-sequence counters whose sum is as in ``baseline`` are not read (``baseline``'s are kept).

    The connection must use ``stats_fetch_consistency = none`` (live values, no cached snapshot).
    """
    known = baseline if baseline is not None and baseline.database is not None else None
    database = _literal(known.database if known else None)
    gate = _GATE.format(database=database)
    query = COUNTERS_QUERY.format(
        sequences=_literal(known.sequence_sum if known else None), where=f"{_USER_TABLES} {gate}", gate=gate
    )
    read = _parse(conn.execute(query).fetchall())
    if known is None or read.stats_reset != known.stats_reset:
        return read  # (a changed reset time means a new clone: what was skipped does not matter)
    if read.database == known.database:
        read = replace(read, tables=known.tables, rewritten=known.rewritten, live=known.live)
    if read.sequence_sum == known.sequence_sum:
        read = replace(read, sequences=known.sequences)
    return read


def read_touched(conn: psycopg.Connection, before: Counters, oids: tuple[int, ...], *, catalog: bool) -> Counters:
    """``before`` with the database's sum and the counters of ``oids`` (tables and sequences; with
    ``catalog``, the catalog sum) read again — what a reset's own statements change.

    The sequences' sum is ``before``'s moved by what the named sequences moved. Were anything else to have
    moved, it would only show as a change at the next reset (a counter only grows): a needless reset or
    clone then, never a missed one.
    """
    listed = ", ".join(str(int(oid)) for oid in oids) or "0"
    parts = [_DATABASE, _PER_TABLE.replace("{where}", f"c.oid IN ({listed})")]
    parts.append(
        f"SELECT c.oid::bigint, 'S', pg_stat_get_blocks_fetched(c.oid), 0, NULL FROM pg_class c"
        f" WHERE c.relkind = 'S' AND c.oid IN ({listed})"
    )
    if catalog:
        parts.append(_CATALOG.replace("{gate}", ""))
    read = _parse(conn.execute(" UNION ALL ".join(f"({part})" for part in parts)).fetchall())
    again = set(oids) | ({CATALOG} if catalog else set())
    sequences = {oid: n for oid, n in before.sequences.items() if oid not in again} | read.sequences
    sequence_sum = None
    if before.sequence_sum is not None:
        moved = sum(read.sequences.values()) - sum(before.sequences.get(oid, 0) for oid in read.sequences)
        sequence_sum = before.sequence_sum + moved
    return replace(
        read,
        tables={oid: n for oid, n in before.tables.items() if oid not in again} | read.tables,
        rewritten={oid: n for oid, n in before.rewritten.items() if oid not in again} | read.rewritten,
        live={oid: n for oid, n in before.live.items() if oid not in again} | read.live,
        sequences=sequences,
        sequence_sum=sequence_sum,
    )


def _parse(rows: list[tuple[int, str, int | None, int | None, str | None]]) -> Counters:
    tables: dict[int, int] = {}
    rewritten: dict[int, int] = {}
    live: dict[int, int] = {}
    sequences: dict[int, int] = {}
    database = next_xid = sequence_sum = None
    stats_reset = None
    for oid, kind, value, extra, stamp in rows:
        if kind == "d":
            database, next_xid, stats_reset = int(value or 0), int(extra or 0), stamp
        elif kind == "q":
            sequence_sum = int(value or 0)
        elif kind == "S":
            sequences[oid] = int(value or 0)
        else:
            tables[oid] = int(value or 0)
            if kind == "r":
                rewritten[oid] = int(extra or 0)
                live[oid] = int(stamp or 0)  # (the text column: live tuples, for a table)
    return Counters(tables, sequences, rewritten, database, next_xid, (), stats_reset, sequence_sum, live)


def plan_reset(facts: TemplateFacts, before: Counters, after: Counters) -> ResetPlan | None:
    """What restores the template (an empty plan when nothing changed), or None when nothing provably does."""
    # Shared catalogs (pg_database, pg_authid, ...) belong to the whole server: every CREATE DATABASE
    # changes them, and no per-database isolation could undo a test's change to them anyway.
    if after.stats_reset != before.stats_reset and before.database is not None:
        return None  # a test reset the statistics: what it changed cannot be told
    for oid, was in before.tables.items():
        if after.tables.get(oid, 0) < was:
            return None  # statistics were reset: nothing is known
    for oid, was in before.sequences.items():
        if after.sequences.get(oid, 0) < was:
            return None
    changed = set()
    for oid, n in after.tables.items():
        if oid in facts.names or oid in facts.catalog:
            was = before.tables.get(oid, 0)
            if n < was:
                return None  # statistics were reset: nothing is known
            if n != was:
                changed.add(oid)
    touched_sequences = set()
    for oid, n in after.sequences.items():
        was = before.sequences.get(oid, 0)
        if n < was:
            return None
        if n != was:
            touched_sequences.add(oid)
    if not changed and not touched_sequences:
        return ResetPlan()
    if changed & facts.catalog:
        return None
    truncate = changed & facts.truncatable
    delete = changed - truncate
    for oid in delete:
        if oid not in facts.restorable or after.rewritten.get(oid, 0) != before.rewritten.get(oid, 0):
            return None  # a template row may have been changed, or a DELETE would fire something
    closure = set(truncate)
    frontier = list(truncate)
    while frontier:
        for child in facts.referenced_by.get(frontier.pop(), ()):
            if child not in closure:
                if child not in facts.truncatable:
                    return None  # TRUNCATE would have to remove a template row elsewhere
                closure.add(child)
                frontier.append(child)
    delete -= closure
    first_xid = before.next_xid if before.next_xid is not None else facts.first_clone_xid
    if delete and (first_xid is None or after.next_xid is None or after.next_xid >= XID_LIMIT):
        return None  # which rows are the test's cannot be told
    setval = []
    restarted = {seq for seq, owner in facts.sequence_owner.items() if owner in closure}
    for seq in touched_sequences - restarted:
        # (RESTART IDENTITY puts the others back: truncatable tables' sequences are unused in the template)
        state = facts.sequence_state.get(seq)
        if state is None:
            return None
        setval.append(state)
    ranged = tuple(
        sorted(
            (facts.names[oid], max(facts.pages.get(oid, 0) - 1, 0), after.live.get(oid, 0) - before.live.get(oid, 0))
            for oid in delete
        )
    )
    return ResetPlan(
        truncate=tuple(sorted(facts.names[oid] for oid in closure)),
        delete=tuple(sorted(facts.names[oid] for oid in delete)),
        setval=tuple(sorted(setval)),
        first_xid=first_xid or 0,
        oids=tuple(sorted(closure | delete | restarted | touched_sequences)),
        ranged=ranged,
    )


def reset(conn: psycopg.Connection, plan: ResetPlan, before: Counters) -> Counters:
    """Carry out ``plan`` and return the counters afterwards (the next test's baseline); ``before``: the
    counters read just before, of which only what the plan touched is read again.

    The plan's statements change the counters of the relations they name (``plan.oids``), the
    database's and the sequences' sums and, with a TRUNCATE, the catalog sum: those are read again, the
    rest is taken from ``before``. Were anything else to move, it would only show as a change at the next
    reset (a counter only grows): a needless reset or clone then, never a missed one.
    """
    if not plan:
        return before
    # Our own changes are flushed when the backend goes idle, so they are part of the counters read next
    # (the new baseline).
    plan.run(conn)
    return replace(read_touched(conn, before, plan.oids, catalog=bool(plan.truncate)), restored=plan.delete)


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
