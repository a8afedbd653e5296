"""Per-test isolation through the pytest plugin, on small generated projects run in subprocesses."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import clean_env, inner_pyproject, leftovers, run_cli, run_inner, server_processes

pytestmark = pytest.mark.usefixtures("inner_env")

MIGRATION = """
CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL);
CREATE TABLE countries (code text PRIMARY KEY);
INSERT INTO countries VALUES ('fr'), ('de');
"""


def make_project(pytester: pytest.Pytester, db: str = "", services: str = '["postgres"]') -> Path:
    pytester.makefile(".toml", pyproject=inner_pyproject(services=services, db=db))
    (pytester.path / "migrations").mkdir()
    (pytester.path / "migrations" / "001.sql").write_text(MIGRATION)
    return pytester.path


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return run_inner(pytester, *args, timeout=300)


ISOLATION_SUITE = """
import psycopg

def test_1_writes_through_pg_conn(pg_conn):
    for name in ("a", "b", "c"):
        pg_conn.execute("INSERT INTO items (name) VALUES (%s)", (name,))
    pg_conn.commit()
    assert pg_conn.execute("SELECT max(id) FROM items").fetchone() == (3,)

def test_2_sees_a_fresh_database(pg_conn):
    assert pg_conn.execute("SELECT count(*) FROM items").fetchone() == (0,)
    pg_conn.execute("INSERT INTO items (name) VALUES ('x') RETURNING id")
    assert pg_conn.execute("SELECT max(id) FROM items").fetchone() == (1,)  # sequences start over
    pg_conn.commit()

def test_3_writes_through_its_own_connection(pg_url):
    with psycopg.connect(pg_url) as conn:
        conn.execute("INSERT INTO items (name) VALUES ('own')")
        conn.execute("DELETE FROM countries WHERE code = 'fr'")

def test_4_sees_the_template_again(pg_conn):
    assert pg_conn.execute("SELECT count(*) FROM items").fetchone() == (0,)
    assert pg_conn.execute("SELECT array_agg(code ORDER BY code) FROM countries").fetchone() == (["de", "fr"],)

def test_5_ddl(pg_conn):
    pg_conn.execute("CREATE TABLE extra (id int)")
    pg_conn.execute("ALTER TABLE items ADD COLUMN note text")
    pg_conn.commit()

def test_6_no_ddl_leaks(pg_conn):
    assert pg_conn.execute("SELECT to_regclass('extra')").fetchone() == (None,)
    cols = pg_conn.execute("SELECT count(*) FROM information_schema.columns WHERE table_name = 'items'").fetchone()
    assert cols == (2,)

def test_7_reads_only(pg_database, pg_conn):
    assert pg_database.name.startswith("tl_")
    assert pg_conn.execute("SELECT count(*) FROM countries").fetchone() == (2,)
"""


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_database_isolation_hides_every_write(pytester: pytest.Pytester, workers: list[str]) -> None:
    make_project(pytester)
    pytester.makepyfile(test_suite_it=ISOLATION_SUITE)  # under xdist in any order: every test must still hold
    result = run(pytester, *workers)
    result.assert_outcomes(passed=7)


def test_transaction_isolation_rolls_back_commits_and_sessions(pytester: pytest.Pytester) -> None:
    make_project(pytester, db='isolation = "transaction"')
    pytester.makepyfile(
        test_txn_it="""
        import pytest
        import sqlalchemy as sa

        def test_1_commit_is_a_savepoint(pg_conn, db_session):
            pg_conn.execute("INSERT INTO items (name) VALUES ('psycopg')")
            pg_conn.commit()
            db_session.execute(sa.text("INSERT INTO items (name) VALUES ('orm')"))
            db_session.commit()
            assert db_session.execute(sa.text("SELECT count(*) FROM items")).scalar() == 1

        def test_2_nothing_survived(pg_conn, pg_database):
            assert pg_database.isolation == "transaction"
            assert pg_conn.execute("SELECT count(*) FROM items").fetchone() == (0,)

        @pytest.mark.asyncio
        async def test_3_async_session(async_db_session):
            await async_db_session.execute(sa.text("INSERT INTO items (name) VALUES ('async')"))
            await async_db_session.commit()
            assert (await async_db_session.execute(sa.text("SELECT count(*) FROM items"))).scalar() == 1

        @pytest.mark.asyncio
        async def test_4_async_rolled_back(async_db_session):
            assert (await async_db_session.execute(sa.text("SELECT count(*) FROM items"))).scalar() == 0

        def test_5_autocommit_would_escape(pg_conn):
            import psycopg
            with pytest.raises(psycopg.ProgrammingError, match="escape"):
                pg_conn.autocommit = True

        @pytest.mark.isolation("database")
        def test_6_marker_overrides_the_config(pg_database):
            assert pg_database.isolation == "database"
        """
    )
    run(pytester).assert_outcomes(passed=6)


def test_schema_isolation_migrates_a_throwaway_schema(pytester: pytest.Pytester) -> None:
    make_project(pytester, db='isolation = "schema"')
    pytester.makepyfile(
        test_schema_it="""
        def test_1(pg_conn, pg_database):
            assert pg_database.schema.schema in pg_conn.execute("SHOW search_path").fetchone()[0]
            pg_conn.execute("INSERT INTO items (name) VALUES ('x')")
            pg_conn.commit()

        def test_2(pg_conn):
            assert pg_conn.execute("SELECT count(*) FROM items").fetchone() == (0,)
            assert pg_conn.execute("SELECT count(*) FROM countries").fetchone() == (2,)
        """
    )
    run(pytester).assert_outcomes(passed=2)


def test_redis_isolation_per_test(pytester: pytest.Pytester) -> None:
    make_project(pytester, services='["valkey"]')
    pytester.makepyfile(
        test_redis_it="""
        import pytest

        @pytest.mark.parametrize("n", range(6))
        def test_keys_are_private(redis_client, redis_url, n):
            assert redis_client.dbsize() == 0
            assert not redis_url.endswith("/0")
            redis_client.set("shared-name", n)
        """
    )
    run(pytester, "-n", "2").assert_outcomes(passed=6)


COUNTING_MIGRATION = """
import os, pathlib

def migrate(conn):
    with open(os.environ["MIGRATION_LOG"], "a") as log:
        log.write(f"{os.getpid()}\\n")
    conn.execute("CREATE TABLE counted (id int)")
"""


@pytest.fixture
def fresh_cache(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = data_dir.parent / f"{data_dir.name}-cache"
    cache.mkdir(mode=0o755)
    monkeypatch.setenv("TESTLANE_CACHE_DIR", str(cache))
    yield cache
    import shutil

    shutil.rmtree(cache, ignore_errors=True)


def counted_project(pytester: pytest.Pytester, log: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    pytester.makefile(
        ".toml",
        pyproject=inner_pyproject(db="").replace('migrations = "migrations"', 'migrations = "migrate_module:migrate"'),
    )
    pytester.makepyfile(migrate_module=COUNTING_MIGRATION)
    pytester.makepyfile(
        test_counted_it="""
        import pytest

        @pytest.mark.parametrize("n", range(4))
        def test_uses_template(pg_conn, n):
            assert pg_conn.execute("SELECT count(*) FROM counted").fetchone() == (0,)
        """
    )
    monkeypatch.setenv("MIGRATION_LOG", str(log))
    monkeypatch.setenv("PYTHONPATH", str(pytester.path))
    return pytester.path


def test_migrations_run_once_across_workers_runs_and_warm_starts(
    pytester: pytest.Pytester, fresh_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "migrations.log"
    project = counted_project(pytester, log, monkeypatch)
    # Two concurrent runs, each with two xdist workers, on an empty cache: one build in all.
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-n", "2"]
    procs = [
        subprocess.Popen(argv, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
    assert len(log.read_text().splitlines()) == 1
    # A warm start starts from the snapshot: no migration runs.
    run(pytester).assert_outcomes(passed=4)
    assert len(log.read_text().splitlines()) == 1
    # A changed migration is a new template.
    (project / "migrate_module.py").write_text(COUNTING_MIGRATION.replace("(id int)", "(id bigint)"))
    run(pytester).assert_outcomes(passed=4)
    assert len(log.read_text().splitlines()) == 2
    snapshots = [p for p in (fresh_cache / "snapshots").iterdir() if p.is_dir()]
    assert len(snapshots) == 2


def test_broken_migration_fails_the_tests_with_a_clear_message(pytester: pytest.Pytester) -> None:
    make_project(pytester)
    (pytester.path / "migrations" / "002_broken.sql").write_text("SELECT 1;\nALTER TABLE nope ADD COLUMN x int;\n")
    pytester.makepyfile(test_x_it="def test_x(pg_conn):\n    pass\n")
    result = run(pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(['*migration failed in *002_broken.sql*relation "nope" does not exist*'])
    result.stdout.fnmatch_lines(["*line 2*", "*ALTER TABLE nope ADD COLUMN x int*"])
    assert "Traceback" not in result.stdout.str()


def test_database_fixtures_refuse_the_unit_lane(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    make_project(pytester)
    # A project with lanes (here: a *_it.py file); one without is all integration lane when the lane is on.
    pytester.makepyfile(test_x="def test_x(pg_conn):\n    pass\n", test_y_it="def test_y():\n    pass\n")
    result = run(pytester)
    result.assert_outcomes(errors=1, passed=1)
    result.stdout.fnmatch_lines(["*test_x.py::test_x is in the unit lane but uses testlane's service fixture*"])


def test_an_unknown_isolation_mode_is_one_message(pytester: pytest.Pytester) -> None:
    """The same error channel as MariaDB's (test_mariadb_plugin_it): the test errors with testlane's message
    alone, not a pytest.UsageError traceback."""
    make_project(pytester)
    pytester.makepyfile(
        test_x_it="import pytest\n\n@pytest.mark.isolation('rollback')\ndef test_x(pg_conn):\n    pass\n"
    )
    result = run(pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*test_x: isolation 'rollback' is not available for PostgreSQL; use one of database, transaction, schema*"]
    )
    assert "UsageError" not in result.stdout.str()
    assert "Traceback" not in result.stdout.str()


# Under xdist a worker starts the server on demand for the run's owner, which stopped it at the end although
# the summary said "kept" (a fresh user's report): the owner keeps a server its workers asked to keep.
@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["plain", "xdist"])
def test_failed_tests_keep_their_database_until_reaped(
    pytester: pytest.Pytester, inner_env: Path, xdist: list[str]
) -> None:
    make_project(pytester, db="keep_failed = true\nkeep_failed_ttl = 3600")
    pytester.makepyfile(
        test_fail_it="""
        def test_fails(pg_conn):
            pg_conn.execute("INSERT INTO items (name) VALUES ('evidence')")
            pg_conn.commit()
            assert False, "boom"

        def test_passes(pg_conn):
            pg_conn.execute("INSERT INTO items (name) VALUES ('gone')")
            pg_conn.commit()
        """
    )
    result = run(pytester, *xdist)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*database kept for inspection (database mode): postgresql://*"])
    result.stdout.fnmatch_lines(["*testlane: databases kept for inspection*"])
    # The printed command works as is: the private socket, no password (none is printed).
    command = next(line.strip() for line in result.outlines if line.strip().startswith("psql 'host="))
    url = shlex.split(command)[1]
    assert "password" not in result.stdout.str()
    import psycopg

    with psycopg.connect(url) as conn:  # the server outlived the run, with the evidence
        assert conn.execute("SELECT name FROM items").fetchall() == [("evidence",)]
    state = inner_env / "state"
    records = [json.loads(p.read_text()) for p in state.glob("*.json")]
    assert [r["extra"].get("kept_until") is not None for r in records] == [True]
    env = clean_env({"TESTLANE_DATA_DIR": str(inner_env)})
    assert run_cli(["reap"], cwd=pytester.path, env=env).returncode == 0
    with psycopg.connect(url) as conn:  # not expired yet: a plain reap leaves it
        conn.execute("SELECT 1")
    reaped = run_cli(["reap", "--kept"], cwd=pytester.path, env=env)
    assert reaped.returncode == 0, reaped.stderr
    assert server_processes(inner_env) == []
    assert leftovers(inner_env) == []


def test_transaction_isolation_says_no_database_was_kept(pytester: pytest.Pytester, inner_env: Path) -> None:
    """A fresh user's `--isolation transaction --keep-failed-db` printed "database kept for inspection" for a
    failed test, but the rollback had undone its writes and nothing was kept. Now nothing claims a keep: the
    summary says once why there is none, and how to get one."""
    make_project(pytester)
    pytester.makepyfile(
        test_fail_it="""
        def test_fails(pg_conn):
            pg_conn.execute("INSERT INTO items (name) VALUES ('evidence')")
            assert False, "boom"

        def test_fails_too(pg_conn):
            assert False
        """
    )
    result = run(pytester, "--isolation", "transaction", "--keep-failed-db")
    result.assert_outcomes(failed=2)
    out = result.stdout.str()
    assert "kept for inspection" not in out and "psql" not in out, out
    result.stdout.fnmatch_lines(
        [
            "*testlane: no database kept (transaction isolation)*",
            "db.keep_failed is on, but transaction isolation rolls a failed test's writes back, so no database was "
            "kept for 2 failed test(s). To keep one, run it in database isolation: `--isolation database "
            '--keep-failed-db`, or @pytest.mark.isolation("database") on that test.',
            "    test_fail_it.py::test_fails",
            "    test_fail_it.py::test_fails_too",
        ]
    )
    assert out.count("no database kept") == 1
    assert not [p for p in (inner_env / "state").glob("*.json") if "kept_until" in p.read_text()]
    assert server_processes(inner_env) == []


def test_kept_server_expires(pytester: pytest.Pytester, inner_env: Path) -> None:
    make_project(pytester, db="keep_failed = true\nkeep_failed_ttl = 0")  # expired at once
    pytester.makepyfile(test_fail_it="def test_fails(pg_conn):\n    assert False\n")
    run(pytester).assert_outcomes(failed=1)
    assert any(inner_env.glob("state/*.json"))
    env = clean_env({"TESTLANE_DATA_DIR": str(inner_env)})
    assert run_cli(["reap"], cwd=pytester.path, env=env).returncode == 0
    assert server_processes(inner_env) == []
    assert leftovers(inner_env) == []


def test_nothing_is_left_after_a_session(pytester: pytest.Pytester, inner_env: Path) -> None:
    make_project(pytester, services='["postgres", "valkey"]')
    pytester.makepyfile(test_x_it="def test_x(pg_conn, redis_client):\n    redis_client.set('a', 1)\n")
    run(pytester).assert_outcomes(passed=1)
    assert server_processes(inner_env) == []
    assert leftovers(inner_env) == []
    assert os.environ["TESTLANE_IT"] == "1"
