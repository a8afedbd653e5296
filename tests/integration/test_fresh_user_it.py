"""A fresh user's reports, working from the docs: `services env` with some services started, a failed start
under plain `pytest --it`, SIGKILL of `testlane run` while broker-using tests run, `mqtt.client()`."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import (
    TESTLANE,
    clean_env,
    inner_pyproject,
    leftovers,
    run_cli,
    run_inner,
    server_processes,
    wait_gone,
)

pytest.importorskip("paho.mqtt")
pytestmark = pytest.mark.timeout(300)

MAPPED = """
[tool.testlane]
services = ["nats", "mqtt"]

[tool.testlane.env]
NATS_URL = "{nats.url}"
MQTT_URL = "{mqtt.url}"
MQTT_PREFIX = "{mqtt.topic_prefix}"
"""


def test_services_env_prints_what_the_running_services_give_and_names_what_it_left_out(
    project: Path, data_dir: Path
) -> None:
    (project / "pyproject.toml").write_text((project / "pyproject.toml").read_text() + MAPPED)
    env = clean_env({"TESTLANE_DATA_DIR": str(data_dir)})
    started = run_cli(["services", "start", "mqtt"], cwd=project, env=env)
    assert started.returncode == 0, started.stderr
    try:
        exported = run_cli(["services", "env"], cwd=project, env=env)
    finally:
        stopped = run_cli(["services", "stop"], cwd=project, env=env)
    assert exported.returncode == 0, exported.stderr
    names = {line.removeprefix("export ").split("=", 1)[0] for line in exported.stdout.splitlines()}
    assert {"TESTLANE_MQTT_URL", "MQTT_URL", "MQTT_PREFIX", "TESTLANE_SERVICES_FILE"} <= names
    assert "NATS_URL" not in names and "TESTLANE_NATS_URL" not in names
    # as documented (docs/configuration.md): no run id or owner pid for detached services
    assert not names & {"TESTLANE_RUN_ID", "TESTLANE_OWNER_PID"}
    notes = [line for line in exported.stderr.splitlines() if "NATS_URL" in line]
    assert len(notes) == 1, exported.stderr
    assert "not running" in notes[0] and "testlane services start nats" in notes[0]
    assert "Traceback" not in exported.stderr
    assert stopped.returncode == 0
    assert server_processes(data_dir) == []
    assert leftovers(data_dir) == []


CLIENT_TESTS = """
def test_used_as_documented(mqtt):
    with mqtt.client() as client:
        client.publish(mqtt.topic_prefix + "hello", b"hi", qos=1).wait_for_publish(timeout=5)
    assert not client.is_connected()


def test_left_open(mqtt):
    mqtt.client()
"""


def test_the_session_brokers_client_is_a_context_manager_and_leaks_nothing(
    pytester: pytest.Pytester, inner_env: Path
) -> None:
    pytester.makefile(".toml", pyproject=inner_pyproject(services='["mqtt"]', testlane='discipline.leaks = "fail"\n'))
    pytester.makepyfile(test_client_it=CLIENT_TESTS)
    result = run_inner(pytester, "-v")
    out = result.stdout.str() + result.stderr.str()
    # the leak check sees an open client (so it would see one the `with` left) ...
    assert "left running: thread 'paho-mqtt-client-" in out
    # ... and reports none for the documented use
    assert [line for line in out.splitlines() if "left running" in line and "test_used_as_documented" in line] == []
    assert "test_used_as_documented PASSED" in out and "teardown of test_used_as_documented" not in out
    assert not [p for p in server_processes(inner_env) if "mosquitto" in p.name()]


@pytest.mark.parametrize(
    ("mapping", "broken"),
    [
        pytest.param('MQTT_URL = "{mqtt.url}"\n', 'mqtt.binary = "/usr/bin/true"\n', id="mqtt-not-mosquitto"),
        # mqtt starts first (in name order), then valkey's binary exits at once: mqtt must be stopped too
        pytest.param(
            'MQTT_URL = "{mqtt.url}"\nREDIS_URL = "{valkey.url}"\n',
            'valkey.binary = "{fake}"\n',
            id="valkey-exits-after-mqtt-started",
        ),
        pytest.param('DATABASE_URL = "{postgres.url}"\n', 'postgres.bin_dir = "{bin_dir}"\n', id="postgres-bin-dir"),
    ],
)
def test_a_failed_start_under_plain_pytest_leaves_nothing(
    pytester: pytest.Pytester, inner_env: Path, bin_dir: Path, mapping: str, broken: str
) -> None:
    fake = bin_dir / "valkey-server"
    fake.write_text('#!/bin/sh\necho "Redis server v=7.2.4 sha=0 malloc=libc bits=64 build=0"\nexit 1\n')
    fake.chmod(0o755)
    (bin_dir / "postgres").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "postgres").chmod(0o755)
    broken = broken.format(fake=fake, bin_dir=bin_dir)
    pytester.makefile(
        ".toml", pyproject=inner_pyproject(services="[]", testlane=broken + "\n[tool.testlane.env]\n" + mapping)
    )
    pytester.makepyfile(test_one_it="def test_one():\n    pass\n")
    result = run_inner(pytester)
    assert result.ret != 0
    assert "could not prepare [tool.testlane.env]" in result.stdout.str() + result.stderr.str()
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    assert server_processes(inner_env) == []
    assert leftovers(inner_env) == []


HELD_TEST = """
import os, pathlib
from testlane.core.waiting import wait_until

def test_held(s3_bucket, mqtt_namespace):
    client = mqtt_namespace.client()
    client.subscribe("#")
    s3_bucket.client().put_object(Bucket=s3_bucket.name, Key="k", Body=b"v")
    out = pathlib.Path(os.environ["HELD_OUT"])
    (out / f"{os.getpid()}.partial").write_text(str(os.getppid()))
    os.replace(out / f"{os.getpid()}.partial", out / f"{os.getpid()}.pid")
    wait_until(lambda: False, timeout=30, what="being killed")
"""


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["plain", "xdist"])
def test_sigkill_of_testlane_run_stops_pytest_at_once_quietly(
    project: Path, data_dir: Path, tmp_path: Path, workers: list[str]
) -> None:
    import signal

    import psutil

    from testlane.core.waiting import wait_until

    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + '\n[tool.testlane]\nservices = ["s3", "mqtt"]\n')
    (project / "test_held_it.py").write_text(HELD_TEST + ("\n\ndef test_other():\n    pass\n" if workers else ""))
    out = tmp_path / "out"
    out.mkdir()
    log = tmp_path / "terminal.log"
    env = clean_env({"TESTLANE_DATA_DIR": str(data_dir), "HELD_OUT": str(out)})
    with log.open("wb") as terminal:
        proc = subprocess.Popen(
            [TESTLANE, "run", "--", "-q", "-p", "no:cacheprovider", *workers],
            cwd=project,
            env=env,
            stdout=terminal,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: any(out.glob("*.pid")), timeout=120, what="the test to start")
        [pid_file] = out.glob("*.pid")
        test_process = psutil.Process(int(pid_file.stem))
        pytest_process = psutil.Process(int(pid_file.read_text())) if workers else test_process
        assert pytest_process.ppid() == proc.pid
        family = [pytest_process, *pytest_process.children(recursive=True)]
        servers = server_processes(data_dir)
        assert servers
        written = log.stat().st_size
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        killed_at = time.monotonic()
        assert wait_gone([*family, *servers], timeout=10) == []
        took = time.monotonic() - killed_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert took < 3, f"pytest lived {took:.1f}s after `testlane run` was killed"
    after = log.read_bytes()[written:].decode(errors="replace")
    assert len(after.splitlines()) <= 1, after
    zombies = [p for p in psutil.process_iter(["status", "cmdline"]) if p.info["status"] == psutil.STATUS_ZOMBIE]
    assert not [p for p in zombies if p.pid in {q.pid for q in family}]
    reaped = run_cli(["reap"], cwd=project, env=env)
    assert reaped.returncode == 0, reaped.stderr
    assert server_processes(data_dir) == []
    assert leftovers(data_dir) == []


DEAD_SERVER_TESTS = """
import os, signal
import pytest
from testlane.core.waiting import wait_until

FIXTURES = {
    "mqtt": ("mqtt", "mqtt_namespace"),
    "s3": ("s3", "s3_bucket"),
    "nats": ("nats", "jetstream"),
    "postgres": ("postgres", "pg_database"),
    "valkey": ("valkey", "redis_db"),
}

@pytest.mark.parametrize("kind", sorted(FIXTURES))
def test_server_dies_under_the_lease(kind, request):
    server_fixture, lease_fixture = FIXTURES[kind]
    request.getfixturevalue(lease_fixture)
    server = request.getfixturevalue(server_fixture)
    os.kill(server.pid, signal.SIGKILL)
    wait_until(server.gone, timeout=10, what="the server to die")
"""

DEAD_SERVER_CONFTEST = """
import json, os

def pytest_runtest_logreport(report):
    if report.when == "teardown":
        with open(os.environ["TEARDOWN_TIMES"], "a") as f:
            f.write(json.dumps([report.nodeid, report.duration]) + "\\n")
"""


def test_a_lease_whose_server_died_is_released_at_once(
    pytester: pytest.Pytester, inner_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    times = tmp_path / "teardowns.jsonl"
    monkeypatch.setenv("TEARDOWN_TIMES", str(times))
    pytester.makefile(".toml", pyproject=inner_pyproject(services='["mqtt", "s3", "nats", "postgres", "valkey"]'))
    pytester.makeconftest(DEAD_SERVER_CONFTEST)
    pytester.makepyfile(test_dead_it=DEAD_SERVER_TESTS)
    result = run_inner(pytester, "-p", "no:randomly")
    result.assert_outcomes(passed=5)  # and no error at teardown
    durations = dict(json.loads(line) for line in times.read_text().splitlines())
    assert len(durations) == 5, durations
    # Before: valkey 5 s, mqtt 10.2 s, nats 30 s (network timeouts); a loaded machine's teardown takes ~1 s.
    slow = {test: round(took, 2) for test, took in durations.items() if took > 3.0}
    assert slow == {}, f"releases waited for dead servers: {slow}"
    assert server_processes(inner_env) == []
