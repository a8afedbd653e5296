"""Per-test database isolation: testlane next to pytest-postgresql, the same suite, one run.

Usage: python bench/isolation.py [--tests 200] [--runs 3] [--json]

The suite: N tests, each inserting a row into a table created by migrations and selecting it
back. Every variant runs as its own pytest process; times are wall-clock medians of ``--runs``:

* ``nodb``: the same N tests without a database — the anchor: the same test code, on a
  function-scoped fixture returning a fake connection, so that collecting, assertion rewriting and
  fixture set-up cost the same as in the other variants;
* ``shared``: the same N tests on one psycopg connection to testlane's server that the whole
  session shares — no isolation at all, the floor: what the test's own statements cost;
* ``testlane_database``: testlane, ``database`` isolation (a pooled clone per test, ``pg_conn``);
* ``testlane_transaction``: testlane, ``transaction`` isolation (rolled back per test);
* ``pytest_postgresql``: pytest-postgresql's per-test ``postgresql`` fixture with its template
  loaded from the same migration, data directory on the same tmpfs, same Postgres binaries;
* ``xdist``: a 2N-test testlane suite under ``-n 0`` and ``-n 2``.

Per-test overhead = (variant total - no-database total) / N, each against the anchor run under
the same interpreter; it includes start-up and shut-down spread over N tests. The *marginal*
per-test overhead is the slope between an N-test and a 2N-test suite, minus the no-database slope:
what each additional test costs once the services are up. Both are differences of wall-clock totals,
so on a noisy machine they move by a millisecond or two from run to run. The *in-test* overhead is
steadier: each pytest process records how long every test takes from set-up to tear-down
(``pytest_runtest_protocol``; the first and last tests, which pay session set-up and tear-down, left
out), and the figure is the median of a variant minus the anchor's. It is what a test waits for; work
done in the background (refilling and resetting the pool) shows in it only where it competes for the
CPU. The *isolation* cost is the in-test time minus the ``shared`` variant's: what isolating a
test costs beyond running its statements. Time to first test = from spawning
pytest to the first test's call. The xdist speedup is reported next to xdist's own cost on the
no-database suite (spawning workers), which no database work can win back on a 2-core machine.
pytest-postgresql cannot run Postgres as root; as root its suite runs as testlane's service user
(with the system Python 3.11 on this environment's packages).

Also measured directly: the clone floor (``CREATE DATABASE ... STRATEGY FILE_COPY`` vs ``WAL_LOG``).
Templates of 100-300 tables with seeded rows, and the floors next to them: ``bench/schema_size.py``
(it reuses this script's conftest and runner). A Ctrl-C (or an error) stops the running pytest with
SIGINT so that it tears its servers down, and kills any process left that names the benchmark's
/dev/shm folder, before the folder is removed.

JSON keys: tests, runs, nodb_total_s, nodb_first_test_s, nodb_per_test_ms, testlane_database_total_s,
testlane_database_first_test_s, testlane_database_overhead_ms, testlane_database_marginal_ms,
testlane_database_per_test_ms, testlane_database_in_test_overhead_ms, testlane_transaction_total_s,
testlane_transaction_overhead_ms, testlane_transaction_marginal_ms, testlane_transaction_per_test_ms,
testlane_transaction_in_test_overhead_ms, pytest_postgresql_total_s, pytest_postgresql_first_test_s,
pytest_postgresql_overhead_ms, pytest_postgresql_marginal_ms, pytest_postgresql_per_test_ms,
pytest_postgresql_in_test_overhead_ms, overhead_ratio, marginal_ratio and in_test_ratio
(pytest-postgresql / testlane database mode), shared_per_test_ms, queries_ms,
testlane_database_isolation_ms, testlane_transaction_isolation_ms, pytest_postgresql_isolation_ms,
xdist_tests, xdist_n0_s, xdist_n2_s, xdist_speedup, nodb_xdist_n0_s, nodb_xdist_n2_s,
nodb_xdist_speedup, clone_file_copy_ms, clone_wal_log_ms.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from testlane.core.runtime import is_root
from testlane.services.binaries import embedded_postgres

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests.helpers
from tests.helpers import inner_pyproject

MIGRATION = "CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, created timestamptz DEFAULT now());\n"

# The anchor's conftest part: the same test code on a stand-in for a connection (bench/per_test_cost.py uses it too).
FAKE_CONNECTION = textwrap.dedent(
    """
    class FakeConnection:  # the anchor's stand-in for a connection: the same test code, no database

        def __init__(self):
            self.rows = []

        def execute(self, sql, params=None):
            if sql.startswith("INSERT"):
                self.rows.append(params)
            return self

        def fetchall(self):
            return list(self.rows)

        def commit(self):
            pass

    @pytest.fixture
    def fake_conn():
        return FakeConnection()
    """
)

TIMING_CONFTEST = (
    textwrap.dedent(
        """
    import json, os, time
    import pytest
    _first = []

    _durations = []

    def pytest_runtest_call(item):
        if not _first:
            _first.append(time.time())

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item, nextitem):
        started = time.perf_counter()
        yield
        _durations.append(time.perf_counter() - started)

    def pytest_sessionfinish(session):
        steady = sorted(_durations[1:-1])  # the first and last tests pay session set-up/tear-down
        median = steady[len(steady) // 2] if steady else None
        with open(os.environ["BENCH_OUT"], "w") as fh:
            json.dump({"first": _first[0] if _first else None, "end": time.time(), "per_test": median}, fh)
    """
    )
    + FAKE_CONNECTION
)

# One test body for every variant; only the fixture that provides the connection differs.
TEST = """
def test_{i}({conn}):
    {conn}.execute("INSERT INTO items (name) VALUES (%s)", ("item-{i}",))
    assert {conn}.execute("SELECT name FROM items WHERE name = %s", ("item-{i}",)).fetchall() == [("item-{i}",)]
    {conn}.commit()
"""

CONNECTION = {"testlane": "pg_conn", "pytest_postgresql": "postgresql", "nodb": "fake_conn", "shared": "shared_conn"}

PYTEST_POSTGRESQL_HEADER = """
from pathlib import Path
from pytest_postgresql import factories

postgresql_proc = factories.postgresql_proc(load=[Path(__file__).parent / "migrations" / "001.sql"])
postgresql = factories.postgresql("postgresql_proc")
"""

# The floor: the same queries on one connection the whole session shares (testlane's server, no isolation).
SHARED_HEADER = f"""
import psycopg
import pytest

@pytest.fixture(scope="session")
def shared_conn(postgres):
    with psycopg.connect(postgres.url) as conn:
        conn.execute({MIGRATION.strip()!r})
        conn.commit()
        yield conn
"""


def write_project(root: Path, variant: str, n: int, isolation: str = "database") -> Path:
    project = root / f"{variant}-{n}"
    shutil.rmtree(project, ignore_errors=True)
    (project / "migrations").mkdir(parents=True)
    (project / "migrations" / "001.sql").write_text(MIGRATION)
    (project / "conftest.py").write_text(TIMING_CONFTEST)
    (project / "pyproject.toml").write_text(inner_pyproject(name="bench", db=f'isolation = "{isolation}"'))
    header = {"pytest_postgresql": PYTEST_POSTGRESQL_HEADER, "shared": SHARED_HEADER}.get(variant, "")
    name = "test_suite_it.py" if variant in ("testlane", "shared") else "test_suite.py"
    tests = "".join(TEST.format(i=i, conn=CONNECTION[variant]) for i in range(n))
    (project / name).write_text(header + tests)
    if is_root():
        for dirpath, _dirs, files in os.walk(root):
            os.chmod(dirpath, 0o777)
            for name in files:
                os.chmod(os.path.join(dirpath, name), 0o666)
    return project


def run_pytest(
    project: Path, extra: list[str], *, as_service_user: bool = False, env_extra: dict[str, str] | None = None
) -> tuple[float, float, float]:
    """(total wall seconds, seconds to the first test's call, median seconds per test in process)."""
    out = project / f"timing-{time.monotonic_ns()}.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TESTLANE_", "PYTEST_"))}
    env.update({"BENCH_OUT": str(out), "PYTHONDONTWRITEBYTECODE": "1", **(env_extra or {})})
    python = sys.executable
    kwargs: dict[str, object] = {}
    if as_service_user and is_root():
        from testlane.services.privileges import resolve_service_user

        user = resolve_service_user("testlane", Path("/var/cache/testlane"))
        site = next(p for p in sys.path if p.endswith("site-packages"))
        python = "/usr/bin/python3"
        env["PYTHONPATH"] = site
        env["HOME"] = str(project)
        # Only the plugins this suite needs (the system Python lacks backports some others import).
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        extra = ["-p", "pytest_postgresql.plugin", *[a for a in extra if a not in ("-p", "no:testlane")]]
        kwargs = {"user": user.uid, "group": user.gid, "extra_groups": []}
    argv = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra]
    log = project / f"pytest-{time.monotonic_ns()}.log"
    started = time.time()
    with open(log, "w") as output:
        # Its own session: a Ctrl-C here reaches only this script, which then stops pytest once, cleanly.
        proc = subprocess.Popen(  # type: ignore[call-overload]
            argv, cwd=project, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True, **kwargs
        )
        try:
            returncode = proc.wait()
        except BaseException:
            stop_pytest(proc)
            raise
    total = time.time() - started
    if returncode != 0:
        raise SystemExit(f"benchmark suite failed in {project}:\n{log.read_text()[-6000:]}")
    timing = json.loads(out.read_text())
    first = timing["first"]
    per_test = timing["per_test"] if timing["per_test"] is not None else float("nan")
    return total, (first - started) if first is not None else float("nan"), per_test  # xdist: the controller runs none


STOP_TIMEOUT = 60.0  # seconds a pytest process gets to tear down its services after SIGINT


def stop_pytest(proc: subprocess.Popen[bytes]) -> None:
    """Stop a benchmark's pytest process: SIGINT (its services tear down), then its process group is killed."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def kill_leftovers(root: Path) -> list[int]:
    """Kill the processes whose command line names ``root`` (servers the benchmark's suites left); their pids."""
    marker = str(root).encode()
    killed = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                if marker not in fh.read():
                    continue
            os.kill(int(entry), signal.SIGKILL)
            killed.append(int(entry))
        except OSError:
            continue
    return killed


def clone_floor(runs: int = 30) -> dict[str, float]:
    """Median CREATE DATABASE ... TEMPLATE time per strategy on a testlane server (tmpfs)."""
    from testlane.core.config import load_settings
    from testlane.core.runtime import RunContext
    from testlane.services.stack import ServiceStack

    settings = load_settings(environ={})
    out: dict[str, float] = {}
    with ServiceStack(settings, RunContext.from_settings(settings, owner=os.getpid())) as stack:
        stack.start(["postgres"])
        server = stack.servers["postgres"]
        with server.connect() as admin:
            admin.execute("CREATE DATABASE bench_tpl")
            with server.connect("bench_tpl") as conn:
                conn.execute(MIGRATION)
            admin.execute("ALTER DATABASE bench_tpl WITH IS_TEMPLATE true ALLOW_CONNECTIONS false")
            for strategy in ("FILE_COPY", "WAL_LOG"):
                times = []
                for i in range(runs):
                    started = time.perf_counter()
                    admin.execute(
                        f"CREATE DATABASE bench_{strategy.lower()}_{i} TEMPLATE bench_tpl STRATEGY {strategy}"
                    )
                    times.append(time.perf_counter() - started)
                out[strategy] = statistics.median(times) * 1000
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tests", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    n = args.tests
    bins = embedded_postgres()
    assert bins is not None, "embedded-postgres is required"

    root = Path(tempfile.mkdtemp(prefix="testlane-bench-iso-", dir="/dev/shm"))
    os.chmod(root, 0o777)
    it_env = {"TESTLANE_IT": "1"}
    keys = (
        "nodb",
        "nodb2",
        "nodb_service_user",
        "nodb2_service_user",
        "shared",
        "tl_db",
        "tl_db2",
        "tl_txn",
        "tl_txn2",
        "pg",
        "pg2",
        "x0",
        "x2",
        "nx0",
        "nx2",
    )
    results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in keys}
    try:
        nodb = write_project(root, "nodb", n)
        nodb2 = write_project(root, "nodb", 2 * n)
        shared = write_project(root, "shared", n)
        tl_db = write_project(root, "testlane", n, "database")
        tl_db2 = write_project(root, "testlane", 2 * n, "database")
        tl_txn = write_project(root / "txn", "testlane", n, "transaction")
        tl_txn2 = write_project(root / "txn", "testlane", 2 * n, "transaction")
        pg = write_project(root, "pytest_postgresql", n)
        pg2 = write_project(root, "pytest_postgresql", 2 * n)
        pg_args = [f"--postgresql-exec={bins.exe('pg_ctl')}", f"--basetemp={root / 'pgbase'}"]
        run_pytest(tl_db, [], env_extra=it_env)  # warm the snapshot cache once
        for _ in range(args.runs):
            results["nodb"].append(run_pytest(nodb, []))
            results["nodb2"].append(run_pytest(nodb2, []))
            results["nodb_service_user"].append(run_pytest(nodb, [], as_service_user=True))
            results["nodb2_service_user"].append(run_pytest(nodb2, [], as_service_user=True))
            results["shared"].append(run_pytest(shared, [], env_extra=it_env))
            results["tl_db"].append(run_pytest(tl_db, [], env_extra=it_env))
            results["tl_db2"].append(run_pytest(tl_db2, [], env_extra=it_env))
            results["tl_txn"].append(run_pytest(tl_txn, [], env_extra=it_env))
            results["tl_txn2"].append(run_pytest(tl_txn2, [], env_extra=it_env))
            results["pg"].append(run_pytest(pg, pg_args, as_service_user=True))
            results["pg2"].append(run_pytest(pg2, pg_args, as_service_user=True))
            results["x0"].append(run_pytest(tl_db2, ["-n", "0"], env_extra=it_env))
            results["x2"].append(run_pytest(tl_db2, ["-n", "2"], env_extra=it_env))
            results["nx0"].append(run_pytest(nodb2, ["-n", "0"]))
            results["nx2"].append(run_pytest(nodb2, ["-n", "2"]))
        floor = clone_floor()
    finally:
        kill_leftovers(root)
        shutil.rmtree(root, ignore_errors=True)

    def med(key: str, index: int = 0) -> float:
        return float(statistics.median(r[index] for r in results[key]))

    anchor, anchor_pg = med("nodb"), med("nodb_service_user")
    slope, slope_pg = med("nodb2") - anchor, med("nodb2_service_user") - anchor_pg

    def marginal(key: str, base_slope: float) -> float:
        return (med(f"{key}2") - med(key) - base_slope) / n * 1000

    tl_overhead = (med("tl_db") - anchor) / n * 1000
    pg_overhead = (med("pg") - anchor_pg) / n * 1000
    tl_marginal, pg_marginal = marginal("tl_db", slope), marginal("pg", slope_pg)

    def per_test(key: str) -> float:
        return med(key, 2) * 1000

    tl_in_test = per_test("tl_db") - per_test("nodb")
    pg_in_test = per_test("pg") - per_test("nodb_service_user")
    queries = per_test("shared") - per_test("nodb")  # what the test's own three statements cost
    summary = {
        "tests": n,
        "runs": args.runs,
        "nodb_total_s": round(anchor, 3),
        "nodb_first_test_s": round(med("nodb", 1), 3),
        "nodb_per_test_ms": round(per_test("nodb"), 3),
        "testlane_database_total_s": round(med("tl_db"), 3),
        "testlane_database_first_test_s": round(med("tl_db", 1), 3),
        "testlane_database_overhead_ms": round(tl_overhead, 2),
        "testlane_database_marginal_ms": round(tl_marginal, 2),
        "testlane_database_per_test_ms": round(per_test("tl_db"), 3),
        "testlane_database_in_test_overhead_ms": round(tl_in_test, 3),
        "testlane_transaction_total_s": round(med("tl_txn"), 3),
        "testlane_transaction_overhead_ms": round((med("tl_txn") - anchor) / n * 1000, 2),
        "testlane_transaction_marginal_ms": round(marginal("tl_txn", slope), 2),
        "testlane_transaction_per_test_ms": round(per_test("tl_txn"), 3),
        "testlane_transaction_in_test_overhead_ms": round(per_test("tl_txn") - per_test("nodb"), 3),
        "pytest_postgresql_total_s": round(med("pg"), 3),
        "pytest_postgresql_first_test_s": round(med("pg", 1), 3),
        "pytest_postgresql_overhead_ms": round(pg_overhead, 2),
        "pytest_postgresql_marginal_ms": round(pg_marginal, 2),
        "pytest_postgresql_per_test_ms": round(per_test("pg"), 3),
        "pytest_postgresql_in_test_overhead_ms": round(pg_in_test, 3),
        "overhead_ratio": round(pg_overhead / tl_overhead, 1) if tl_overhead > 0 else None,
        "marginal_ratio": round(pg_marginal / tl_marginal, 1) if tl_marginal > 0 else None,
        "in_test_ratio": round(pg_in_test / tl_in_test, 1) if tl_in_test > 0 else None,
        "shared_per_test_ms": round(per_test("shared"), 3),
        "queries_ms": round(queries, 3),
        "testlane_database_isolation_ms": round(per_test("tl_db") - per_test("shared"), 3),
        "testlane_transaction_isolation_ms": round(per_test("tl_txn") - per_test("shared"), 3),
        "pytest_postgresql_isolation_ms": round(pg_in_test - queries, 3),
        "xdist_tests": 2 * n,
        "xdist_n0_s": round(med("x0"), 3),
        "xdist_n2_s": round(med("x2"), 3),
        "xdist_speedup": round(med("x0") / med("x2"), 2),
        "nodb_xdist_n0_s": round(med("nx0"), 3),
        "nodb_xdist_n2_s": round(med("nx2"), 3),
        "nodb_xdist_speedup": round(med("nx0") / med("nx2"), 2),
        "clone_file_copy_ms": round(floor["FILE_COPY"], 2),
        "clone_wal_log_ms": round(floor["WAL_LOG"], 2),
    }
    if args.json:
        print(json.dumps(summary))
        return
    print(f"{n} tests, each: INSERT + SELECT + COMMIT; medians of {args.runs} runs")
    print("  variant                           total    first test   overhead/test   marginal/test   in-test/test")
    rows = [
        ("no database (anchor)", "nodb_total_s", "nodb_first_test_s", None, None),
        (
            "testlane, database isolation",
            "testlane_database_total_s",
            "testlane_database_first_test_s",
            "testlane_database_overhead_ms",
            "testlane_database_marginal_ms",
        ),
        (
            "testlane, transaction isolation",
            "testlane_transaction_total_s",
            None,
            "testlane_transaction_overhead_ms",
            "testlane_transaction_marginal_ms",
        ),
        (
            "pytest-postgresql, per-test db",
            "pytest_postgresql_total_s",
            "pytest_postgresql_first_test_s",
            "pytest_postgresql_overhead_ms",
            "pytest_postgresql_marginal_ms",
        ),
    ]
    for label, total, first, over, marg in rows:
        first_s = f"{summary[first]:.3f} s" if first else "-"
        over_s = f"{summary[over]:.2f} ms" if over else "-"
        marg_s = f"{summary[marg]:.2f} ms" if marg else "-"
        in_key = over.replace("_overhead_ms", "_in_test_overhead_ms") if over else None
        in_s = f"{summary[in_key]:.2f} ms" if in_key else f"({summary['nodb_per_test_ms']:.2f} ms)"
        print(f"  {label:<33} {summary[total]:.3f} s  {first_s:>10}   {over_s:>12}   {marg_s:>12}   {in_s:>12}")
    print(
        f"  pytest-postgresql / testlane: {_ratio(summary['overhead_ratio'])} overhead, "
        f"{_ratio(summary['marginal_ratio'])} marginal, {_ratio(summary['in_test_ratio'])} in-test"
    )
    print(
        f"  isolation alone, per test (in-test minus the same queries on a shared connection, "
        f"{summary['queries_ms']:.2f} ms): database {summary['testlane_database_isolation_ms']:.2f} ms, "
        f"transaction {summary['testlane_transaction_isolation_ms']:.2f} ms, "
        f"pytest-postgresql {summary['pytest_postgresql_isolation_ms']:.2f} ms"
    )
    print(
        f"  {2 * n} tests under xdist: -n 0 {summary['xdist_n0_s']:.3f} s, -n 2 {summary['xdist_n2_s']:.3f} s, "
        f"speedup {summary['xdist_speedup']}x (no database: {summary['nodb_xdist_speedup']}x)"
    )
    print(f"  clone floor: FILE_COPY {summary['clone_file_copy_ms']} ms, WAL_LOG {summary['clone_wal_log_ms']} ms")


def _ratio(value: object) -> str:
    return f"{value}x" if value is not None else "n/a (testlane's figure is within the noise of zero)"


if __name__ == "__main__":
    main()
