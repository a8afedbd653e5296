"""Issue 16, seen 7: the server log shown with a failure is the test's own — not the server's boot, not the
template's build, not testlane's housekeeping — and leads with the error and its statement."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import clean_env, inner_pyproject, leftovers

pytestmark = pytest.mark.timeout(300)

PYPROJECT = inner_pyproject(name="excerpt", db="")

# The first test fails while the server (started on demand, in its set-up) is brand new; the last one
# reads the whole server log: transaction isolation's own statements never made Postgres warn.
SUITE = """
def test_1_reads_a_table_that_is_not_there(pg_conn):
    pg_conn.execute("SELECT id FROM orders_archive")


def test_2_commits(pg_conn):
    pg_conn.execute("INSERT INTO orders (total) VALUES (1)")
    pg_conn.commit()


def test_3_the_server_log_has_no_warning_of_ours(postgres):
    text = open(postgres.log_file).read()
    assert "WARNING" not in text, text
"""


@pytest.mark.parametrize("isolation", ["transaction", "database"])
def test_the_first_failure_shows_its_error_not_the_servers_boot(project: Path, data_dir: Path, isolation: str) -> None:
    (project / "pyproject.toml").write_text(PYPROJECT)
    (project / "migrations").mkdir()
    (project / "migrations" / "001_orders.sql").write_text("CREATE TABLE orders (id serial PRIMARY KEY, total int);\n")
    (project / "test_orders_it.py").write_text(SUITE)
    env = clean_env({"TESTLANE_DATA_DIR": str(data_dir)})
    args = ["-p", "no:cacheprovider", "-p", "no:django", "--it", "--digest", "--isolation", isolation]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", *args], cwd=project, env=env, capture_output=True, text=True, timeout=240
    )
    text = result.stdout
    assert result.returncode == 1, text + result.stderr
    assert text.startswith("[1] FAILED — UndefinedTable:")
    assert "rerun: " in text and "test_orders_it.py::test_1_reads_a_table_that_is_not_there\n" in text
    assert "\n[2]" not in text  # test_3 passed: no warning in the whole log
    log_part = text.split("postgres log during the test:", 1)[1].split("rerun:", 1)[0]
    lines = [line.strip() for line in log_part.strip().splitlines()]
    assert len(lines) == 2, log_part
    assert 'ERROR:  relation "orders_archive" does not exist' in lines[0]
    assert "STATEMENT:  SELECT id FROM orders_archive" in lines[1]
    for boot in ("starting PostgreSQL", "listening on", "ready to accept connections", "orders (total)"):
        assert boot not in text
    assert text.rstrip().splitlines()[-1].startswith("testlane: FAILED — 1 failed, 2 passed in ")
    assert leftovers(data_dir) == []
