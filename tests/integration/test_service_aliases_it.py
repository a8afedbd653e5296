"""Issue 14, seen 6: `services = ["redis"]` — the name a Redis project knows, and the name of the fixtures
(redis_url, redis_client) — starts Valkey under `testlane run`, and the run names it as valkey."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import clean_env, inner_pyproject, leftovers, run_cli, server_processes

pytestmark = pytest.mark.timeout(300)

PYPROJECT = inner_pyproject(
    name="broker", services='["redis"]', testlane='[tool.testlane.env]\nBROKER_URL = "{redis.url}"'
)

TESTS = """
import os
import redis

def test_the_fixture(redis_client):
    redis_client.set("job", "queued")
    assert redis_client.get("job") == b"queued"

def test_the_mapped_variable():
    assert redis.Redis.from_url(os.environ["BROKER_URL"]).ping()
"""


def test_services_redis_starts_valkey_under_testlane_run(tmp_path: Path, data_dir: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    (tmp_path / "test_broker.py").write_text(TESTS)
    env = clean_env({"TESTLANE_DATA_DIR": str(data_dir)})
    result = run_cli(["run", "--", "-q", "-p", "no:cacheprovider"], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
    assert "valkey" in result.stderr and "redis (" not in result.stderr  # the banner names the canonical service
    assert leftovers(data_dir) == []
    assert server_processes(data_dir) == []


def test_detached_services_answer_to_their_aliases(tmp_path: Path, data_dir: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "0"\n[tool.testlane]\nservices = []\n')
    env = clean_env({"TESTLANE_DATA_DIR": str(data_dir)})
    started = run_cli(["services", "start", "redis"], cwd=tmp_path, env=env)
    try:
        assert started.returncode == 0, started.stderr
        assert "valkey" in started.stderr
        logs = run_cli(["services", "logs", "redis"], cwd=tmp_path, env=env)
        assert logs.returncode == 0, logs.stderr
        unknown = run_cli(["services", "start", "kafka"], cwd=tmp_path, env=env)
        assert unknown.returncode == 4 and "unknown service(s) in the services asked for: kafka" in unknown.stderr
    finally:
        stopped = run_cli(["services", "stop", "redis"], cwd=tmp_path, env=env)
    assert stopped.returncode == 0 and "stopped valkey" in stopped.stderr
    assert server_processes(data_dir) == []
    assert leftovers(data_dir) == []
