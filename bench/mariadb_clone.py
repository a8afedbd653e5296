"""Cloning a migrated MariaDB template: the ways MySQL offers, measured side by side.

Usage: python bench/mariadb_clone.py [--runs 30] [--json]

Starts a MariaDB server from this machine's ``mariadbd`` (testlane's ``local`` backend, data on
tmpfs), builds a template from a representative schema — 12 tables chained by foreign keys, indexes,
a generated column, a sequence, two nested views, two triggers, a function, 2 seeded tables (200 and
1000 rows) — and clones it ``--runs`` times with each method:

* ``dump_pipe``: ``CREATE DATABASE``, then ``mariadb-dump --routines --triggers TEMPLATE | mariadb CLONE``;
* ``dump_cached``: the dump taken once, only ``mariadb CLONE < dump`` per clone;
* ``like_copy``: ``CREATE TABLE clone.t LIKE tpl.t`` + ``INSERT ... SELECT`` for seeded tables;
* ``replay_each``: testlane's clone script (``SHOW CREATE ...`` read once), one statement per round trip;
* ``replay_one``: the same script in one multi-statement round trip (what testlane does);
* ``create_empty``: ``CREATE DATABASE`` alone (the floor), and ``drop``: ``DROP DATABASE`` of a clone;
* ``transaction_test``: transaction isolation's cost per test (connect, ``START TRANSACTION`` and two
  savepoints, the rollback with its escape check, close).

Each clone is checked: tables, foreign keys, views, triggers, routines and seeded rows against the
template. Figures are medians (and 90th percentiles) in milliseconds, measured in one run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pymysql.constants import CLIENT

from testlane.core.config import load_settings
from testlane.databases.mariadb.clone import CloneScript
from testlane.databases.mariadb.template import drop_database, ensure_template, quote, spec_from_settings
from testlane.databases.mariadb.transaction import MysqlSavepointConnection
from testlane.services.stack import ServiceStack

TABLES = 12
METHODS = ("dump_pipe", "dump_cached", "like_copy", "replay_each", "replay_one", "create_empty")


def migration() -> str:
    lines = [
        "CREATE TABLE countries (code char(2) PRIMARY KEY, name varchar(60) NOT NULL);",
        "CREATE TABLE products (id int PRIMARY KEY AUTO_INCREMENT, sku varchar(20) NOT NULL UNIQUE, "
        "price decimal(10,2) NOT NULL, label varchar(40) AS (upper(sku)) VIRTUAL, KEY (price));",
        "CREATE TABLE t0 (id int PRIMARY KEY AUTO_INCREMENT, country char(2) REFERENCES countries(code), "
        "note text, created timestamp DEFAULT CURRENT_TIMESTAMP, KEY (created));",
    ]
    for i in range(1, TABLES - 2):
        lines.append(
            f"CREATE TABLE t{i} (id int PRIMARY KEY AUTO_INCREMENT, parent_id int NOT NULL, product_id int, "
            f"qty int NOT NULL DEFAULT 1, note varchar(200), "
            f"CONSTRAINT fk_t{i}_parent FOREIGN KEY (parent_id) REFERENCES t{i - 1}(id) ON DELETE CASCADE, "
            f"CONSTRAINT fk_t{i}_product FOREIGN KEY (product_id) REFERENCES products(id), KEY (qty));"
        )
    lines.append("CREATE SEQUENCE invoice_numbers START WITH 1000;")
    lines.append("CREATE VIEW expensive AS SELECT id, sku, price FROM products WHERE price > 50;")
    lines.append("CREATE VIEW expensive_count AS SELECT count(*) AS n FROM expensive;")
    lines.append(
        "CREATE TRIGGER t1_qty BEFORE INSERT ON t1 FOR EACH ROW BEGIN IF NEW.qty < 1 THEN SET NEW.qty = 1; END IF; END;"
    )
    lines.append("CREATE TRIGGER t0_note BEFORE INSERT ON t0 FOR EACH ROW SET NEW.note = COALESCE(NEW.note, 'new');")
    lines.append("DELIMITER //")
    lines.append(
        "CREATE FUNCTION with_tax(x decimal(10,2)) RETURNS decimal(10,2) DETERMINISTIC BEGIN RETURN x * 1.2; END//"
    )
    lines.append("DELIMITER ;")
    countries = ", ".join(f"('{chr(97 + i // 26)}{chr(97 + i % 26)}', 'Country {i}')" for i in range(200))
    lines.append(f"INSERT INTO countries VALUES {countries};")
    products = ", ".join(f"('SKU{i}', {i % 100}.50)" for i in range(1000))
    lines.append(f"INSERT INTO products (sku, price) VALUES {products};")
    return "\n".join(lines) + "\n"


def shape(conn: Any, db: str) -> dict[str, Any]:
    """What a correct clone must reproduce."""
    queries = {
        "tables": "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_TYPE <> 'VIEW'",
        "foreign_keys": "SELECT COUNT(*) FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = %s",
        "views": "SELECT COUNT(*) FROM information_schema.VIEWS WHERE TABLE_SCHEMA = %s",
        "triggers": "SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s",
        "routines": "SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = %s",
    }
    out: dict[str, Any] = {}
    with conn.cursor() as cur:
        for key, sql in queries.items():
            cur.execute(sql, (db,))
            out[key] = cur.fetchone()[0]
        if out["tables"] == 0:
            out["rows"] = None
            return out
        db_ = quote(db)
        cur.execute(f"SELECT (SELECT COUNT(*) FROM {db_}.countries), (SELECT COUNT(*) FROM {db_}.products)")
        out["rows"] = list(cur.fetchone())
    return out


def summary(times: list[float]) -> dict[str, Any]:
    return {
        "median_ms": round(statistics.median(times), 2),
        "p90_ms": round(sorted(times)[max(0, int(len(times) * 0.9) - 1)], 2),
    }


class Bench:
    def __init__(self, server: Any, template: str, runs: int) -> None:
        self.server = server
        self.template = template
        self.runs = runs
        self.admin = server.connect(client_flag=CLIENT.MULTI_STATEMENTS)
        self.script = CloneScript.read(self.admin, template)
        self.expected = shape(self.admin, template)
        self.counter = 0
        self.client = ["--no-defaults", "--protocol=tcp", "-h", "127.0.0.1", "-P", str(server.port), "-u", "root"]
        self.client.append("--skip-ssl")
        self.dump_text = self._dump()

    def name(self) -> str:
        self.counter += 1
        return f"tl_bench000_main_m{self.counter}"

    def _exec(self, sql: str) -> None:
        with self.admin.cursor() as cur:
            cur.execute(sql)
            while cur.nextset():
                pass

    def _dump(self) -> bytes:
        return subprocess.run(
            ["mariadb-dump", *self.client, "--routines", "--triggers", "--skip-comments", self.template],
            check=True,
            capture_output=True,
        ).stdout

    # -- methods -----------------------------------------------------------------------------------
    def dump_pipe(self, clone: str) -> None:
        self._exec(f"CREATE DATABASE {quote(clone)}")
        dump = subprocess.Popen(
            ["mariadb-dump", *self.client, "--routines", "--triggers", "--skip-comments", self.template],
            stdout=subprocess.PIPE,
        )
        subprocess.run(["mariadb", *self.client, clone], stdin=dump.stdout, check=True)
        assert dump.stdout is not None
        dump.stdout.close()
        assert dump.wait() == 0

    def dump_cached(self, clone: str) -> None:
        self._exec(f"CREATE DATABASE {quote(clone)}")
        subprocess.run(["mariadb", *self.client, clone], input=self.dump_text, check=True)

    def like_copy(self, clone: str) -> None:
        tpl = quote(self.template)
        statements = [f"CREATE DATABASE {quote(clone)}"]
        for obj in self.script.objects:
            if obj.kind == "table":
                statements.append(f"CREATE TABLE {quote(clone)}.{quote(obj.name)} LIKE {tpl}.{quote(obj.name)}")
        for obj in self.script.objects:
            if obj.kind == "table" and obj.columns:
                cols = ", ".join(quote(c) for c in obj.columns)
                statements.append(
                    f"INSERT INTO {quote(clone)}.{quote(obj.name)} ({cols}) SELECT {cols} FROM {tpl}.{quote(obj.name)}"
                )
        self._exec(";\n".join(statements))

    def replay_each(self, clone: str) -> None:
        with self.admin.cursor() as cur:
            for statement in self.script.statements(clone):
                cur.execute(statement)

    def replay_one(self, clone: str) -> None:
        self.script.run(self.admin, clone)

    def create_empty(self, clone: str) -> None:
        self._exec(f"CREATE DATABASE {quote(clone)}")

    # -- measuring ---------------------------------------------------------------------------------
    def measure_transaction(self) -> dict[str, Any]:
        """Transaction isolation's cost per test: connect, open the transaction, roll back, close."""
        worker_db = self.name()
        self.script.run(self.admin, worker_db)
        conninfo = self.server.conninfo(worker_db)
        times = []
        for _ in range(self.runs):
            start = time.perf_counter()
            conn = MysqlSavepointConnection(**conninfo, autocommit=False)
            conn.begin_test()
            conn.end_test()
            conn.close()
            times.append((time.perf_counter() - start) * 1000)
        drop_database(self.admin, worker_db)
        return summary(times)

    def measure(self, methods: tuple[str, ...]) -> dict[str, Any]:
        """Round-robin over the methods (a different order each run), each clone dropped right after."""
        times: dict[str, list[float]] = {m: [] for m in methods}
        drops: list[float] = []
        results: dict[str, Any] = {}
        for run in range(self.runs):
            for method in methods[run % len(methods) :] + methods[: run % len(methods)]:
                clone = self.name()
                start = time.perf_counter()
                getattr(self, method)(clone)
                times[method].append((time.perf_counter() - start) * 1000)
                self._exec("USE mysql")
                if method not in results:
                    got = shape(self.admin, clone)
                    results[method] = {"correct": got == self.expected, "shape": got}
                start = time.perf_counter()
                drop_database(self.admin, clone)
                if method == "replay_one":
                    drops.append((time.perf_counter() - start) * 1000)
        for method in methods:
            results[method].update(summary(times[method]))
        results["drop"] = summary(drops)
        return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if shutil.which("mariadb-dump") is None:
        print("mariadb-dump is not installed", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="testlane-bench-") as tmp:
        migrations = Path(tmp) / "migrations"
        migrations.mkdir()
        (migrations / "001_schema.sql").write_text(migration())
        settings = load_settings(overrides={"mariadb.backend": "local", "mariadb.migrations": str(migrations)})
        with ServiceStack(settings) as stack:
            stack.start(["mariadb"])
            server = stack.servers["mariadb"]
            template = ensure_template(server, spec_from_settings(settings))
            bench = Bench(server, template, args.runs)
            results: dict[str, Any] = {"server": f"MariaDB {server.version}", "runs": args.runs}
            results["template"] = bench.expected
            results.update(bench.measure(METHODS))
            results["transaction_test"] = bench.measure_transaction()
            with contextlib.suppress(Exception):
                bench.admin.close()
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{results['server']}, {args.runs} clones per method, round-robin; template: {results['template']}")
    print(f"{'method':<14} {'median ms':>10} {'p90 ms':>8}  correct  what the clone has")
    for method in METHODS:
        r = results[method]
        print(f"{method:<14} {r['median_ms']:>10} {r['p90_ms']:>8}  {'yes' if r['correct'] else 'no':<7}  {r['shape']}")
    print(f"{'drop':<14} {results['drop']['median_ms']:>10} {results['drop']['p90_ms']:>8}")
    tx = results["transaction_test"]
    print(
        f"transaction isolation, per test (connect, begin, roll back, close): {tx['median_ms']} ms (p90 {tx['p90_ms']})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
