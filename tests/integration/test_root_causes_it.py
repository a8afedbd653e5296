"""Issue 16: a failure of testlane's own set-up (a broken migration, a failing set-up command, a service
that cannot start) is ONE root cause in the digest, at the file and line to fix, whatever the number of
tests that needed it and the number of xdist workers that hit it. A service that cannot start also stops
the run at the first test that needs it (exit 3, as `testlane run`). The suites are bench/digest.py's."""

from __future__ import annotations

import json
import shlex
import uuid
from pathlib import Path

import pytest

from tests.helpers import run_inner
from tests.plugin.test_digest import bench  # bench/digest.py, loaded once

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("inner_env")]

REPO = Path(__file__).resolve().parents[2]
TESTS = "tests/test_accounts_it.py tests/test_orders_it.py tests/test_reports_it.py"


@pytest.fixture
def inner_env(inner_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tests/conftest.py's, without TESTLANE_IT: these runs ask for the integration lane themselves (``--it``)."""
    monkeypatch.delenv("TESTLANE_IT")
    return inner_env


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return run_inner(pytester, "--it", "--digest", *args, timeout=240)


def assert_one_cause(result: pytest.RunResult, head: str) -> str:
    """The digest names one root cause for the 9 integration tests, and its rerun command."""
    text = result.stdout.str()
    assert result.ret == 1, text
    assert text.startswith(f"[1] ERROR — {head}"), text
    assert "\n[2]" not in text
    assert "9 tests errored because of it: tests/test_" in text
    # the run's own -p no:cacheprovider is repeated; -n 2 (which tests where) is not
    assert f"    rerun: pytest --digest -p no:cacheprovider --it {TESTS}\n" in text
    assert text.rstrip().splitlines()[-1].startswith("testlane: FAILED — 9 errors, 1 passed in ")
    assert text.rstrip().endswith("; 1 root cause (exit 1)")
    assert "Traceback" not in text
    return text


def assert_rerun_reruns_them(pytester: pytest.Pytester, text: str) -> None:
    """The printed command, run as printed, runs the 9 tests again (and they error again)."""
    command = next(line for line in text.splitlines() if line.startswith("    rerun: ")).removeprefix("    rerun: ")
    argv = shlex.split(command)
    assert argv[0] == "pytest"
    report = pytester.path / "rerun.json"
    again = pytester.runpytest_subprocess("-p", "no:cacheprovider", *argv[1:], "--report-json", str(report))
    assert again.ret == 1
    errored = {t["nodeid"] for t in json.loads(report.read_text())["tests"] if t["outcome"] == "error"}
    assert len(errored) == 9 and all(n.endswith("]") and "_it.py::" in n for n in errored)


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_a_broken_sql_migration_is_one_cause_at_its_file_and_line(
    pytester: pytest.Pytester, workers: list[str]
) -> None:
    bench.write_suite("migration", pytester.path)
    text = assert_one_cause(
        run(pytester, *workers),
        'MigrationError: migration failed in migrations/002_orders.sql: relation "acounts" does not exist\n',
    )
    # the line the server complained about (not the statement's first, a comment), and the fix
    assert "    at migrations/002_orders.sql:4: account_id int REFERENCES acounts (id),\n" in text
    assert "hint: fix the migration; the template is rebuilt when its files change." in text
    if not workers:
        assert_rerun_reruns_them(pytester, text)


def test_a_broken_alembic_revision_is_one_cause_at_its_line(pytester: pytest.Pytester) -> None:
    bench.write_suite("alembic", pytester.path)
    text = assert_one_cause(run(pytester), "MigrationError: migration failed in alembic/versions/0001_orders.py:9: ")
    assert 'relation "acounts" does not exist' in text
    assert (
        '    at alembic/versions/0001_orders.py:9: op.execute("CREATE TABLE orders (id serial PRIMARY KEY, '
        'account_id int REFERENCES acounts (id))")\n' in text
    )
    assert "hint: fix the migration" in text


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_a_failing_setup_command_is_one_cause(pytester: pytest.Pytester, workers: list[str]) -> None:
    bench.write_suite("setup", pytester.path)
    text = assert_one_cause(
        run(pytester, *workers), "MigrationError: set-up command `python load_fixtures.py` failed with exit code 1"
    )
    assert "fixtures/orders.json: no such file" in text
    assert "hint: fix the command, or run it by hand with the same environment" in text
    if not workers:
        assert_rerun_reruns_them(pytester, text)


def assert_stopped_at_the_service(result: pytest.RunResult, head: str, workers: list[str]) -> str:
    """A service that cannot start (once21): one root cause, said once, at the first test that needed it; the
    run stops there and exits 3, as `testlane run` does for it (a test another xdist worker was running
    meanwhile points at it: the same cause)."""
    text = result.stdout.str()
    assert result.ret == 3, text
    assert text.startswith(f"[1] ERROR — {head}"), text
    assert "\n[2]" not in text and text.count(head.strip()) == 1, text
    # under xdist the controller learns of the stop as xdist's interruption: said as a stop, never a Ctrl-C's
    assert "interrupted:" not in text, text
    if not workers:
        assert "1 test errored because of it: tests/test_" in text, text
        assert "stopped early (testlane: a service could not be started (above): the run stops here" in text, text
    summary = text.rstrip().splitlines()[-1]
    assert summary.startswith("testlane: FAILED — a service could not be started — "), text
    assert summary.endswith("; 1 root cause (exit 3)"), text
    assert "Traceback" not in text
    return text


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_a_service_on_a_taken_port_stops_the_run_once(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, taken_port: int, workers: list[str]
) -> None:
    bench.write_suite("migration", pytester.path)
    monkeypatch.setenv("TESTLANE_POSTGRES_SERVER_PORT", str(taken_port))
    text = assert_stopped_at_the_service(
        run(pytester, *workers), f"PortUnavailableError: port {taken_port} on 127.0.0.1 is already in use.\n", workers
    )
    # the key to change, where the project sets it
    assert (
        "hint: stop what listens there, or set postgres.port to 0 (port = 0 in [tool.testlane.postgres], or "
        "TESTLANE_POSTGRES_SERVER_PORT=0) so testlane picks a free one." in text
    ), text


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_postgres_binaries_that_are_not_there_stop_the_run_once(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, workers: list[str]
) -> None:
    bench.write_suite("migration", pytester.path)
    monkeypatch.setenv("TESTLANE_POSTGRES_BACKEND", "local")
    monkeypatch.setenv("TESTLANE_POSTGRES_BIN_DIR", str(pytester.path / "no-such-bin"))
    text = assert_stopped_at_the_service(
        run(pytester, *workers), "BinaryNotFoundError: no local PostgreSQL installation found. Looked in:\n", workers
    )
    assert "no-such-bin (postgres.bin_dir)" in text
    assert "hint: install PostgreSQL" in text


@pytest.mark.parametrize(
    ("suite", "where", "head"),
    [
        (
            "migration",
            "    at migrations/002_orders.sql:4: account_id int REFERENCES acounts (id),",
            'MigrationError: migration failed in migrations/002_orders.sql: relation "acounts" does not exist',
        ),
        ("setup", "", "MigrationError: set-up command `python load_fixtures.py` failed with exit code 1"),
    ],
    ids=["migration", "setup-command"],
)
def test_testlane_run_that_cannot_build_the_template_says_the_cause_like_the_digest_and_exits_3(
    pytester: pytest.Pytester, inner_env: Path, suite: str, where: str, head: str
) -> None:
    # `testlane run` builds the template before pytest starts: no digest, so it says the root cause as the
    # digest's group would (the file:line to fix, testlane's message and hint), then a verdict with exit 3.
    import subprocess

    from tests.helpers import TESTLANE, clean_env

    bench.write_suite(suite, pytester.path)
    env = clean_env({"CI": "1", "TESTLANE_DATA_DIR": str(inner_env)})
    done = subprocess.run(
        [TESTLANE, "run", "--", "-p", "no:cacheprovider"],
        cwd=pytester.path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    text = done.stdout + done.stderr
    assert done.returncode == 3, text
    lines = text.splitlines()
    assert any(line.startswith(f"testlane: error: {head}") for line in lines), text
    if where:
        assert where in lines, text
    assert any(line.strip().startswith("hint: fix the") for line in lines), text
    assert lines[-1] == "testlane: FAILED — the migrated template could not be built; no tests ran (exit 3)", text
    assert "Traceback" not in text


def test_testlane_run_whose_service_cannot_start_says_the_cause_and_exits_3(
    pytester: pytest.Pytester, inner_env: Path, taken_port: int
) -> None:
    import subprocess

    from tests.helpers import TESTLANE, clean_env

    bench.write_suite("migration", pytester.path)
    env = clean_env({"TESTLANE_DATA_DIR": str(inner_env), "TESTLANE_POSTGRES_SERVER_PORT": str(taken_port)})
    done = subprocess.run(
        [TESTLANE, "run", "--", "-p", "no:cacheprovider"], cwd=pytester.path, env=env, capture_output=True, text=True
    )
    text = done.stdout + done.stderr
    assert done.returncode == 3, text
    lines = text.splitlines()
    assert f"testlane: error: PortUnavailableError: port {taken_port} on 127.0.0.1 is already in use." in lines, text
    assert any(line.strip().startswith("hint: stop what listens there") for line in lines), text
    assert lines[-1] == "testlane: FAILED — a service could not be started; no tests ran (exit 3)", text


APP_SETTINGS = """\
import os

SECRET_KEY = os.environ["APP_SECRET_KEY"]  # the app's settings, read when imported
"""

ENV_READING_SETTINGS = """\
from alembic import context

import app_settings  # noqa: F401 (mealie's env.py imports the app's settings the same way)

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
"""


def test_alembic_env_lacking_a_variable_says_to_map_it_not_to_fix_a_migration(pytester: pytest.Pytester) -> None:
    """mealie: env.py imports the app's settings, which need a variable the build did not have; the message
    said "fix the migration". It names the variable and [tool.testlane.env], and that line is the fix."""
    bench.write_suite("alembic", pytester.path)
    (pytester.path / "alembic.ini").write_text(bench.ALEMBIC_INI + "prepend_sys_path = %(here)s\n")
    (pytester.path / "app_settings.py").write_text(APP_SETTINGS)
    (pytester.path / "alembic" / "env.py").write_text(ENV_READING_SETTINGS)
    revision = pytester.path / "alembic" / "versions" / "0001_orders.py"
    fixed = revision.read_text().replace("REFERENCES acounts", "REFERENCES accounts")
    # Its own history: the snapshot's key leaves [tool.testlane.env] out, so the one an earlier run of this test
    # built (with the variable mapped) would be found, and nothing built, by the first run below.
    revision.write_text(f"{fixed}\n# {uuid.uuid4().hex}\n")
    text = assert_one_cause(run(pytester), "MigrationError: Alembic failed loading its environment")
    assert "before any migration ran, at app_settings.py:3: the environment variable APP_SECRET_KEY is not set" in text
    assert "hint: give the build the variable: a line in [tool.testlane.env]" in text
    assert "fix the migration" not in text
    pyproject = pytester.path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + '\n[tool.testlane.env]\nAPP_SECRET_KEY = "test"\n')
    fixed = run(pytester)
    assert fixed.ret == 0, fixed.stdout.str()
