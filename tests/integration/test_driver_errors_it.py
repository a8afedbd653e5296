"""Driver errors in the fixtures' own work are testlane's errors (one message, a hint, no traceback);
a test's own SQL errors stay the driver's; and the asyncpg URL the fixtures now build with ServiceUrl.
Generated projects, run in a subprocess."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import inner_pyproject, run_inner

TESTS = """
import psycopg
import pytest


def test_1_its_own_sql_error_is_the_drivers(pg_conn):
    with pytest.raises(psycopg.errors.UniqueViolation):
        pg_conn.execute("INSERT INTO countries VALUES ('fr')")


@pytest.mark.isolation("schema")
def test_2_stops_the_server(pg_database):
    pg_database.server.halt(clean=False)


@pytest.mark.isolation("schema")
def test_3_needs_the_server(pg_database):
    pass
"""


def make_project(pytester: pytest.Pytester) -> None:
    """A project on Postgres whose migrations create ``countries`` holding ``fr``."""
    pytester.makefile(".toml", pyproject=inner_pyproject(db=""))
    (pytester.path / "migrations").mkdir()
    (pytester.path / "migrations" / "001.sql").write_text("CREATE TABLE countries (code text PRIMARY KEY);\n")
    (pytester.path / "migrations" / "002.sql").write_text("INSERT INTO countries VALUES ('fr');\n")


def test_a_stopped_server_is_one_message_with_a_hint(pytester: pytest.Pytester, inner_env: Path) -> None:
    make_project(pytester)
    pytester.makepyfile(test_x_it=TESTS)
    result = run_inner(pytester, timeout=300)
    result.assert_outcomes(passed=2, errors=2)
    out = result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*test_2_stops_the_server: cleaning up its database tl_* failed: * (OperationalError)",
            "*hint: the connection failed or was lost; the server may have stopped or restarted*",
        ]
    )
    result.stdout.fnmatch_lines(["*test_3_needs_the_server: preparing its database failed: * (OperationalError)"])
    assert "psycopg.OperationalError" not in out  # the driver's error, with its traceback, no longer escapes


CONNECTS = """
import pytest


@pytest.mark.isolation("schema")
def test_pg_conn_connects_to_a_stopped_server(pg_database, request):
    pg_database.server.halt(clean=False)
    request.getfixturevalue("pg_conn")  # the fixture's own connect: testlane's message, not psycopg's traceback
"""


def test_a_fixtures_own_connect_to_a_stopped_server_is_one_message(pytester: pytest.Pytester, inner_env: Path) -> None:
    """pg_conn's connect is testlane's own work (one boundary, the driver-error table), like pg_database's."""
    pytester.makefile(".toml", pyproject=inner_pyproject(db=""))
    (pytester.path / "migrations").mkdir()
    (pytester.path / "migrations" / "001.sql").write_text("CREATE TABLE countries (code text PRIMARY KEY);\n")
    pytester.makepyfile(test_c_it=CONNECTS)
    result = run_inner(pytester, timeout=300)
    result.assert_outcomes(failed=1, errors=1)  # the connect (in the test's call), then pg_database's clean-up
    out = result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*test_pg_conn_connects_to_a_stopped_server: connecting pg_conn to tl_* failed: * (OperationalError)",
            "*hint: the connection failed or was lost; the server may have stopped or restarted*",
        ]
    )
    assert "psycopg.OperationalError" not in out
    assert "Traceback" not in out


ASYNC_SCHEMA = """
import pytest
from sqlalchemy import text


@pytest.mark.asyncio
@pytest.mark.isolation("schema")
async def test_asyncpg_url_reaches_the_schema(async_db_engine, pg_database):
    assert async_db_engine.url.drivername == "postgresql+asyncpg"
    assert async_db_engine.url.database == pg_database.name
    async with async_db_engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM countries"))).scalar() == 1
        assert (await conn.execute(text("SELECT current_schema()"))).scalar() == pg_database.schema.schema
"""


def test_the_asyncpg_url_of_a_schema_database(pytester: pytest.Pytester, inner_env: Path) -> None:
    """The URL rewritten for asyncpg (ServiceUrl, no longer ``str.replace``) still reaches the schema."""
    make_project(pytester)
    pytester.makepyfile(test_y_it=ASYNC_SCHEMA)
    result = run_inner(pytester, timeout=300)
    result.assert_outcomes(passed=1)


POOLED = """
from testlane.pytest_plugin.plugin import plugin_of


def test_1_stops_the_server(pg_database, request):
    # The premise: a database (and its connection) ready in the pool when the server dies. The pool starts
    # while pytest collects, so this test may take the only one ready; wait for the next (on the pool's own
    # condition: no sleep), or test 2 would find none and clone on demand.
    pool = next(iter(plugin_of(request.config).databases._pools.values()))
    with pool._cond:
        assert pool._cond.wait_for(lambda: pool._ready, timeout=60)
    pg_database.server.halt(clean=False)


def test_2_uses_the_connection_the_pool_opened_ahead(pg_conn):
    pg_conn.execute("SELECT 1")
"""


def test_a_lost_connection_in_a_test_says_the_runs_server_stopped(pytester: pytest.Pytester, inner_env: Path) -> None:
    """The pool hands out a connection it opened ahead; when the run's server died since, the test's own
    statement fails with the driver's error (a test's errors stay its own), and testlane says why: the
    server is not running (seen by a fresh user: a bare AdminShutdown traceback, nothing else)."""
    make_project(pytester)
    pytester.makepyfile(test_p_it=POOLED)
    result = run_inner(pytester, timeout=300)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*the run's postgres server (pid *) is not running: it stopped during or before this test*"]
    )
