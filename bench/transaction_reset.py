"""What transaction isolation's end of test costs, before and after it restores sequences and checks commits.

Usage: python bench/transaction_reset.py [--tests 2000] [--tables 10,100] [--json]

One testlane Postgres server; for each size, a database with that many tables, each with an identity
column (so as many sequences). A "test" is one statement on the test's connection inside the outer
transaction: ``SELECT 1`` (nothing moved) or an ``INSERT`` (one sequence moved). Timed is only the
end of the test — what the harness does between two tests — interleaved variant by variant so that
load on a shared machine falls on all alike. Medians in milliseconds:

* ``anchor_ms``: one ``SELECT 1`` round trip on the same connection, measured in the same loop;
* ``before_ms``: the previous end of test: ``ROLLBACK; SELECT pg_advisory_unlock_all(); BEGIN;
  SAVEPOINT`` in one round trip (sequences not restored, escaped commits not seen);
* ``catalog_ms``: the same plus the obvious check, one catalog query per test reading every
  sequence's state from ``pg_sequences`` in that round trip (what was measured against);
* ``after_ms``: testlane now (``SavepointConnection.end_test``): the same round trip also reads the
  outer transaction's commit status, the database's session counter and the sequences' state by a
  query prepared once per database, and releases prepared statements;
* ``after_moved_ms``: testlane now when the test moved a sequence: ``setval`` in the same round trip
  (a second round trip before issue 19's ``pt19`` change).
* ``union_ms``: the check done by a query exact on every version, one ``SELECT last_value, is_called
  FROM seq`` per sequence joined by ``UNION ALL``, in the before round trip (planned on every test).

JSON keys: ``tests``, and per size ``<tables>`` an object with ``anchor_ms``, ``before_ms``,
``catalog_ms``, ``after_ms``, ``after_moved_ms``, ``union_ms``, ``after_minus_before_ms``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

import psycopg
from psycopg import sql

from testlane.core.config import load_settings
from testlane.core.runtime import RunContext
from testlane.databases.transaction import SAVEPOINT, SavepointConnection, read_sequences
from testlane.services.postgres import PostgresServer
from testlane.services.stack import ServiceStack

BEFORE = f"ROLLBACK; SELECT pg_advisory_unlock_all(); BEGIN; SAVEPOINT {SAVEPOINT}"
CATALOG = (
    "ROLLBACK; SELECT pg_advisory_unlock_all(); SELECT schemaname, sequencename, last_value FROM pg_sequences; "
    f"BEGIN; SAVEPOINT {SAVEPOINT}"
)


def measure(server: PostgresServer, tables: int, tests: int) -> dict[str, float]:
    name = f"bench_txn_{tables}"
    with server.connect(autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with server.connect(name, autocommit=True) as setup:
        for i in range(tables):
            setup.execute(f"CREATE TABLE t{i} (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text)")
    conn = SavepointConnection.connect(server.dsn(name), autocommit=False)
    sequences = read_sequences(conn)
    conn.prepare(sequences)
    conn.begin_test()
    union = " UNION ALL ".join(f"(SELECT last_value, is_called FROM {name})" for name in sequences.names)

    def raw(query: str) -> Callable[[], object]:
        def end() -> object:
            return psycopg.Connection.execute(conn, query)

        return end

    def after() -> object:
        escape = conn.end_test()
        assert escape is None, escape
        conn.begin_test()
        return escape

    variants: dict[str, tuple[str, Callable[[], object]]] = {
        "anchor": ("SELECT 1", lambda: conn.execute("SELECT 1")),
        "before": ("SELECT 1", raw(BEFORE)),
        "catalog": ("SELECT 1", raw(CATALOG)),
        "after": ("SELECT 1", after),
        "after_moved": ("INSERT INTO t0 (v) VALUES ('x')", after),
        "union": ("SELECT 1", raw(f"ROLLBACK; SELECT pg_advisory_unlock_all(); {union}; BEGIN; SAVEPOINT {SAVEPOINT}")),
    }
    times: dict[str, list[float]] = {key: [] for key in variants}
    order = list(variants)
    for i in range(tests):
        for key in order if i % 2 else reversed(order):
            statement, end = variants[key]
            conn.execute(statement)
            started = time.perf_counter()
            end()
            times[key].append(time.perf_counter() - started)
    # Every moved sequence was put back: the next first row still gets id 1.
    assert conn.execute("INSERT INTO t0 (v) VALUES ('x') RETURNING id").fetchone() == (1,)
    conn.close()
    with server.connect(autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
    medians = {f"{key}_ms": round(statistics.median(values) * 1000, 4) for key, values in times.items()}
    medians["after_minus_before_ms"] = round(medians["after_ms"] - medians["before_ms"], 4)
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tests", type=int, default=2000)
    parser.add_argument("--tables", default="10,100", help="comma-separated table (sequence) counts")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    settings = load_settings(environ={})
    summary: dict[str, object] = {"tests": args.tests}
    with ServiceStack(settings, RunContext.from_settings(settings, owner=os.getpid())) as stack:
        server = stack.start(["postgres"])["postgres"]
        assert isinstance(server, PostgresServer)
        for tables in (int(n) for n in args.tables.split(",")):
            summary[str(tables)] = measure(server, tables, args.tests)
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"tests per variant: {args.tests}")
    for key, value in summary.items():
        if isinstance(value, dict):
            print(f"{key} tables/sequences:")
            for name, ms in value.items():
                print(f"  {name:<22} {ms}")


if __name__ == "__main__":
    main()
