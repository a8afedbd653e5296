"""Adopting testlane in an existing project (tests/fixtures/existing_app): its own variable names, its own
set-up commands, a migration that needs uuid-ossp — and nothing changed but the [tool.testlane] lines
docs/adopting.md shows for this kind (read out of the guide)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.adoption_helpers import adopt, copy_fixture
from tests.helpers import clean_env, leftovers, needs_local_extension, run_cli, server_processes

pytestmark = pytest.mark.timeout(300)

NEEDS_UUID_OSSP = needs_local_extension("uuid-ossp")


@pytest.fixture
def app_project(tmp_path: Path) -> Path:
    return adopt(copy_fixture("existing_app", tmp_path), "fastapi")  # the guide's configuration block


@pytest.fixture
def fresh_cache(data_dir: Path) -> Path:
    cache = data_dir.parent / f"{data_dir.name}-cache"
    cache.mkdir(mode=0o755)
    yield cache
    shutil.rmtree(cache, ignore_errors=True)


def env_for(data_dir: Path, cache: Path, **extra: str) -> dict[str, str]:
    return clean_env({"TESTLANE_DATA_DIR": str(data_dir), "TESTLANE_CACHE_DIR": str(cache), **extra})


@NEEDS_UUID_OSSP
def test_existing_app_passes_on_system_binaries_and_by_automatic_fallback(
    app_project: Path, data_dir: Path, fresh_cache: Path
) -> None:
    env = env_for(data_dir, fresh_cache)
    auto, local = (
        run_cli([*args, "--", "-q", "-p", "no:cacheprovider"], cwd=app_project, env=env)
        for args in (["-v", "run"], ["run", "--postgres-backend", "local"])
    )
    for result in (auto, local):
        assert result.returncode == 0, result.stdout + result.stderr
        assert "4 passed" in result.stdout
        assert "initial data created" not in result.stdout + result.stderr  # set-up output only on failure
    assert "the embedded binaries lack uuid-ossp, declared in `extensions`; local PostgreSQL" in auto.stderr
    assert "mapped for the application: POSTGRES_DB, POSTGRES_PASSWORD, POSTGRES_PORT, POSTGRES_SERVER" in auto.stderr
    assert leftovers(data_dir) == []
    assert server_processes(data_dir) == []


def test_embedded_binaries_say_which_extension_is_missing(app_project: Path, data_dir: Path, fresh_cache: Path) -> None:
    result = run_cli(["run", "--postgres-backend", "embedded"], cwd=app_project, env=env_for(data_dir, fresh_cache))
    assert result.returncode == 3
    assert "does not have the extension(s) uuid-ossp declared in `extensions`" in result.stderr
    assert "Traceback" not in result.stderr
    assert leftovers(data_dir) == []


def test_without_declaring_it_the_migration_failure_names_the_extension(
    app_project: Path, data_dir: Path, fresh_cache: Path
) -> None:
    pyproject = app_project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('extensions = ["uuid-ossp"]', ""))
    result = run_cli(["run", "--postgres-backend", "embedded"], cwd=app_project, env=env_for(data_dir, fresh_cache))
    assert result.returncode == 3
    assert "set-up command `alembic upgrade head` failed with exit code" in result.stderr
    assert "'uuid-ossp' extension" in result.stderr
    assert 'extensions = ["uuid-ossp"]' in result.stderr  # the fix


@NEEDS_UUID_OSSP
def test_plain_pytest_applies_the_mapping_before_the_conftest_imports_settings(
    app_project: Path, data_dir: Path, fresh_cache: Path
) -> None:
    env = env_for(data_dir, fresh_cache)
    ran = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--it"],
        cwd=app_project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "4 passed" in ran.stdout
    off = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=app_project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # past pytest's capture of the start-up (pytest < 9.2 drops what it holds), before the conftest fails
    assert "is not applied: the integration lane is off" in off.stderr
    assert leftovers(data_dir) == []


@NEEDS_UUID_OSSP
def test_a_changed_migration_rebuilds_the_template_and_a_failing_command_is_shown(
    app_project: Path, data_dir: Path, fresh_cache: Path
) -> None:
    env = env_for(data_dir, fresh_cache)
    assert run_cli(["run", "--", "-q"], cwd=app_project, env=env).returncode == 0
    migration = app_project / "app" / "alembic" / "versions" / "0001_initial.py"
    migration.write_text(
        migration.read_text().replace(
            'sa.Column("title", sa.String(255), nullable=False),',
            'sa.Column("title", sa.String(255), nullable=False),\n        sa.Column("note", sa.Text),',
        )
    )
    (app_project / "tests" / "test_note.py").write_text(
        "from sqlalchemy import text\n\n\ndef test_note_column(db_session):\n"
        '    assert db_session.execute(text("SELECT count(note) FROM item")).scalar() == 0\n'
    )
    rebuilt = run_cli(["run", "--", "-q"], cwd=app_project, env=env)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert "5 passed" in rebuilt.stdout
    assert len([p for p in (fresh_cache / "snapshots").iterdir() if p.is_dir()]) == 2

    pyproject = app_project / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace(
            'setup = ["alembic upgrade head", "python -m app.initial_data"]',
            'setup = ["alembic upgrade head", "python -c \'import sys; print(42, \\"seeding broke\\"); sys.exit(7)\'"]',
        )
    )
    failed = run_cli(["run", "--", "-q"], cwd=app_project, env=env)
    assert failed.returncode == 3
    assert "failed with exit code 7" in failed.stderr
    assert "42 seeding broke" in failed.stderr
    assert leftovers(data_dir) == []
