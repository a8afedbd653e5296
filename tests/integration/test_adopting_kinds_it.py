"""docs/adopting.md, proven per kind of project: each fixture project passes under `testlane run` with only
the configuration block the guide shows for its kind (read out of the guide), leaves nothing behind, and —
unconfigured — gives the same results with and without testlane installed.

The kinds: a libpq-configured Postgres task queue (PG* variables, its own `postgres`/`pg_conn` fixtures), a
Redis job queue (its own `redis_url` from TEST_REDIS_URL, also under `-n 2`), a Django app (pytest-django,
DATABASE_URL and a second alias, `--reuse-db`), and the FastAPI + SQLAlchemy + Alembic backend
(tests/fixtures/existing_app; its run under `testlane run` is in test_adoption_it.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.adoption_helpers import (
    FOREIGN_PLUGINS_OFF,
    SYSTEM_REDIS,
    WITHOUT_TESTLANE,
    adopt,
    copy_fixture,
    empty_redis_db,
    listening,
    outcomes,
    run_ids,
    run_pytest,
    system_databases,
    system_pg_env,
    throwaway_database,
    without_outer_database_env,
)
from tests.helpers import clean_env, leftovers, needs_local_extension, run_cli, server_processes

pytestmark = pytest.mark.timeout(300)

needs_system_pg = pytest.mark.skipif(not listening("127.0.0.1", 5432), reason="no PostgreSQL on 127.0.0.1:5432")
needs_system_redis = pytest.mark.skipif(not listening(*SYSTEM_REDIS), reason="no Redis on 127.0.0.1:6379")


def base_env(**extra: str) -> dict[str, str]:
    """This process's environment without the outer run's or shell's database variables, plus ``extra``."""
    return {**without_outer_database_env(clean_env()), **extra}


def run_adopted(project: Path, data_dir: Path, *pytest_args: str) -> subprocess.CompletedProcess[str]:
    """`testlane run -- ARGS` in ``project``, as a user would run it; asserts it passed and left nothing."""
    result = run_cli(
        ["run", "--", "-q", "-p", "no:cacheprovider", *FOREIGN_PLUGINS_OFF, *pytest_args],
        cwd=project,
        env=base_env(TESTLANE_DATA_DIR=str(data_dir)),
        timeout=180,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Traceback" not in output
    assert leftovers(data_dir) == []
    assert server_processes(data_dir) == []
    assert run_ids(output), output
    if listening("127.0.0.1", 5432):  # the run's servers are its own: nothing of it on this machine's PostgreSQL
        for run_id in run_ids(output):
            assert system_databases(f"%tl\\_{run_id}\\_%") == []
    return result


def started(result: subprocess.CompletedProcess[str]) -> str:
    """The line `testlane run` prints about the servers it started."""
    return next(line for line in result.stderr.splitlines() if line.startswith("testlane: run "))


def assert_same_with_and_without_testlane(project: Path, args: list[str], env: dict[str, str], passed: int) -> None:
    with_it = run_pytest(project, args, env)
    without = run_pytest(project, [*args, *WITHOUT_TESTLANE], env)
    assert outcomes(with_it) == outcomes(without), with_it.stdout + with_it.stderr + without.stdout
    assert outcomes(with_it)[0] == 0 and f"{passed} passed" in with_it.stdout, with_it.stdout + with_it.stderr
    assert "testlane" not in with_it.stdout + with_it.stderr


# --- a libpq-configured project: PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE ----------------------------


def test_libpq_project_passes_with_the_guides_configuration(tmp_path: Path, data_dir: Path) -> None:
    project = adopt(copy_fixture("pg_taskqueue", tmp_path), "libpq")
    result = run_adopted(project, data_dir)
    assert "4 passed" in result.stdout
    assert "mapped for the application: PGDATABASE, PGHOST, PGPASSWORD, PGPORT, PGUSER" in result.stderr
    assert "postgres" in started(result) and "valkey" not in started(result)  # what the mapping refers to


@needs_system_pg
def test_libpq_project_unconfigured_is_the_same_with_and_without_testlane(tmp_path: Path) -> None:
    project = copy_fixture("pg_taskqueue", tmp_path)
    with throwaway_database() as database:
        assert_same_with_and_without_testlane(project, ["-q"], base_env(**system_pg_env(database)), passed=4)


# --- a Redis project whose conftest defines its own redis_url ------------------------------------------------


def test_redis_project_passes_with_the_guides_configuration_also_under_xdist(tmp_path: Path, data_dir: Path) -> None:
    project = adopt(copy_fixture("redis_jobs", tmp_path), "redis")
    result = run_adopted(project, data_dir)
    assert "6 passed" in result.stdout
    assert "valkey" in started(result) and "postgres" not in started(result)  # what the mapping refers to
    assert "6 passed" in run_adopted(project, data_dir, "-n", "2").stdout


@needs_system_redis
def test_redis_project_unconfigured_is_the_same_with_and_without_testlane(tmp_path: Path) -> None:
    import redis

    project = copy_fixture("redis_jobs", tmp_path)
    index = empty_redis_db()
    env = base_env(TEST_REDIS_URL=f"redis://{SYSTEM_REDIS[0]}:{SYSTEM_REDIS[1]}/{index}")
    assert_same_with_and_without_testlane(project, ["-q"], env, passed=6)
    client = redis.Redis(*SYSTEM_REDIS, db=index)
    try:
        assert list(client.scan_iter(match="test-*")) == []  # the project removed its own keys
    finally:
        client.close()


# --- a Django app: pytest-django, DATABASE_URL and a second alias ---------------------------------------------


def test_django_project_passes_with_the_guides_configuration_and_reuse_db(tmp_path: Path, data_dir: Path) -> None:
    project = adopt(copy_fixture("django_app", tmp_path), "django")
    for args in ((), ("--reuse-db",)):  # a fresh server each run: --reuse-db finds nothing, and works
        result = run_adopted(project, data_dir, *args)
        assert "5 passed" in result.stdout
        assert "mapped for the application: ANALYTICS_DATABASE_URL, DATABASE_URL" in result.stderr


@needs_system_pg
def test_django_project_unconfigured_is_the_same_with_and_without_testlane(tmp_path: Path) -> None:
    project = copy_fixture("django_app", tmp_path)
    with throwaway_database() as database:
        base = f"postgresql://postgres@127.0.0.1:5432/{database}"
        env = base_env(DATABASE_URL=base, ANALYTICS_DATABASE_URL=f"{base}_analytics")
        assert_same_with_and_without_testlane(project, ["-q"], env, passed=5)
        assert system_databases(f"%{database}%") == [database]  # pytest-django dropped its test databases


# --- the FastAPI + SQLAlchemy + Alembic backend ------------------------------------------------------------


@needs_system_pg
@needs_local_extension("uuid-ossp")
def test_fastapi_project_unconfigured_is_the_same_with_and_without_testlane(tmp_path: Path) -> None:
    project = copy_fixture("existing_app", tmp_path)
    with throwaway_database() as database:
        env = base_env(
            POSTGRES_SERVER="127.0.0.1", POSTGRES_PORT="5432", POSTGRES_USER="postgres", POSTGRES_DB=database
        )
        for command in (["-m", "alembic", "upgrade", "head"], ["-m", "app.initial_data"]):  # the project's own set-up
            prepared = subprocess.run(
                [sys.executable, *command], cwd=project, env=env, capture_output=True, text=True, timeout=120
            )
            assert prepared.returncode == 0, prepared.stdout + prepared.stderr
        assert_same_with_and_without_testlane(project, ["-q"], env, passed=4)
