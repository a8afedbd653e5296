"""Putting a used clone back into its template's state, when that can be proven exact.

Cloning and dropping a database each cost a few hundred file operations (about 7 ms and 3 ms of
kernel time on tmpfs here); most tests only insert, update or delete rows. So after a test, once
every backend that used its database has exited (only then are its statistics final), the
statistics say what the test changed:

* **nothing** (the database's tuple counters and the sequences' block accesses unchanged; read first,
  before any per-table counter): the database goes back as is;
* **rows of tables that are empty in the template**: every row such a table holds is the test's, so
  ``DELETE FROM ONLY t`` (no predicate) removes exactly the test's rows — no new relation file, no
  catalog write, no foreign-key closure: it runs as a replica (see below), so no foreign-key trigger
  fires, and a row that referenced a deleted one is itself a test's row in a table the statistics show
  written, restored the same way or by one of the paths below. Chosen while the table's heap
  has at most :data:`DELETE_PAGES` pages (the planner estimates a never-analyzed table of fewer than
  10 pages as 10 pages, so below that limit the next test's plans see the fresh clone's estimate, and a
  DELETE scans little); past it — rows from earlier reuses accumulate as dead tuples, which only a
  VACUUM would free —, for a table a VACUUM or ANALYZE ran on (it wrote the table's size into ``pg_class``,
  which a TRUNCATE resets) and for a table a DELETE would fire something on, ``TRUNCATE`` of the table and
  every table that references it (all empty in the template, none with a TRUNCATE trigger), which gives
  it zero pages and zero dead tuples again; unless those TRUNCATEs would replace more relation files
  than a clone is worth (:data:`TRUNCATE_FILE_COST`): then a new clone;
* **only inserts into tables that have rows in the template** (no update, no delete counted on them:
  every template row is untouched): ``DELETE ... WHERE xmin`` is one of the test's transactions removes
  exactly the test's rows — a template row's ``xmin`` is older than the clone (so than any transaction
  of a test), a test's row's is not (looked for from the template's last page on, the whole table only
  when the statistics' live count says rows are missing: :meth:`ResetPlan.run`);
* every DELETE runs with ``session_replication_role = replica``, so no trigger fires (in the template
  those rows never existed, so neither did a deletion's side effects); tables with a DELETE trigger or
  rule that would fire anyway (``ENABLE ALWAYS``/``REPLICA``) are not restored by DELETE. Sequences the
  test used go back to the template's ``last_value``/``is_called`` by ``setval``;
* **anything else** — a catalog change (DDL, grants, comments, large objects), an update or delete of
  a seeded table, a statistics reset, an xid past 2^31 (the 32-bit ``xmin`` could no longer be
  compared): the database is dropped and a new clone takes its place.

What may be truncated or restored is learned once per template (:func:`analyze`), on a throwaway clone.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "Counters",
    "ResetPlan",
    "TableCounters",
    "TemplateFacts",
    "analyze",
    "backends_serving",
    "hot_tables",
    "plan_reset",
    "read_counters",
    "reset",
    "restore",
    "sanitize",
    "settle",
]

CATALOG_SCHEMAS = ("pg_catalog", "information_schema")
TRUNCATE_TRIGGER = 1 << 5  # TRIGGER_TYPE_TRUNCATE in pg_trigger.tgtype
DELETE_TRIGGER = 1 << 3  # TRIGGER_TYPE_DELETE
# Below it, a row's 32-bit xmin is its transaction's 64-bit id, and every normal xid is less than 2^31 older
# than the newest, so age() orders them (a frozen or bootstrap xmin's age is INT_MAX: a template row).
XID_LIMIT = 1 << 31
# A table empty in the template is restored by DELETE while its heap has at most this many pages.
# The planner takes a never-analyzed heap of fewer than 10 pages for 10 pages (table_block_relation_estimate_size),
# so at the next test's start its estimates are a fresh clone's; and such a DELETE scans at most 10 pages.
DELETE_PAGES = 10
# Replacing one relation file by TRUNCATE (new file, catalog row updated, old file unlinked at commit, the
# relation's cache entries invalidated) costs about this many times what copying one file costs a clone
# (bench/seeded_reset.py --costs: 4.0 and 4.3 here): TRUNCATEs replacing more than template_files /
# TRUNCATE_FILE_COST files cost more than a new clone, which is made instead.
TRUNCATE_FILE_COST = 4
# Deleting this many of a test's rows from a seeded table costs about what copying one relation file costs a
# clone (bench/seeded_reset.py --costs: 70 and 84 here): a test that added more than template_files *
# ROWS_PER_FILE rows to seeded tables gets a new clone instead.
ROWS_PER_FILE = 75
SETTLE_TIMEOUT = 2.0  # a released database whose connections stay open longer is dropped, not reset


class TableCounters(NamedTuple):
    """One table's statistics: ``changes``, tuples inserted + updated + deleted; and, read only when
    ``changes`` is not 0: ``rewritten``, tuples updated + deleted; ``maintained``, vacuums + analyzes (which
    write the table's size into ``pg_class`` and overwrite ``live``); ``live``, live tuples (committed inserts
    - committed deletes); ``pages``, the size of the table's heap in pages
    (what a DELETE scans and the planner estimates rows from; read with one file-size check, about 5 us)."""

    changes: int
    rewritten: int = 0
    maintained: int = 0
    live: int = 0
    pages: int = 0


UNSEEN = TableCounters(0)


@dataclass(frozen=True)
class Counters:
    """One database's statistics at one moment.

    ``tables``: per user table (key :data:`CATALOG`: the sum over every catalog table); ``sequences``: per
    sequence, block accesses; ``database``: the database's own inserted + updated + deleted sum;
    ``sequence_sum``: all sequences' block accesses; ``next_xid``: the first unassigned 64-bit transaction
    id when read; ``stats_reset``: the database's statistics reset time, as text (None: never reset);
    ``restored``: the tables the reset that produced these counters restored by DELETE (for tests and
    reports). Missing keys count as 0 (:data:`UNSEEN`); None: not read.
    """

    tables: dict[int, TableCounters] = field(default_factory=dict)
    sequences: dict[int, int] = field(default_factory=dict)
    database: int | None = None
    sequence_sum: int | None = None
    next_xid: int | None = None
    stats_reset: str | None = None  # when this database's statistics were last reset (a test may reset them)
    restored: tuple[str, ...] = ()


@dataclass(frozen=True)
class TemplateFacts:
    """What may be truncated or restored to get back to the template (learned once per template)."""

    names: dict[int, str]  # user table oid -> quoted qualified name, for TRUNCATE/DELETE
    empty: frozenset[int] = frozenset()  # tables without a row in the template
    truncatable: frozenset[int] = frozenset()  # of those, the ones without a TRUNCATE trigger
    # Plain tables a DELETE as a replica fires nothing on (see module doc): empty ones restored by deleting
    # every row, seeded ones by deleting the rows with a test's xmin.
    restorable: frozenset[int] = frozenset()
    referenced_by: dict[int, frozenset[int]] = field(default_factory=dict)  # table -> tables with a foreign key to it
    # sequence oid -> (quoted name, last_value, is_called) in the template
    sequence_state: dict[int, tuple[str, int, bool]] = field(default_factory=dict)
    # First 64-bit xid any transaction on a clone can have (the template's sealing xid + 1); None: unknown.
    first_clone_xid: int | None = None
    pages: dict[int, int] = field(default_factory=dict)  # seeded restorable table -> its heap's pages in the template
    files: dict[int, int] = field(default_factory=dict)  # table -> relation files a TRUNCATE of it replaces
    template_files: int = 0  # relation files a clone copies (0: unknown, TRUNCATEs not weighed)
    # The catalog tables (not shared) whose counters the catalog sum adds up: read by oid, not found by a scan
    # of pg_class (whose rows grow with the schema). Empty: unknown, pg_class is scanned.
    catalog: tuple[int, ...] = ()

    @cached_property
    def arrays(self) -> tuple[str, str, str]:
        """Array literals of the user tables', the sequences' and the catalog tables' oids, for the counter
        reads (built once: about 0.1 ms of the reset's Python at 300 tables otherwise)."""
        return _array(sorted(self.names)), _array(sorted(self.sequence_state)), _array(self.catalog)

    def split(self, hot: frozenset[int]) -> tuple[str, str]:
        """Array literals of ``hot`` and of the other user tables (built once per set: the set only grows)."""
        split = self._splits.get(hot)
        if split is None:
            split = self._splits[hot] = (_array(sorted(hot)), _array(sorted(self.names.keys() - hot)))
        return split

    @cached_property
    def _splits(self) -> dict[frozenset[int], tuple[str, str]]:
        return {}


@dataclass(frozen=True)
class ResetPlan:
    """Statements that put a database back: tables to truncate, tables empty in the template whose every row
    is deleted (``empty``), seeded tables whose rows with an ``xmin`` at or after ``first_xid`` are deleted
    (``delete``), all by quoted name, and ``setval`` arguments (name, last_value, is_called)."""

    truncate: tuple[str, ...] = ()
    empty: tuple[str, ...] = ()
    delete: tuple[str, ...] = ()
    setval: tuple[tuple[str, int, bool], ...] = ()
    first_xid: int = 0
    oids: tuple[int, ...] = field(default=(), compare=False)  # every relation the statements change
    # Per table of ``delete``: (name, first page to look at, how many rows of the test it holds); see run().
    ranged: tuple[tuple[str, int, int], ...] = field(default=(), compare=False)

    def __bool__(self) -> bool:
        return bool(self.truncate or self.empty or self.delete or self.setval)

    def statement(self) -> str:
        """One simple-query string (one implicit transaction: all or nothing)."""
        return "; ".join([*self._deletes(self.delete), *self._sequences()])

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
            conn.execute(f"{self.statement()}; {_FLUSH}")
            return
        skip = {name for name, _, _ in ranged}
        conn.execute("BEGIN")
        try:
            conn.execute("; ".join(self._deletes([name for name in self.delete if name not in skip], replica=True)))
            for name, page, expected in ranged:
                found = conn.execute(_delete(name, f"ctid >= '({page},0)'::tid AND {self._test_rows()}"))
                if found.rowcount != expected:
                    conn.execute(_delete(name, self._test_rows()))
            conn.execute("; ".join([*self._sequences(), "COMMIT", _FLUSH]))
        except BaseException:
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
            raise

    def _test_rows(self) -> str:
        # xmin >= first_xid, as ages from the same stable "now" (cheaper than casting xmin per row).
        return f"age(xmin) <= age('{self.first_xid}'::xid)"

    def _deletes(self, delete: Iterable[str], *, replica: bool = False) -> list[str]:
        """The TRUNCATE, then as a replica the DELETEs of every row of ``empty`` and of the test's rows of
        ``delete`` (``replica``: switch to the replica role even without a DELETE here)."""
        parts = [f"TRUNCATE {', '.join(self.truncate)}"] if self.truncate else []
        delete = list(delete)
        if replica or self.empty or delete:
            # Superuser-only; refused on a shared server's non-superuser, which then means a new clone.
            # row_security = off makes a policy that would hide a row an error, not a silent partial delete.
            parts.append("SET LOCAL session_replication_role = replica; SET LOCAL row_security = off")
        parts += [_delete(name) for name in self.empty]
        parts += [_delete(name, self._test_rows()) for name in delete]
        return parts

    def _sequences(self) -> list[str]:
        setval = "SELECT setval('{}', {}, {})"
        parts = [setval.format(name.replace("'", "''"), value, called) for name, value, called in self.setval]
        # setval and nextval leave currval/lastval defined on this backend: a fresh session has neither.
        return [*parts, "DISCARD SEQUENCES"]


def _delete(name: str, where: str | None = None) -> str:
    return f"DELETE FROM ONLY {name}" + (f" WHERE {where}" if where else "")  # ONLY: not its inheritors


_FLUSH = "SELECT pg_stat_force_next_flush()"


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
    no_truncate_trigger: set[int] = set()
    restorable: set[int] = set()
    pages: dict[int, int] = {}
    catalog: list[int] = []
    for oid, name, schema, relkind, size, has_truncate_trigger, fires_on_delete in rows:
        if schema in CATALOG_SCHEMAS:
            catalog.append(oid)
            continue
        if schema.startswith("pg_temp"):
            continue
        names[oid] = name
        if relkind in ("r", "p"):  # (a materialized view is never emptied or restored: a new clone)
            candidates.add(oid)
        if not has_truncate_trigger:
            no_truncate_trigger.add(oid)
        if relkind == "r" and not fires_on_delete:
            restorable.add(oid)
            pages[oid] = int(size)
    empty = set()
    for oid in candidates:
        row = conn.execute(f"SELECT NOT EXISTS (SELECT 1 FROM {names[oid]})").fetchone()
        if row and row[0]:
            empty.add(oid)
    # The relation files a TRUNCATE of a table replaces: its own, its indexes', its TOAST table's and TOAST
    # index's, and the same for every table that inherits from it (a TRUNCATE without ONLY takes them too).
    files: dict[int, int] = dict(
        conn.execute(
            """
            WITH RECURSIVE tree(root, rel) AS (
                SELECT oid, oid FROM pg_class WHERE relkind IN ('r', 'p')
                UNION ALL SELECT tree.root, i.inhrelid FROM pg_inherits i JOIN tree ON i.inhparent = tree.rel
            ), owned(rel) AS (
                SELECT oid FROM pg_class WHERE relkind = 'r'
                UNION ALL SELECT oid FROM pg_class WHERE reltoastrelid <> 0
                UNION ALL SELECT x.indrelid FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid AND i.relkind = 'i'
                UNION ALL SELECT c.oid FROM pg_class c JOIN pg_index x ON x.indrelid = c.reltoastrelid
                WHERE c.reltoastrelid <> 0
            )
            SELECT tree.root, count(*) FROM tree JOIN owned ON owned.rel = tree.rel GROUP BY tree.root
            """
        ).fetchall()
    )
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
    referenced: dict[int, set[int]] = {}
    for child, parent in conn.execute("SELECT conrelid, confrelid FROM pg_constraint WHERE contype = 'f'").fetchall():
        referenced.setdefault(parent, set()).add(child)
    (template_files,) = conn.execute(
        "SELECT count(*) FROM pg_class WHERE relkind IN ('r', 't', 'i', 'm', 'S') AND NOT relisshared"
    ).fetchone() or (0,)
    return TemplateFacts(
        names=names,
        empty=frozenset(empty),
        truncatable=frozenset(empty & no_truncate_trigger),
        restorable=frozenset(restorable),
        referenced_by={k: frozenset(v) for k, v in referenced.items()},
        sequence_state=state,
        pages={oid: n for oid, n in pages.items() if oid not in empty},
        files={oid: int(n) for oid, n in files.items() if oid in names},
        template_files=int(template_files),
        catalog=tuple(sorted(catalog)),
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

# Reading a counter costs about 0.25 us on the server (a shared hash lookup and a copy, with
# stats_fetch_consistency = none), and finding the relations by a scan of pg_class about as much per row of
# pg_class (tables, their indexes, TOAST tables and sequences: 0.4 ms at 300 tables here), so a read skips
# what it can. The relations are named by oid when the template's facts are known (a test that created or
# dropped one changed the catalog, which means a new clone anyway). First, three sums: the database's own
# tuple counters (which sum every table's, catalogs and TOAST included), the sequences' block accesses, and —
# for the next xid and the statistics' reset time — nothing per relation. Every counter only grows (until a
# statistics reset, which moves the reset time), so an unchanged sum means no member changed: the per-table
# counters are read only when the database's sum moved, the per-sequence ones only when the sequences' sum
# did (one-time filters: the server skips the branch), and only relations whose counters are not 0 are
# returned (a missing one counts as 0); the rest of a table's counters and its size only for tables whose
# counters moved.
#
# When the database's sum moved, the tables a test is likely to have written (``hot``: those written before,
# see :func:`hot_tables`) and the catalog are read first, and the other tables only when those do not account
# for the whole move of the database's sum: the sum is the sum of every table's counters, each of which only
# grows, so when the hot tables' and the catalog's moves add up to the database's, every other table's move
# is 0. (A baseline's per-table and catalog counters are exact, its database sum at most lower than the real
# one — see :func:`reset` —, which can only make the sums differ: then every table is read.) The 'd' row
# says which: its fifth column is 1 when every table was read.
#
# Every row: oid, kind, then five numbers and a text, by kind: 'd' (the database) its sum, the next xid,
# every table read (1) or not, -, -, the reset time; 'q' the sequences' sum; 'S' a sequence's block accesses;
# 'c' the catalog sum; 'r' a table's TableCounters.


def _changes(oid: str) -> str:
    return f"pg_stat_get_tuples_inserted({oid}) + pg_stat_get_tuples_updated({oid}) + pg_stat_get_tuples_deleted({oid})"


_DATABASE = """
SELECT -1::bigint AS oid, 'd' AS kind, (pg_stat_get_db_tuples_inserted(d.oid) + pg_stat_get_db_tuples_updated(d.oid)
                         + pg_stat_get_db_tuples_deleted(d.oid))::bigint AS total,
       txid_snapshot_xmax(txid_current_snapshot()) AS next_xid, pg_stat_get_db_stat_reset_time(d.oid)::text AS stamp
FROM pg_database d WHERE d.datname = current_database()
"""
_CATALOG_SCAN = """FROM pg_class c WHERE c.relkind IN ('r', 'p', 'm') AND NOT c.relisshared
  AND c.relnamespace IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)"""
_USER_TABLES = """c.relkind IN ('r', 'p', 'm') AND NOT c.relisshared
      AND c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace,
                                 'pg_toast'::regnamespace)"""
_CATALOG_ROW = "SELECT 0::bigint, 'c', total, NULL, NULL, NULL, NULL, NULL FROM ({}) cat"
# A table's row from a source of (oid, n): n its changes.
_PER_TABLE = """
SELECT oid::bigint, 'r', n, pg_stat_get_tuples_updated(oid) + pg_stat_get_tuples_deleted(oid),
       pg_stat_get_vacuum_count(oid) + pg_stat_get_autovacuum_count(oid)
       + pg_stat_get_analyze_count(oid) + pg_stat_get_autoanalyze_count(oid),
       pg_stat_get_live_tuples(oid), pg_relation_size(oid) / current_setting('block_size')::bigint, NULL
FROM ({source}) per_table WHERE n <> 0
"""


def _array(oids: Iterable[int]) -> str:
    return "'{" + ",".join(str(int(oid)) for oid in oids) + "}'::oid[]"


def _tables_source(array: str | None, where: str = "") -> str:
    """(oid, n) of the tables of ``array`` (an oid array literal; None: every user table, found in pg_class),
    only when ``where``."""
    if array is None:
        gate = f" AND {where}" if where else ""
        return f"SELECT c.oid, {_changes('c.oid')} AS n FROM pg_class c WHERE {_USER_TABLES}{gate} OFFSET 0"
    gate = f" WHERE {where}" if where else ""
    return f"SELECT o AS oid, {_changes('o')} AS n FROM unnest({array}) o{gate} OFFSET 0"


def _catalog_sum(facts: TemplateFacts | None, where: str = "") -> str:
    if facts is not None and facts.catalog:
        where = f" WHERE {where}" if where else ""
        return f"SELECT sum({_changes('o')})::bigint AS total FROM unnest({facts.arrays[2]}) o{where}"
    return f"SELECT sum({_changes('c.oid')})::bigint AS total {_CATALOG_SCAN}" + (f" AND {where}" if where else "")


def _sequences_source(facts: TemplateFacts | None, only: Iterable[int] | None = None) -> str:
    if only is not None:
        return (
            "SELECT c.oid, pg_stat_get_blocks_fetched(c.oid) AS n FROM pg_class c"
            f" WHERE c.relkind = 'S' AND c.oid IN ({', '.join(str(int(oid)) for oid in only) or '0'})"
        )
    if facts is not None and facts.catalog:  # (learned by analyze(), whose sequence_state lists every sequence)
        return f"SELECT o AS oid, pg_stat_get_blocks_fetched(o) AS n FROM unnest({facts.arrays[1]}) o"
    return "SELECT c.oid, pg_stat_get_blocks_fetched(c.oid) AS n FROM pg_class c WHERE c.relkind = 'S'"


def hot_tables(
    baseline: Counters | None, facts: TemplateFacts | None, written: Iterable[int] = ()
) -> frozenset[int] | None:
    """The tables a read after ``baseline`` reads first (see above): ``written`` (tables earlier tests of the
    template wrote) and those whose counters are not 0 in ``baseline``; None when every table is read at once
    (no facts, no database sum or catalog sum in ``baseline`` to check against, or the hot tables are half of
    them or more: then reading them first saves little)."""
    if facts is None or not facts.catalog or baseline is None or baseline.database is None:
        return None
    if CATALOG not in baseline.tables:
        return None
    hot = (set(written) | set(baseline.tables)) & facts.names.keys()
    if 2 * len(hot) >= len(facts.names):
        return None
    return frozenset(hot)


def counters_query(
    baseline: Counters | None = None,
    only: Iterable[int] | None = None,
    *,
    catalog: bool = True,
    facts: TemplateFacts | None = None,
    hot: frozenset[int] | None = None,
) -> str:
    """The one query of a counter read (literal values, no parameters: with parameters, the extended
    protocol and a custom plan per call cost about 0.4 ms more here).

    ``only`` None: every user table's and sequence's counters, skipping those whose sum is ``baseline``'s
    (see above); with ``hot`` (of :func:`hot_tables`), those tables first and the others only when they do not
    account for the database's move. ``only``: the counters of those relations (tables and sequences) and, with
    ``catalog``, the catalog sum; no sequences' sum. ``facts``: the template's (relations read by oid).
    """
    facts = facts if facts is not None and facts.catalog else None
    unexplained = "NULL::int"
    if only is None:
        known = baseline if baseline is not None and baseline.database is not None else None
        gate = f"(SELECT total FROM db) IS DISTINCT FROM {_literal(known.database if known else None)}::bigint"
        sums = _literal(known.sequence_sum if known else None)
        ctes = (
            f", seqs AS MATERIALIZED ({_sequences_source(facts)})"
            ", seq_sum AS MATERIALIZED (SELECT coalesce(sum(n), 0)::bigint AS total FROM seqs)"
        )
        sequences = (
            "SELECT -2::bigint, 'q', total, NULL, NULL, NULL, NULL, NULL FROM seq_sum UNION ALL "
            "SELECT oid::bigint, 'S', n, NULL, NULL, NULL, NULL, NULL FROM seqs "
            f"WHERE n <> 0 AND (SELECT total FROM seq_sum) IS DISTINCT FROM {sums}::bigint"
        )
        if hot is not None and known is not None and known.database is not None and facts is not None:
            hot_array, rest_array = facts.split(hot)
            was = sum(known.tables.get(oid, UNSEEN).changes for oid in hot)
            moved = (
                f"(SELECT total FROM db) - {known.database} <> coalesce((SELECT sum(n) FROM hot), 0)"
                f" - {was} + coalesce((SELECT total FROM cat), 0) - {known.tables[CATALOG].changes}"
            )
            ctes += (
                f", hot AS MATERIALIZED ({_tables_source(hot_array, gate)})"
                f", cat AS MATERIALIZED ({_catalog_sum(facts, gate)})"
                f", rest AS MATERIALIZED (SELECT ({gate} AND {moved}) AS unexplained)"
            )
            unexplained = "(SELECT unexplained FROM rest)::int"
            catalog_part = _CATALOG_ROW.format("SELECT total FROM cat")
            tables = [
                _PER_TABLE.format(source="SELECT oid, n FROM hot"),
                _PER_TABLE.format(source=_tables_source(rest_array, "(SELECT unexplained FROM rest)")),
            ]
        else:
            catalog_part = _CATALOG_ROW.format(_catalog_sum(facts, gate))
            every = facts.arrays[0] if facts is not None else None
            tables = [_PER_TABLE.format(source=_tables_source(every, gate))]
    else:
        listed = list(only)
        ctes = ""
        source = _sequences_source(facts, listed)
        sequences = f"SELECT oid::bigint, 'S', n, NULL, NULL, NULL, NULL, NULL FROM ({source}) s"
        catalog_part = _CATALOG_ROW.format(_catalog_sum(facts))
        # (by index on pg_class's oid: a read after a reset names a few relations, of any kind)
        tables = [
            _PER_TABLE.format(
                source=f"SELECT c.oid, {_changes('c.oid')} AS n FROM pg_class c"
                f" WHERE c.oid IN ({', '.join(str(int(oid)) for oid in listed) or '0'}) AND c.relkind <> 'S' OFFSET 0"
            )
        ]
    parts = [
        f"SELECT oid, kind, total, next_xid, {unexplained}, NULL::bigint, NULL::bigint, stamp FROM db",
        sequences,
        catalog_part if catalog else "",
        *tables,
    ]
    # (When the database's sum is unchanged the gated branches read nothing; the catalog's aggregate then
    # still returns its one row, with NULL, which read_counters replaces by the baseline's like every table.)
    return f"WITH db AS MATERIALIZED ({_DATABASE}){ctes}\n" + "\nUNION ALL\n".join(part for part in parts if part)


def _literal(value: int | None) -> str:
    return "NULL" if value is None else str(int(value))


def read_counters(
    conn: psycopg.Connection,
    baseline: Counters | None = None,
    *,
    facts: TemplateFacts | None = None,
    written: Iterable[int] = (),
) -> Counters:
    """The database's counters (see :class:`Counters`), in one round trip. With ``baseline``: per-table and
    per-sequence counters whose sum is as in ``baseline`` are not read (``baseline``'s are kept); with
    ``facts`` (the template's) too, the tables of :func:`hot_tables` (``written``: tables earlier tests wrote)
    are read first and the others only when needed (see above).

    The connection must use ``stats_fetch_consistency = none`` (live values, no cached snapshot).
    """
    hot = hot_tables(baseline, facts, written)
    rows = conn.execute(counters_query(baseline, facts=facts, hot=hot)).fetchall()
    read = _parse(rows)
    if baseline is None or baseline.database is None or read.stats_reset != baseline.stats_reset:
        return read  # (a changed reset time means a new clone: what was skipped does not matter)
    if read.database == baseline.database:
        read = replace(read, tables=baseline.tables)
    elif hot is not None and not any(kind == "d" and every for _, kind, _, _, every, *_ in rows):
        # The hot tables and the catalog account for the database's whole move: the others did not move.
        kept = {oid: n for oid, n in baseline.tables.items() if oid not in hot and oid != CATALOG}
        read = replace(read, tables=kept | read.tables)
    if read.sequence_sum == baseline.sequence_sum:
        read = replace(read, sequences=baseline.sequences)
    return read


def read_touched(
    conn: psycopg.Connection,
    before: Counters,
    oids: tuple[int, ...],
    *,
    catalog: bool,
    facts: TemplateFacts | None = None,
) -> Counters:
    """``before`` with the database's sum and the counters of ``oids`` (tables and sequences; with
    ``catalog``, the catalog sum) read again — what a reset's own statements change.

    The sequences' sum is ``before``'s moved by what the named sequences moved. Were anything else to have
    moved, it would only show as a change at the next reset (a counter only grows): a needless reset or
    clone then, never a missed one. The database's sum is ``before``'s moved by what the relations read
    again moved, not read itself: were anything else to have moved, the sum stays lower than the database's,
    so the next read cannot take that move for the hot tables' (see :func:`read_counters`).
    """
    read = _parse(conn.execute(counters_query(only=oids, catalog=catalog, facts=facts)).fetchall())
    again = set(oids) | ({CATALOG} if catalog else set())
    sequence_sum = None
    if before.sequence_sum is not None:
        moved = sum(read.sequences.values()) - sum(before.sequences.get(oid, 0) for oid in read.sequences)
        sequence_sum = before.sequence_sum + moved
    database = read.database
    if before.database is not None:
        database = before.database + sum(
            read.tables.get(oid, UNSEEN).changes - before.tables.get(oid, UNSEEN).changes for oid in again
        )
    return replace(
        read,
        tables={oid: n for oid, n in before.tables.items() if oid not in again} | read.tables,
        sequences={oid: n for oid, n in before.sequences.items() if oid not in again} | read.sequences,
        sequence_sum=sequence_sum,
        database=database,
    )


def _parse(
    rows: list[tuple[int, str, int | None, int | None, int | None, int | None, int | None, str | None]],
) -> Counters:
    tables: dict[int, TableCounters] = {}
    sequences: dict[int, int] = {}
    database = next_xid = sequence_sum = None
    stats_reset = None
    for oid, kind, value, *numbers, stamp in rows:
        if kind == "d":
            database, next_xid, stats_reset = int(value or 0), int(numbers[0] or 0), stamp
        elif kind == "q":
            sequence_sum = int(value or 0)
        elif kind == "S":
            sequences[oid] = int(value or 0)
        else:
            tables[oid] = TableCounters(int(value or 0), *(int(n or 0) for n in numbers))
    return Counters(tables, sequences, database, sequence_sum, next_xid, stats_reset)


def plan_reset(facts: TemplateFacts, before: Counters, after: Counters) -> ResetPlan | None:
    """What restores the template (an empty plan when nothing changed), or None when nothing provably does
    (or a new clone costs less)."""
    # Shared catalogs (pg_database, pg_authid, ...) belong to the whole server: every CREATE DATABASE
    # changes them, and no per-database isolation could undo a test's change to them anyway.
    if after.stats_reset != before.stats_reset and before.database is not None:
        return None  # a test reset the statistics: what it changed cannot be told
    for oid, was in before.tables.items():
        if after.tables.get(oid, UNSEEN).changes < was.changes:
            return None  # statistics were reset: nothing is known
    for oid, seen in before.sequences.items():
        if after.sequences.get(oid, 0) < seen:
            return None
    changed = {
        oid
        for oid, now in after.tables.items()
        if (oid in facts.names or oid == CATALOG) and now.changes != before.tables.get(oid, UNSEEN).changes
    }
    touched_sequences = {oid for oid, n in after.sequences.items() if n != before.sequences.get(oid, 0)}
    if not changed and not touched_sequences:
        return ResetPlan()
    if CATALOG in changed:
        return None
    truncate: set[int] = set()
    empty: set[int] = set()
    delete: set[int] = set()
    for oid in changed:
        now, was = after.tables[oid], before.tables.get(oid, UNSEEN)
        if oid in facts.empty:
            # Every row is the test's: deleted, while the table is small (DELETE_PAGES) and was not vacuumed
            # or analyzed (which wrote its size into pg_class: a TRUNCATE resets that), else truncated.
            if oid in facts.restorable and now.pages <= DELETE_PAGES and now.maintained == was.maintained:
                empty.add(oid)
            elif oid in facts.truncatable:
                truncate.add(oid)
            else:
                return None
        elif oid in facts.restorable and (now.rewritten, now.maintained) == (was.rewritten, was.maintained):
            delete.add(oid)
        else:
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
    replaced = sum(facts.files.get(oid, 1) for oid in closure)
    if facts.template_files and replaced * TRUNCATE_FILE_COST > facts.template_files:
        return None  # those TRUNCATEs cost more than a new clone
    added = sum(after.tables[oid].live - before.tables.get(oid, UNSEEN).live for oid in delete)
    if facts.template_files and added > facts.template_files * ROWS_PER_FILE:
        return None  # deleting that many rows costs more than a new clone
    empty -= closure
    first_xid = before.next_xid if before.next_xid is not None else facts.first_clone_xid
    if delete and (first_xid is None or after.next_xid is None or after.next_xid >= XID_LIMIT):
        return None  # which rows are the test's cannot be told
    setval = []
    for seq in touched_sequences:
        state = facts.sequence_state.get(seq)
        if state is None:
            return None
        setval.append(state)
    ranged = tuple(
        sorted(
            (
                facts.names[oid],
                max(facts.pages.get(oid, 0) - 1, 0),
                after.tables[oid].live - before.tables.get(oid, UNSEEN).live,
            )
            for oid in delete
        )
    )
    return ResetPlan(
        truncate=tuple(sorted(facts.names[oid] for oid in closure)),
        empty=tuple(sorted(facts.names[oid] for oid in empty)),
        delete=tuple(sorted(facts.names[oid] for oid in delete)),
        setval=tuple(sorted(setval)),
        first_xid=first_xid or 0,
        oids=tuple(sorted(closure | empty | delete | touched_sequences)),
        ranged=ranged,
    )


def reset(conn: psycopg.Connection, plan: ResetPlan, before: Counters, facts: TemplateFacts | None = None) -> Counters:
    """Carry out ``plan`` and return the counters afterwards (the next test's baseline); ``before``: the
    counters read just before, of which only what the plan touched changes.

    The plan's statements change the counters of the relations they name (``plan.oids``), the
    database's and the sequences' sums and, with a TRUNCATE, the catalog sum. A plan of one statement
    without TRUNCATE counts its own changes in the same round trip (:func:`_run_and_count`); otherwise those
    counters are read again once its statistics are flushed (:func:`read_touched`), the rest taken from
    ``before``. Were anything else to move, it would only show as a change at the next reset (a counter only
    grows): a needless reset or clone then, never a missed one.
    """
    if not plan:
        return before
    if plan.truncate or any(page > 0 for _, page, _ in plan.ranged):
        # Our own changes are flushed when the backend goes idle, so they are part of the counters read next
        # (the new baseline). (A TRUNCATE changes catalogs too; a ranged delete takes several round trips.)
        plan.run(conn)
        touched = read_touched(conn, before, plan.oids, catalog=bool(plan.truncate), facts=facts)
    else:
        touched = _run_and_count(conn, plan, before)
    return replace(touched, restored=tuple(sorted(plan.empty + plan.delete)))


# What the reset's own statements changed, read in their transaction (the pg_stat_get_xact_* functions: the
# backend's counts not flushed yet, which the forced flush before the counters were read left empty), with
# each relation's kind and heap size: one row per relation of the plan.
_OWN_CHANGES = """
SELECT c.oid::bigint AS testlane_own, c.relkind::text,
       pg_stat_get_xact_tuples_inserted(c.oid), pg_stat_get_xact_tuples_updated(c.oid),
       pg_stat_get_xact_tuples_deleted(c.oid), pg_stat_get_xact_blocks_fetched(c.oid),
       pg_relation_size(c.oid) / current_setting('block_size')::bigint
FROM pg_class c WHERE c.oid IN ({oids})
"""


def _run_and_count(conn: psycopg.Connection, plan: ResetPlan, before: Counters) -> Counters:
    """Carry out a one-statement plan and return the counters afterwards, in the same round trip.

    The new baseline is ``before`` plus what the plan's statements counted in their own transaction: the
    same numbers the counters show once the backend has flushed them (when it goes idle after this round
    trip), so no second read is needed. The plan changes only the relations it names (``DELETE`` as a
    replica fires nothing; ``setval`` fetches the sequence's block): the catalog sum stays ``before``'s.
    A relation whose delete also removed TOAST rows makes the database's sum read lower than it is: the next
    reset then reads every counter again (a counter only grows), never less.
    """
    listed = ", ".join(str(int(oid)) for oid in plan.oids) or "0"
    cur = conn.execute(f"{plan.statement()}; {_OWN_CHANGES.format(oids=listed)}; {_FLUSH}")
    rows: list[tuple[int, str, int, int, int, int, int]] = []
    while True:
        # The result's first column name, read off libpq's result: ``description`` would build a Column per
        # field of every statement's result (about 20 us a reset here).
        result = cur.pgresult
        if result is not None and result.nfields and result.fname(0) == b"testlane_own":
            rows = cur.fetchall()
        if not cur.nextset():
            break
    tables = dict(before.tables)
    sequences = dict(before.sequences)
    database = before.database
    sequence_sum = before.sequence_sum
    for oid, kind, inserted, updated, deleted, fetched, pages in rows:
        if kind == "S":
            if not fetched:
                continue
            sequences[oid] = sequences.get(oid, 0) + int(fetched)
            sequence_sum = None if sequence_sum is None else sequence_sum + int(fetched)
            continue
        was = tables.get(oid, UNSEEN)
        changed = int(inserted) + int(updated) + int(deleted)
        if not changed and oid not in tables:
            continue  # (a full read lists only the tables whose counters are not 0)
        tables[oid] = was._replace(
            changes=was.changes + changed,
            rewritten=was.rewritten + int(updated) + int(deleted),
            live=max(was.live + int(inserted) - int(deleted), 0),
            pages=int(pages),
        )
        database = None if database is None else database + changed
    return replace(before, tables=tables, sequences=sequences, database=database, sequence_sum=sequence_sum)


def restore(
    conn: psycopg.Connection, facts: TemplateFacts, baseline: Counters, written: Iterable[int] = ()
) -> tuple[Counters, ResetPlan] | None:
    """Put the database ``conn`` is connected to back into the template's state, on ``conn`` (autocommit,
    ``stats_fetch_consistency = none``, no other session serving the database, the test's statistics
    flushed): the new baseline and the plan carried out, or None when no plan provably restores the
    template (the database must be dropped). ``baseline``: the counters when the database was handed out;
    ``written``: tables earlier tests of the template wrote (read first: :func:`read_counters`)."""
    after = read_counters(conn, baseline, facts=facts, written=written)
    plan = plan_reset(facts, baseline, after)
    if plan is None:
        return None
    return reset(conn, plan, after, facts), plan


def settle(
    postmaster_pid: int, name: str, exclude: set[int], *, released_at: float, pause: Callable[[float], bool]
) -> bool:
    """Wait until no server process but ``exclude`` serves database ``name`` (only then are the statistics of
    every session that used it final): True; False once :data:`SETTLE_TIMEOUT` has passed since
    ``released_at`` (:func:`time.monotonic`) or when ``pause(seconds)``, which waits, answers False."""
    delay = 0.0005
    while backends_serving(postmaster_pid, {name}, exclude=exclude):
        if time.monotonic() - released_at > SETTLE_TIMEOUT or not pause(delay):
            return False
        delay = min(delay * 2, 0.02)  # polling a process's exit: there is nothing to wait on
    return True


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
    # One round trip. The forced flush happens when the backend goes idle after it (before the server
    # reports the round trip done), so the test's writes on this connection are in the counters read next.
    conn.execute(SANITIZE)


def backends_serving(postmaster_pid: int, names: set[str], exclude: set[int] | None = None) -> set[str]:
    """Which of ``names`` still have a server process (whose statistics may not be flushed yet).

    A backend leaves pg_stat_activity *before* flushing its statistics, so the process list is the
    proof; process titles read ``postgres: <user> <database> <client> <state>``. Read from /proc
    directly: psutil's per-process objects cost more than the check is worth on this path, and so do
    Python's file objects (``os.open``/``os.read``: about 125 instead of 185 us for 15 server processes).
    """
    busy: set[str] = set()
    try:
        children = _read_proc(f"/proc/{postmaster_pid}/task/{postmaster_pid}/children".encode(), 65536).split()
    except OSError:
        children = _children_via_psutil(postmaster_pid)
    tokens = {f" {name} ".encode(): name for name in names}
    skip = {str(pid).encode() for pid in exclude or ()}
    for child in children:
        if child in skip:
            continue
        try:
            # The title is at the start of the process's argument area (a database name is at most 63 bytes).
            title = _read_proc(b"/proc/" + child + b"/cmdline", 4096).replace(b"\0", b" ") + b" "
        except OSError:
            continue
        for token, name in tokens.items():
            if token in title:
                busy.add(name)
    return busy


def _read_proc(path: bytes, size: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, size)
    finally:
        os.close(fd)


def _children_via_psutil(pid: int) -> list[bytes]:
    import psutil

    try:
        return [str(c.pid).encode() for c in psutil.Process(pid).children()]
    except psutil.Error:
        return []


def can_scan_processes() -> bool:
    return os.path.isdir("/proc")
