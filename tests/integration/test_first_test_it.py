"""The start of a run: the first test's database and services are readied while pytest collects."""

from __future__ import annotations

import pytest

from tests.helpers import inner_pyproject, run_inner

pytestmark = pytest.mark.usefixtures("inner_env")

# Collection ends only once the pool has a database ready (at most 30 s): a project whose collection outlasts
# the servers' start. Before the session readied the first databases ahead, no pool existed before the first
# test asked for a database, and this timed out.
CONFTEST = """
from testlane.core.waiting import wait_until
from testlane.pytest_plugin.plugin import plugin_of

def pytest_collection_finish(session):
    manager = plugin_of(session.config).databases
    wait_until(
        lambda: any(pool.stats.cloned for pool in list(manager._pools.values())),
        timeout=30,
        what="a database cloned ahead of the first test",
    )
"""

SUITE = """
from testlane.pytest_plugin.plugin import plugin_of

def test_first(pg_database, pg_conn, redis_client, request):
    pool = next(iter(plugin_of(request.config).databases._pools.values()))
    assert not pg_database.lease.on_demand
    assert (pool.stats.waited, pool.stats.on_demand) == (0, 0), "the first test waited for its database"
    assert pg_conn.execute("SELECT count(*) FROM items").fetchone() == (0,)
    assert redis_client.ping()
"""


def test_the_first_tests_database_is_cloned_while_pytest_collects(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", pyproject=inner_pyproject(services='["postgres", "valkey"]', db=""))
    (pytester.path / "migrations").mkdir()
    (pytester.path / "migrations" / "001.sql").write_text("CREATE TABLE items (id serial PRIMARY KEY);\n")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_first_it=SUITE)
    result = run_inner(pytester, "--it", timeout=300)
    result.assert_outcomes(passed=1)


URL_CONFTEST = """
def pytest_collection_finish(session):
    from testlane.pytest_plugin.plugin import plugin_of

    manager = plugin_of(session.config).databases
    manager._join_ahead()
    assert manager._pools == {}, "a pool was started ahead on an existing server"
"""


def test_nothing_is_made_ahead_on_an_existing_server(pytester: pytest.Pytester, postgres) -> None:  # type: ignore[no-untyped-def]
    backend = f'[tool.testlane.postgres]\nbackend = "url"\nurl = "{postgres.url}"\n'
    pytester.makefile(".toml", pyproject=inner_pyproject(testlane=backend, db=""))
    (pytester.path / "migrations").mkdir()
    (pytester.path / "migrations" / "001.sql").write_text("CREATE TABLE items (id serial PRIMARY KEY);\n")
    pytester.makeconftest(URL_CONFTEST)
    pytester.makepyfile(test_url_it="def test_it(pg_conn):\n    pg_conn.execute('SELECT count(*) FROM items')\n")
    run_inner(pytester, "--it", timeout=300).assert_outcomes(passed=1)


# The other kinds' modules (and their engines'): a run's session start imported all seven kinds to know their names.
OTHER_KINDS = [
    f"testlane.services.{p}{n}" for n in ("mariadb", "nats", "rabbitmq", "mqtt", "s3") for p in ("", "kinds.")
]

ONLY_USED_CONFTEST = """
import sys

def pytest_collection_finish(session):
    # imported at session start, on pytest's thread (the kinds' client_modules), before the first test
    assert "psycopg" in sys.modules and "redis" in sys.modules
"""

ONLY_USED_SUITE = f"""
import sys

def test_first(pg_conn, redis_client):
    assert redis_client.ping()
    loaded = sorted(m for m in {OTHER_KINDS!r} if m in sys.modules)
    assert loaded == [], f"the session imported kinds it does not run: {{loaded}}"
"""


def test_a_run_imports_the_modules_of_the_kinds_it_runs_only(pytester: pytest.Pytester) -> None:
    """Issue 19: time to first test is CPU work on pytest's thread, imports above all."""
    pytester.makefile(".toml", pyproject=inner_pyproject(services='["postgres", "valkey"]', db=""))
    (pytester.path / "migrations").mkdir()
    (pytester.path / "migrations" / "001.sql").write_text("CREATE TABLE items (id serial PRIMARY KEY);\n")
    pytester.makeconftest(ONLY_USED_CONFTEST)
    pytester.makepyfile(test_only_used_it=ONLY_USED_SUITE)
    run_inner(pytester, "--it", timeout=300).assert_outcomes(passed=1)
