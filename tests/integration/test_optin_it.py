"""Issue 14, seen 1: a suite configured as the guide shows — `services`, `[tool.testlane.env]` — whose tests
live where testlane's default lanes would call them unit tests, passes under `testlane run` with no lane
setting: a project that declared no lanes is all integration lane when it asks for services."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import clean_env, leftovers, run_cli, server_processes

pytestmark = pytest.mark.timeout(300)

PYPROJECT = """
[project]
name = "jobs"
version = "0"

[tool.pytest.ini_options]
testpaths = ["tests"]

[tool.testlane]
services = ["valkey"]

[tool.testlane.env]
APP_REDIS_URL = "{valkey.url}"
"""

CONFTEST = """
import os
import pytest

@pytest.fixture
def redis_url():  # the project's own, named like testlane's
    return os.environ["APP_REDIS_URL"]
"""

TESTS = """
import os
import redis

def test_the_broker_answers():
    assert redis.Redis.from_url(os.environ["APP_REDIS_URL"]).ping()

def test_through_its_own_fixture(redis_url):
    client = redis.Redis.from_url(redis_url)
    client.set("job:1", "queued")
    assert client.get("job:1") == b"queued"
"""


def test_a_suite_without_lanes_passes_under_testlane_run_with_the_guides_configuration(
    tmp_path: Path, data_dir: Path
) -> None:
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "conftest.py").write_text(CONFTEST)
    (tmp_path / "tests" / "test_jobs.py").write_text(TESTS)
    env = clean_env({"TESTLANE_DATA_DIR": str(data_dir)})
    result = run_cli(["run", "--", "-q", "-p", "no:cacheprovider"], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
    assert "NetworkBlockedError" not in result.stdout
    assert leftovers(data_dir) == []
    assert server_processes(data_dir) == []
