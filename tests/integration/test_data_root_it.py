"""Where the data goes (issue 14), in real runs: a tmpfs with room is used quietly; inside a Docker-like
64 MB /dev/shm (a private mount namespace), the run puts its data on disk and says so once, with the fix."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from testlane.core.runtime import CHOSEN_ENV, is_root
from tests.helpers import TESTLANE, clean_env, run_cli

PROJECT_TEST = """
import json, os
from pathlib import Path

def test_the_data_is_where_testlane_said(postgres):
    services = Path(os.environ["TESTLANE_SERVICES_FILE"])
    assert str(services).startswith(os.environ["EXPECTED_DATA_BASE"] + "/testlane-"), services
    with postgres.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
"""


@pytest.fixture
def disk_tmp() -> Iterator[Path]:
    """A temp dir on disk (not tmpfs), reachable by the service user."""
    path = Path("/var/tmp") / f"testlane-test-tmp-{uuid.uuid4().hex[:8]}"
    path.mkdir(mode=0o755)
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _env(**extra: str) -> dict[str, str]:
    env = clean_env(extra)
    for name in (CHOSEN_ENV, "TESTLANE_DATA_DIR", "XDG_RUNTIME_DIR"):
        env.pop(name, None)
    return env


def test_a_roomy_tmpfs_is_chosen_quietly_and_the_debug_log_says_why(project: Path) -> None:
    if shutil.disk_usage("/dev/shm").free < 256 * 1024 * 1024:
        pytest.skip("this machine's /dev/shm is small")
    done = run_cli(["-v", "cache", "list"], cwd=project, env=_env())
    assert done.returncode == 0, done.stderr
    assert "data directory: /dev/shm/testlane-" in done.stderr and "is tmpfs with" in done.stderr
    assert "WARNING" not in done.stderr


@pytest.mark.skipif(not is_root() or not shutil.which("unshare"), reason="needs root and unshare (a private mount)")
def test_a_64_mb_shm_sends_the_data_to_disk_with_one_warning_naming_the_fix(project: Path, disk_tmp: Path) -> None:
    with open(project / "pyproject.toml", "a") as fh:
        fh.write('\n[tool.testlane]\nservices = ["postgres"]\n')
    (project / "test_where.py").write_text(PROJECT_TEST)
    script = 'mount -t tmpfs -o size=64m tmpfs /dev/shm && exec "$0" "$@"'
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, TESTLANE, "-v", "run", "--"]
    argv += ["-q", "-p", "no:cacheprovider"]
    env = _env(TMPDIR=str(disk_tmp), EXPECTED_DATA_BASE=str(disk_tmp))
    done = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True, timeout=180, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "1 passed" in output
    warnings = [line for line in done.stderr.splitlines() if "--shm-size" in line]
    assert len(warnings) == 1, output  # once per run, not once per process
    assert f"data goes to {disk_tmp}, which is not tmpfs" in warnings[0]
    assert "/dev/shm has less than 256 MB free" in warnings[0] and "data_dir" in warnings[0]
    assert f"data directory: {disk_tmp}/testlane-" in done.stderr
    assert not list((disk_tmp / "testlane-0").glob("[0-9a-f]" * 8)), "the run's directory is gone"


XDIST_TESTS = """
def test_a(pg_conn):
    pg_conn.execute("SELECT 1")

def test_b(pg_conn):
    pg_conn.execute("SELECT 1")
"""


def test_xdist_workers_are_not_blamed_for_testlanes_own_variables(project: Path) -> None:
    """A fresh user's `pytest --it -n 2` reported `changed environment variables (restored):
    TESTLANE_CHOSEN_DATA_ROOT` for each worker's first test: testlane chose the data root mid-test. The owner
    chooses it at session start now, and testlane's bookkeeping variables are never a test's change."""
    with open(project / "pyproject.toml", "a") as fh:
        fh.write('\n[tool.testlane]\nservices = ["postgres"]\n')
    (project / "test_two.py").write_text(XDIST_TESTS)
    argv = [sys.executable, "-m", "pytest", "--it", "-n", "2", "-rA", "-p", "no:cacheprovider"]
    done = subprocess.run(argv, cwd=project, env=_env(), capture_output=True, text=True, timeout=300, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "2 passed" in output
    assert "changed environment variables" not in output and "testlane findings" not in output, output


def test_testlanes_bookkeeping_variables_are_declared_and_ignored_by_the_discipline_check() -> None:
    from testlane.core.environment import CHOSEN_DATA_ROOT, SERVICES_FILE, bookkeeping_names
    from testlane.pytest_plugin.discipline import IGNORED_ENV

    assert {CHOSEN_DATA_ROOT, SERVICES_FILE} <= bookkeeping_names() <= IGNORED_ENV
