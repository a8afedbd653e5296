"""Tests that write a table the template seeds, and the reset bookkeeping: before/after figures.

Usage:
    python bench/seeded_reset.py --before /tmp/before/src [--rounds 5] [--tests 50] [--tables 100] [--rows 10000]
    python bench/seeded_reset.py --before /tmp/before/src --fan-in [--tables 60]
    python bench/seeded_reset.py --before /tmp/before/src --empty 5 [--tables 300] [--rows 200000]
    python bench/seeded_reset.py --costs [--tables 60] [--samples 7]
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
* ``reused``, ``on_demand``, ``waited``: pool counts per run (reused: reset instead of a new clone);
* ``reset_ms``: the median time the engine's ``reset`` of a released database took (in the background:
  waiting for its backend to exit, reading the statistics, the statements, the new baseline);
* ``clone_ms``: ``CREATE DATABASE ... TEMPLATE`` of the same template, median of 5 after the tests.

**Foreign-key fan-in** (``--fan-in``, as in mealie, whose ``groups`` table 58 of its 59 tables reference):
the template is ``groups`` and ``--tables`` tables with a foreign key to it (and a serial key, a text
column, an index), all empty; each test inserts a group and a row into 2 of the referencing tables.
Before tables empty in the template were restored by ``DELETE``, each reset ``TRUNCATE``d ``groups`` and
every table referencing it.

**Empty tables** (``--empty K``): the seeded-write template, but each test inserts a row into each of the
last K tables (empty in the template) and selects it back, as ``bench/schema_size.py``'s w1/w5 tests do,
without pytest.

**Bookkeeping** (``--bookkeeping``): one database of ``--tables`` tables with an identity column each (so
as many sequences), 5 of them written once, the statistics read after a test, interleaved per sample:
``anchor_ms`` (``SELECT 1``), ``before_ms`` (every relation's counters, the query before this change),
``after_unchanged_ms`` (the sums only: nothing moved) and ``after_changed_ms`` (a table and a sequence
moved: the sums, then every table's and sequence's counters, returning only those not 0) and
``after_changed_by_oid_ms`` (the same with the template's facts: relations named by oid, no scan of
``pg_class``), ``after_written_first_ms`` (with the facts, after the 5 tables were written, which earlier
tests wrote too: their counters and the catalog's first, which account for the database's move, so no other
table's is read), ``after_targeted_ms`` (after the reset's statements: the sums and the one table and
sequence they changed); ``reset_before_ms``/``reset_after_ms``: what one reset of a seeded write reads (before: the
full read twice, to plan and for the new baseline; after: ``after_changed`` + ``after_targeted``).

**Costs** (``--costs``): what the reset planner weighs against a new clone, on the fan-in template plus a
seeded table of 10,000 rows, medians of ``--samples``: ``clone_ms`` (``CREATE DATABASE ... TEMPLATE``) and
``clone_file_ms`` (that over the relation files it copies); ``truncate_ms`` (``TRUNCATE`` of ``groups``
and every table referencing it) and ``truncate_file_ms`` (over the files it replaces); ``delete_row_ms``
(deleting 5,000 rows a test inserted into the seeded table, by ``xmin``, per row). The ratios:
``truncate_file_cost`` (``truncate_file_ms / clone_file_ms``: reset.TRUNCATE_FILE_COST) and
``rows_per_file`` (``clone_file_ms / delete_row_ms``: reset.ROWS_PER_FILE).
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


def child(tests: int, tables: int, rows: int, fan_in: bool = False, empty: int = 0) -> dict[str, float]:
    """One run of the seeded-write (or fan-in) tests with whatever testlane PYTHONPATH selects."""
    from testlane.databases.migrations import SqlFolder
    from testlane.databases.pool import ClonePool
    from testlane.databases.postgres_engine import PostgresDatabaseEngine
    from testlane.databases.template import TemplateSpec, ensure_template

    with _stack() as stack, tempfile.TemporaryDirectory() as folder:
        server = stack.start(["postgres"])["postgres"]
        if fan_in:
            ddl = "CREATE TABLE groups (id serial PRIMARY KEY, name text);\n" + "".join(
                f"CREATE TABLE t{i} (id serial PRIMARY KEY, group_id int REFERENCES groups, v text);\n"
                f"CREATE INDEX t{i}_group ON t{i} (group_id);\n"
                for i in range(tables)
            )
            write = (
                "INSERT INTO groups (name) VALUES ('g') RETURNING id",
                "INSERT INTO t0 (group_id, v) VALUES ({0}, 'a'); INSERT INTO t1 (group_id, v) VALUES ({0}, 'b')",
            )
        else:
            ddl = "".join(f"CREATE TABLE t{i} (id serial PRIMARY KEY, v text);\n" for i in range(tables))
            ddl += f"INSERT INTO t0 (v) SELECT 'seed ' || g FROM generate_series(1, {rows}) g;\n"
            write = ("INSERT INTO t0 (v) VALUES ('written by the test') RETURNING id", "")
            if empty:
                write = (
                    "SELECT 1",
                    "; ".join(
                        f"INSERT INTO t{i} (v) VALUES ('{{0}}'); SELECT v FROM t{i} WHERE v = '{{0}}'"
                        for i in range(tables - empty, tables)
                    ),
                )
        (Path(folder) / "001.sql").write_text(ddl)
        template = ensure_template(server, TemplateSpec((SqlFolder(Path(folder)),)))  # type: ignore[arg-type]
        engine = PostgresDatabaseEngine(server)  # type: ignore[arg-type]
        resets: list[float] = []
        timed = engine.reset

        def reset(lease, *, stopping):  # type: ignore[no-untyped-def]
            t0 = time.perf_counter()
            try:
                return timed(lease, stopping=stopping)
            finally:
                resets.append(time.perf_counter() - t0)

        engine.reset = reset  # type: ignore[method-assign]

        def run_test(conn) -> None:  # type: ignore[no-untyped-def]
            row = conn.execute(write[0]).fetchone()
            if write[1]:
                conn.execute(write[1].format(int(row[0])))  # (one round trip: the simple protocol)
            conn.commit()

        pool = ClonePool(engine, template, run_id="5eedbe9c", worker="b", size=4, workers=2)  # type: ignore[var-annotated]
        pool.start()
        in_test: list[float] = []
        anchors: list[float] = []
        try:
            for _ in range(5):  # warm-up: the first reset learns the template's facts
                lease = pool.acquire()
                with lease.connection(lambda: None) as conn:  # type: ignore[arg-type, return-value]
                    run_test(conn)
                pool.release(lease)
            stats_before = dict(vars(pool.stats))
            resets.clear()
            started = time.perf_counter()
            for _ in range(tests):
                t0 = time.perf_counter()
                lease = pool.acquire()
                with lease.connection(lambda: None) as conn:  # type: ignore[arg-type, return-value]
                    run_test(conn)
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
        clones = []
        with server.connect(autocommit=True) as admin:
            for i in range(5):
                t0 = time.perf_counter()
                admin.execute(f"CREATE DATABASE bench_clone_{i} TEMPLATE {template} STRATEGY FILE_COPY")
                clones.append(time.perf_counter() - t0)
                admin.execute(f"DROP DATABASE bench_clone_{i}")
    return {
        "in_test_ms": statistics.median(in_test) * 1000,
        "total_ms": total * 1000,
        "anchor_ms": statistics.median(anchors) * 1000,
        "reused": stats["reused_truncated"] + stats["reused_unchanged"],
        "on_demand": stats["on_demand"],
        "waited": stats["waited"],
        "reset_ms": statistics.median(resets) * 1000 if resets else float("nan"),
        "clone_ms": statistics.median(clones) * 1000,
    }


def compare(
    before: str, rounds: int, tests: int, tables: int, rows: int, fan_in: bool = False, empty: int = 0
) -> dict[str, dict[str, float]]:
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    for r in range(rounds):
        order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
        for variant in order:
            env = {**os.environ, "PYTHONPATH": before if variant == "before" else str(SRC)}
            argv = [sys.executable, __file__, "--child", f"--tests={tests}", f"--tables={tables}", f"--rows={rows}"]
            argv += (["--fan-in"] if fan_in else []) + [f"--empty={empty}"]
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

    from testlane.databases.reset import analyze, read_counters, read_touched

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
        facts = analyze(conn)  # (reads rows, writes none)
        early = read_counters(conn, facts=facts)  # before the test below
        conn.execute("".join(f"INSERT INTO t{i} (v) VALUES ('x');" for i in range(5)))  # tests wrote 5 tables
        conn.execute("SELECT pg_stat_force_next_flush()")
        baseline = read_counters(conn)
        five = {oid for oid, name in facts.names.items() if name in {f"public.t{i}" for i in range(5)}}
        variants = {
            "anchor": lambda: conn.execute("SELECT 1").fetchall(),
            "before": lambda: conn.execute(OLD_COUNTERS_QUERY).fetchall(),
            "after_unchanged": lambda: read_counters(conn, baseline),
            "after_changed": lambda: read_counters(conn, changed),
            # the same by oid (the template's facts): every table's counters, no scan of pg_class
            "after_changed_by_oid": lambda: read_counters(conn, changed, facts=facts),
            # after a test that wrote 5 tables earlier tests wrote too: those first, and they account for it
            "after_written_first": lambda: read_counters(conn, early, facts=facts, written=five),
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
    for key in ("before", "after_unchanged", "after_changed", "after_changed_by_oid", "after_written_first"):
        result[f"{key}_per_anchor"] = round(result[f"{key}_ms"] / result["anchor_ms"], 1)
    result["after_targeted_per_anchor"] = round(result["after_targeted_ms"] / result["anchor_ms"], 1)
    # What one reset of a seeded write reads: before, the full read twice (to plan, and the new baseline).
    result["reset_before_ms"] = round(2 * result["before_ms"], 4)
    result["reset_after_ms"] = round(result["after_changed_ms"] + result["after_targeted_ms"], 4)
    return result


def costs(tables: int, samples: int) -> dict[str, float]:
    from testlane.databases.reset import analyze

    ddl = "CREATE TABLE groups (id serial PRIMARY KEY, name text);\n" + "".join(
        f"CREATE TABLE t{i} (id serial PRIMARY KEY, group_id int REFERENCES groups, v text);\n"
        f"CREATE INDEX t{i}_group ON t{i} (group_id);\n"
        for i in range(tables)
    )
    ddl += "CREATE TABLE seeded (id serial PRIMARY KEY, v text);\n"
    ddl += "INSERT INTO seeded (v) SELECT 'seed ' || g FROM generate_series(1, 10000) g;\n"
    times: dict[str, list[float]] = {"clone": [], "truncate": [], "delete": []}
    with _stack() as stack:
        server = stack.start(["postgres"])["postgres"]
        with server.connect(autocommit=True) as admin:
            admin.execute("CREATE DATABASE bench_costs_tpl")
            with server.connect("bench_costs_tpl", autocommit=True) as conn:
                conn.execute(ddl)
            admin.execute("ALTER DATABASE bench_costs_tpl WITH IS_TEMPLATE true ALLOW_CONNECTIONS false")
            for i in range(samples):
                name = f"bench_costs_{i}"
                t0 = time.perf_counter()
                admin.execute(f"CREATE DATABASE {name} TEMPLATE bench_costs_tpl STRATEGY FILE_COPY")
                times["clone"].append(time.perf_counter() - t0)
                with server.connect(name, autocommit=True) as conn:
                    if i == 0:
                        facts = analyze(conn)
                    conn.execute("INSERT INTO groups (name) VALUES ('g')")
                    closure = ", ".join(["groups", *(f"t{j}" for j in range(tables))])
                    t0 = time.perf_counter()
                    conn.execute(f"TRUNCATE {closure}")
                    times["truncate"].append(time.perf_counter() - t0)
                    (xid,) = conn.execute("SELECT txid_current()").fetchone() or (0,)
                    conn.execute("INSERT INTO seeded (v) SELECT 'test ' || g FROM generate_series(1, 5000) g")
                    t0 = time.perf_counter()
                    conn.execute(
                        "BEGIN; SET LOCAL session_replication_role = replica;"
                        f" DELETE FROM ONLY seeded WHERE age(xmin) <= age('{xid}'::xid); COMMIT"
                    )
                    times["delete"].append((time.perf_counter() - t0) / 5000)
                admin.execute(f"DROP DATABASE {name}")
            admin.execute("ALTER DATABASE bench_costs_tpl WITH IS_TEMPLATE false")
            admin.execute("DROP DATABASE bench_costs_tpl")
    ids = {name: oid for oid, name in facts.names.items()}
    replaced = sum(facts.files[ids[f"public.{t}"]] for t in ["groups", *(f"t{j}" for j in range(tables))])
    clone_ms = statistics.median(times["clone"]) * 1000
    truncate_ms = statistics.median(times["truncate"]) * 1000
    delete_row_ms = statistics.median(times["delete"]) * 1000
    result = {
        "template_files": facts.template_files,
        "truncated_files": replaced,
        "clone_ms": clone_ms,
        "clone_file_ms": clone_ms / facts.template_files,
        "truncate_ms": truncate_ms,
        "truncate_file_ms": truncate_ms / replaced,
        "delete_row_ms": delete_row_ms,
    }
    result["truncate_file_cost"] = result["truncate_file_ms"] / result["clone_file_ms"]
    result["rows_per_file"] = result["clone_file_ms"] / delete_row_ms
    return {key: round(value, 4) for key, value in result.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", help="src directory of the code to compare against")
    parser.add_argument("--bookkeeping", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tests", type=int, default=50)
    parser.add_argument("--tables", type=int, default=100)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--samples", type=int, help="samples (default: 400 with --bookkeeping, 7 with --costs)")
    parser.add_argument("--fan-in", action="store_true", help="the foreign-key fan-in template (see above)")
    parser.add_argument("--costs", action="store_true", help="what the reset planner weighs (see above)")
    parser.add_argument("--empty", type=int, default=0, help="tests write the last EMPTY tables (see above)")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.tests, args.tables, args.rows, args.fan_in, args.empty)))
    elif args.costs:
        print(json.dumps(costs(args.tables, args.samples or 7), indent=2))
    elif args.bookkeeping:
        print(json.dumps(bookkeeping(args.tables, args.samples or 400), indent=2))
    elif args.before:
        result = compare(args.before, args.rounds, args.tests, args.tables, args.rows, args.fan_in, args.empty)
        print(json.dumps(result, indent=2))
    else:
        parser.error("give --before SRC or --bookkeeping")


if __name__ == "__main__":
    main()
