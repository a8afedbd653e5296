"""Tests that write a table the template seeds, and the reset bookkeeping: before/after figures.

Usage:
    python bench/seeded_reset.py --before /tmp/before/src [--rounds 5] [--tests 50] [--tables 100] [--rows 10000]
    python bench/seeded_reset.py --bookkeeping [--tables 300] [--samples 400]

**Seeded writes** (``--before``): a template of ``--tables`` tables (``id serial``, ``v text``), the first
seeded with ``--rows`` rows, the others empty. One "test" acquires a database from a :class:`ClonePool`
(testlane's defaults: 4 ready, 2 workers), inserts one row into the seeded table, commits and releases it
(the pool resets or drops it in the background); ``--tests`` tests back to back, after 5 unmeasured.
Each round runs the code under ``--before`` (a ``src`` directory, e.g. of ``git worktree add /tmp/before
main``) and this checkout's, in child processes with their own server, in alternating order. Medians
over rounds of each child's median, in milliseconds:

* ``in_test_ms``: ``acquire()`` to the end of the commit (what the test waits for and does);
* ``total_ms``: wall time of the ``--tests`` tests divided by their number;
* ``anchor_ms``: one ``SELECT 1`` round trip on a test's connection (in the same child);
* ``reused``, ``on_demand``, ``waited``: pool counts per run (reused: reset instead of a new clone).

**Bookkeeping** (``--bookkeeping``): one database of ``--tables`` tables with an identity column each (so
as many sequences), 5 of them written once, the statistics read after a test, interleaved per sample:
``anchor_ms`` (``SELECT 1``), ``before_ms`` (every relation's counters, the query before this change),
``after_unchanged_ms`` (the sums only: nothing moved) and ``after_changed_ms`` (a table and a sequence
moved: the sums, then every table's and sequence's counters, returning only those not 0) and
``after_targeted_ms`` (after the reset's statements: the sums and the one table and sequence they
changed); ``reset_before_ms``/``reset_after_ms``: what one reset of a seeded write reads (before: the
full read twice, to plan and for the new baseline; after: ``after_changed`` + ``after_targeted``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

OLD_COUNTERS_QUERY = """
SELECT 0, false, sum(pg_stat_get_tuples_inserted(c.oid) + pg_stat_get_tuples_updated(c.oid)
                      + pg_stat_get_tuples_deleted(c.oid))::bigint FROM pg_class c
WHERE c.relkind IN ('r', 'p', 'm') AND NOT c.relisshared
  AND c.relnamespace IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
UNION ALL
SELECT c.oid, c.relkind = 'S',
       CASE WHEN c.relkind = 'S' THEN pg_stat_get_blocks_fetched(c.oid) ELSE pg_stat_get_tuples_inserted(c.oid)
            + pg_stat_get_tuples_updated(c.oid) + pg_stat_get_tuples_deleted(c.oid) END
FROM pg_class c
WHERE c.relkind IN ('r', 'p', 'm', 'S') AND NOT c.relisshared
  AND c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace,
                             'pg_toast'::regnamespace)
"""

SRC = Path(__file__).resolve().parent.parent / "src"


def _stack():  # type: ignore[no-untyped-def]
    from testlane.core.config import load_settings
    from testlane.core.runtime import RunContext
    from testlane.services.stack import ServiceStack

    settings = load_settings(environ={})
    return ServiceStack(settings, RunContext.from_settings(settings, owner=os.getpid()))


def child(tests: int, tables: int, rows: int) -> dict[str, float]:
    """One run of the seeded-write tests with whatever testlane PYTHONPATH selects."""
    from testlane.databases.migrations import SqlFolder
    from testlane.databases.pool import ClonePool
    from testlane.databases.postgres_engine import PostgresDatabaseEngine
    from testlane.databases.template import TemplateSpec, ensure_template

    with _stack() as stack, tempfile.TemporaryDirectory() as folder:
        server = stack.start(["postgres"])["postgres"]
        ddl = "".join(f"CREATE TABLE t{i} (id serial PRIMARY KEY, v text);\n" for i in range(tables))
        seed = f"INSERT INTO t0 (v) SELECT 'seed ' || g FROM generate_series(1, {rows}) g;\n"
        (Path(folder) / "001.sql").write_text(ddl + seed)
        template = ensure_template(server, TemplateSpec((SqlFolder(Path(folder)),)))  # type: ignore[arg-type]
        pool = ClonePool(PostgresDatabaseEngine(server), template, run_id="5eedbe9c", worker="b", size=4, workers=2)  # type: ignore[arg-type]
        pool.start()
        in_test: list[float] = []
        anchors: list[float] = []
        try:
            for _ in range(5):  # warm-up: the first reset learns the template's facts
                lease = pool.acquire()
                with lease.connection(lambda: None) as conn:  # type: ignore[arg-type, return-value]
                    conn.execute("INSERT INTO t0 (v) VALUES ('warm-up')")
                    conn.commit()
                pool.release(lease)
            stats_before = dict(vars(pool.stats))
            started = time.perf_counter()
            for _ in range(tests):
                t0 = time.perf_counter()
                lease = pool.acquire()
                with lease.connection(lambda: None) as conn:  # type: ignore[arg-type, return-value]
                    conn.execute("INSERT INTO t0 (v) VALUES ('written by the test')")
                    conn.commit()
                    in_test.append(time.perf_counter() - t0)
                    a0 = time.perf_counter()
                    conn.execute("SELECT 1")
                    anchors.append(time.perf_counter() - a0)
                    conn.rollback()
                pool.release(lease)
            total = (time.perf_counter() - started) / tests
            stats = {key: value - stats_before[key] for key, value in vars(pool.stats).items()}
        finally:
            pool.close()
    return {
        "in_test_ms": statistics.median(in_test) * 1000,
        "total_ms": total * 1000,
        "anchor_ms": statistics.median(anchors) * 1000,
        "reused": stats["reused_truncated"] + stats["reused_unchanged"],
        "on_demand": stats["on_demand"],
        "waited": stats["waited"],
    }


def compare(before: str, rounds: int, tests: int, tables: int, rows: int) -> dict[str, dict[str, float]]:
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    for r in range(rounds):
        order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
        for variant in order:
            env = {**os.environ, "PYTHONPATH": before if variant == "before" else str(SRC)}
            argv = [sys.executable, __file__, "--child", f"--tests={tests}", f"--tables={tables}", f"--rows={rows}"]
            out = subprocess.run(argv, env=env, check=True, capture_output=True, text=True).stdout
            runs[variant].append(json.loads(out.strip().splitlines()[-1]))
    summary = {}
    for variant, results in runs.items():
        summary[variant] = {key: round(statistics.median(r[key] for r in results), 3) for key in results[0]}
        medians = summary[variant]
        medians["in_test_per_anchor"] = round(medians["in_test_ms"] / medians["anchor_ms"], 1)
    return summary


def bookkeeping(tables: int, samples: int) -> dict[str, float]:
    import psycopg
    from psycopg import sql

    from testlane.databases.reset import read_counters, read_touched

    with _stack() as stack:
        server = stack.start(["postgres"])["postgres"]
        name = "bench_bookkeeping"
        with server.connect(autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        with server.connect(name, autocommit=True) as setup:
            ddl = "CREATE TABLE t{} (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text);"
            setup.execute("".join(ddl.format(i) for i in range(tables)))
        conn: psycopg.Connection = server.connect(name, autocommit=True)
        conn.execute("SET stats_fetch_consistency = none")
        conn.execute("".join(f"INSERT INTO t{i} (v) VALUES ('x');" for i in range(5)))  # tests wrote 5 tables
        conn.execute("SELECT pg_stat_force_next_flush()")
        baseline = read_counters(conn)
        variants = {
            "anchor": lambda: conn.execute("SELECT 1").fetchall(),
            "before": lambda: conn.execute(OLD_COUNTERS_QUERY).fetchall(),
            "after_unchanged": lambda: read_counters(conn, baseline),
            "after_changed": lambda: read_counters(conn, changed),
            # after the reset's statements: only what they changed (here one table and its sequence)
            "after_targeted": lambda: read_touched(conn, baseline, oids, catalog=False),
        }
        touched = "SELECT 't0'::regclass::oid UNION ALL SELECT 't0_id_seq'::regclass::oid"
        oids = tuple(int(row[0]) for row in conn.execute(touched).fetchall())
        # A test that wrote a table and used its sequence: both sums differ from the baseline.
        changed = replace(baseline, database=-1, sequence_sum=-1)
        times: dict[str, list[float]] = {key: [] for key in variants}
        order = list(variants)
        for i in range(samples):
            for key in order if i % 2 else reversed(order):
                t0 = time.perf_counter()
                variants[key]()
                times[key].append(time.perf_counter() - t0)
        conn.close()
    result = {f"{key}_ms": round(statistics.median(values) * 1000, 4) for key, values in times.items()}
    for key in ("before", "after_unchanged", "after_changed", "after_targeted"):
        result[f"{key}_per_anchor"] = round(result[f"{key}_ms"] / result["anchor_ms"], 1)
    # What one reset of a seeded write reads: before, the full read twice (to plan, and the new baseline).
    result["reset_before_ms"] = round(2 * result["before_ms"], 4)
    result["reset_after_ms"] = round(result["after_changed_ms"] + result["after_targeted_ms"], 4)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", help="src directory of the code to compare against")
    parser.add_argument("--bookkeeping", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tests", type=int, default=50)
    parser.add_argument("--tables", type=int, default=100)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=400)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.tests, args.tables, args.rows)))
    elif args.bookkeeping:
        print(json.dumps(bookkeeping(args.tables, args.samples), indent=2))
    elif args.before:
        print(json.dumps(compare(args.before, args.rounds, args.tests, args.tables, args.rows), indent=2))
    else:
        parser.error("give --before SRC or --bookkeeping")


if __name__ == "__main__":
    main()
