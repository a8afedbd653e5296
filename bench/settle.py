"""What the end of a test costs in transaction isolation when another connection was opened during it.

Usage: python bench/settle.py [--tests 30] [--json]

``SavepointConnection.end_test`` checks whether another connection committed during the test; a
connection's statistics are final only once its server process has exited, so when the database's
session counter moved the harness first waits (``DatabaseManager._settled``, bounded by
``databases.pool.SETTLE_TIMEOUT``) until no server process but its own serves the database. This runs a
generated project under ``testlane run`` (one testlane Postgres) and reads pytest's ``--durations`` for
each kind of test, median teardown in milliseconds:

* ``pg_conn``: the test uses only pg_conn (the session counter does not move);
* ``db_session``: a SQLAlchemy session (the worker engine's connection is the harness's own);
* ``closed_pg_conn``: the test closes pg_conn (the harness opens a new one: the session counter moves);
* ``closed_other``: the test opens and closes its own connection from pg_url (another backend, exiting);
* ``open_other``: the test leaves its own connection open (a few tests: each waits for the bound).

Also printed: the time spent in the wait itself (``settle_ms_per_test``, averaged over the kind's tests)
and in how many tests it ran.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests.helpers
from tests.helpers import inner_pyproject  # the generated projects' one template

PYPROJECT = inner_pyproject(name="settle", db='isolation = "transaction"\n')

TESTS = """
import psycopg
import pytest
from sqlalchemy import text

KEEP = []


@pytest.mark.parametrize("n", range({tests}))
def test_pg_conn(pg_conn, n):
    pg_conn.execute("INSERT INTO things VALUES (1)")


@pytest.mark.parametrize("n", range({tests}))
def test_db_session(db_session, n):
    db_session.execute(text("INSERT INTO things VALUES (1)"))
    db_session.commit()


@pytest.mark.parametrize("n", range({tests}))
def test_closed_pg_conn(pg_conn, n):
    pg_conn.execute("SELECT 1")
    pg_conn.close()


@pytest.mark.parametrize("n", range({tests}))
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_closed_other(pg_url, n):
    with psycopg.connect(pg_url) as conn:
        conn.execute("SELECT 1")


@pytest.mark.parametrize("n", range({open_tests}))
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_open_other(pg_url, n):
    KEEP.append(psycopg.connect(pg_url))  # left open: the harness cannot tell whether it committed
"""

CONFTEST = """
import json, os, time

from testlane.pytest_plugin.databases import DatabaseManager

CURRENT = []
_settled = DatabaseManager._settled


def _timed(self, name, own):
    started = time.perf_counter()
    try:
        return _settled(self, name, own)
    finally:
        _write(["settle", CURRENT[-1] if CURRENT else "?", time.perf_counter() - started])


DatabaseManager._settled = _timed


def _write(row):
    with open(os.environ["SETTLE_LOG"], "a") as fh:
        fh.write(json.dumps(row) + "\\n")


def pytest_runtest_setup(item):
    CURRENT.append(item.nodeid)


def pytest_runtest_logreport(report):
    if report.when == "teardown":
        _write(["teardown", report.nodeid, report.duration])
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=30)
    parser.add_argument("--open-tests", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        (project / "pyproject.toml").write_text(PYPROJECT)
        (project / "migrations").mkdir()
        (project / "migrations" / "001.sql").write_text("CREATE TABLE things (id int);\n")
        (project / "test_settle_it.py").write_text(TESTS.format(tests=args.tests, open_tests=args.open_tests))
        (project / "conftest.py").write_text(CONFTEST)
        log = project / "teardowns.jsonl"
        testlane = Path(sys.executable).with_name("testlane")
        result = subprocess.run(
            [str(testlane), "run", "--", "-q", "-p", "no:cacheprovider"],
            cwd=project,
            capture_output=True,
            text=True,
            env={**os.environ, "SETTLE_LOG": str(log)},
        )
        times: dict[str, list[float]] = {}
        settles: dict[str, list[float]] = {}
        for line in log.read_text().splitlines() if log.exists() else []:
            what, nodeid, seconds = json.loads(line)
            kind = nodeid.split("::test_", 1)[1].split("[", 1)[0]
            (times if what == "teardown" else settles).setdefault(kind, []).append(seconds * 1000)
    if not times:
        sys.exit(result.stdout + result.stderr)
    medians = {kind: round(statistics.median(values), 2) for kind, values in times.items()}
    waits = {kind: round(sum(settles.get(kind, [])) / len(times[kind]), 2) for kind in times}
    if args.json:
        print(json.dumps({"tests": args.tests, "teardown_ms": medians, "settle_ms_per_test": waits}))
        return
    for kind, value in medians.items():
        print(
            f"{kind:16} teardown median {value:8.2f} ms, max {max(times[kind]):8.2f} ms; waiting for other backends "
            f"{waits[kind]:8.2f} ms a test, in {len(settles.get(kind, []))} of {len(times[kind])} tests"
        )


if __name__ == "__main__":
    main()
