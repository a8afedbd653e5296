"""Agent-grade feedback on real services: server log excerpts, the digest under `testlane run`, crashes, init."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.helpers import (
    ROOTED_PYPROJECT,
    TESTLANE,
    clean_env,
    inner_pyproject,
    leftovers,
    run_cli,
    server_processes,
)

pytestmark = pytest.mark.timeout(300)

PYPROJECT = inner_pyproject(name="feedback")

# The first test provokes a Postgres error and passes; the second fails on another one. Each failure
# must show the server's lines written during that test only.
SUITE = """
import psycopg
import pytest


def test_1_handles_a_missing_table(pg_conn):
    with pytest.raises(psycopg.errors.UndefinedTable):
        pg_conn.execute("SELECT * FROM handled_table")
    pg_conn.rollback()


def test_2_reads_a_table_that_is_not_there(pg_conn):
    rows = pg_conn.execute("SELECT id FROM orders_archive").fetchall()
    assert rows == []
"""


def make_project(root: Path) -> Path:
    (root / "pyproject.toml").write_text(PYPROJECT)
    (root / "test_orders_it.py").write_text(SUITE)
    return root


def test_digest_under_an_agent_shows_the_postgres_error_written_during_the_failing_test(
    project: Path, data_dir: Path
) -> None:
    make_project(project)
    env = clean_env({"TESTLANE_DATA_DIR": str(data_dir), "CLAUDECODE": "1"})
    result = run_cli(["run", "--", "-p", "no:cacheprovider"], cwd=project, env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    text = result.stdout
    assert text.startswith("[1] FAILED — UndefinedTable:")
    assert 'relation "orders_archive" does not exist' in text
    assert 'at test_orders_it.py:13: rows = pg_conn.execute("SELECT id FROM orders_archive").fetchall()' in text
    log_part = text.split("postgres log during the test:", 1)[1].split("rerun:", 1)[0]
    assert 'ERROR:  relation "orders_archive" does not exist' in log_part
    assert "STATEMENT:  SELECT id FROM orders_archive" in log_part
    assert "handled_table" not in text  # written during the other (passing) test
    # the command as it was run (here the venv's testlane, not on PATH), up to `--`, then the test
    assert (
        f"rerun: {TESTLANE} run -- -p no:cacheprovider test_orders_it.py::test_2_reads_a_table_that_is_not_there"
        in text
    )
    assert text.rstrip().splitlines()[-1].startswith("testlane: FAILED — 1 failed, 1 passed in ")
    assert leftovers(data_dir) == []


def test_without_an_agent_pytests_output_carries_the_server_log_section(project: Path, data_dir: Path) -> None:
    make_project(project)
    result = run_cli(
        ["run", "--", "-p", "no:cacheprovider"], cwd=project, env=clean_env({"TESTLANE_DATA_DIR": str(data_dir)})
    )
    assert result.returncode == 1
    assert "1 failed, 1 passed" in result.stdout and "[1] FAILED" not in result.stdout
    assert "postgres server log call" in result.stdout
    assert 'relation "orders_archive" does not exist' in result.stdout


@pytest.mark.parametrize(
    ("how", "code", "said"),
    [
        ("os.kill(os.getpid(), signal.SIGKILL)", 137, "pytest was killed by SIGKILL before it could report"),
        ("os._exit(1)", 1, "pytest exited (code 1) before it could report"),
    ],
)
def test_a_pytest_that_dies_mid_run_is_reported_as_a_failure(
    project: Path, data_dir: Path, how: str, code: int, said: str
) -> None:
    (project / "pyproject.toml").write_text(PYPROJECT)
    (project / "test_dies_it.py").write_text(f"import os, signal\n\ndef test_dies(postgres):\n    {how}\n")
    env = clean_env({"TESTLANE_DATA_DIR": str(data_dir), "CI": "true"})
    result = run_cli(["run", "--", "-p", "no:cacheprovider"], cwd=project, env=env)
    assert result.returncode == code
    assert said in result.stdout
    assert result.stdout.rstrip().splitlines()[-1].startswith("testlane: FAILED — the run crashed")
    assert "PASSED" not in result.stdout
    assert server_processes(data_dir) == []


def test_init_twice_then_the_generated_tests_and_the_gate_pass(tmp_path: Path, data_dir: Path) -> None:
    root = tmp_path / "fresh"
    root.mkdir()
    env = clean_env({"TESTLANE_DATA_DIR": str(data_dir)})
    first = run_cli(["init"], cwd=root, env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "wrote  tests/integration/test_example_it.py" in first.stdout
    files = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}
    second = run_cli(["init"], cwd=root, env=env)
    assert second.returncode == 0
    assert "wrote" not in second.stdout and "0 written" in second.stdout
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()} == files

    run = run_cli(["run", "--", "-p", "no:cacheprovider", "-q"], cwd=root, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "5 passed" in run.stdout
    gate = run_cli(["gate"], cwd=root, env=env, timeout=300)
    assert gate.returncode == 0, gate.stdout + gate.stderr
    assert gate.stdout.rstrip().splitlines()[-1] == "gate: PASSED — lint, unit, integration passed; types skipped"
    assert leftovers(data_dir) == []


def test_the_gate_passes_a_suite_without_lanes_that_testlane_run_passes(tmp_path: Path, data_dir: Path) -> None:
    """A project adopted with only `[tool.testlane.env]` (no lanes: its tests talk to the database from
    tests/test_*.py) passes `testlane run`, and so the gate: its unit check has nothing to test (it ran the
    database test without its variable and failed the gate), the integration check runs every test."""
    root = tmp_path / "adopted"
    (root / "tests").mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        '[project]\nname = "adopted"\nversion = "0"\n[tool.testlane.env]\nDATABASE_URL = "{postgres.url}"\n'
    )
    (root / "tests" / "test_db.py").write_text(
        "import os\n\nimport psycopg\n\n\ndef test_db():\n"
        '    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:\n'
        '        assert conn.execute("SELECT 1").fetchone() == (1,)\n\n\n'
        "def test_pure():\n    assert 1 + 1 == 2\n"
    )
    env = clean_env({"TESTLANE_DATA_DIR": str(data_dir)})
    gate = run_cli(["gate"], cwd=root, env=env, timeout=300)
    lines = gate.stdout.rstrip().splitlines()
    assert gate.returncode == 0, gate.stdout + gate.stderr
    assert "gate: unit: nothing to test (--lane unit: the suite declares no lanes" in gate.stdout, lines
    assert lines[-1] == "gate: PASSED — lint, integration passed; types skipped; unit had nothing to test", lines
    assert leftovers(data_dir) == []


@pytest.mark.parametrize("spelling", ["two-words", "equals"])
def test_testlane_run_with_a_report_path_outside_the_project_keeps_the_rootdir(
    tmp_path: Path, data_dir: Path, spelling: str
) -> None:
    # As tests/plugin/test_digest.py checks for plain pytest: an existing report path outside the project, given
    # as two words, is not a path to test when pytest chooses its rootdir (the project's, its testpaths read).
    project = tmp_path / "project"
    for name, test in (("tests/test_one.py", "test_one"), ("other/test_two.py", "test_two")):
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(f"def {test}():\n    pass\n")
    (project / "pyproject.toml").write_text(ROOTED_PYPROJECT)
    report = tmp_path / "elsewhere" / "r.json"
    report.parent.mkdir()
    report.write_text("{}")  # an earlier run's
    option = [f"--report-json={report}"] if spelling == "equals" else ["--report-json", str(report)]
    env = clean_env({"TESTLANE_DATA_DIR": str(data_dir), "TESTLANE_REPORTS_FORMAT": "terminal"})
    result = run_cli(["run", "--", "-p", "no:cacheprovider", *option], cwd=project, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"rootdir: {project}" in result.stdout.splitlines(), result.stdout
    assert "1 passed" in result.stdout
    assert [t["nodeid"] for t in json.loads(report.read_text())["tests"]] == ["tests/test_one.py::test_one"]
