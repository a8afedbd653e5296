"""`testlane run` as users run it: in parallel, interrupted, killed — and what it leaves behind."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from tests.helpers import clean_env, leftovers, run_cli, server_processes, start_cli, wait_for_file, wait_gone

# A test that reports what it ran against, then (optionally) holds until released.
PROBE_TEST = textwrap.dedent(
    """
    import json, os, pathlib
    import psycopg, redis
    from testlane.core.waiting import wait_until

    def test_probe():
        if os.environ.get("PROBE_IGNORE_SIGINT"):  # a test (or library) that swallows Ctrl-C
            import signal
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        out = pathlib.Path(os.environ["PROBE_OUT"])
        with psycopg.connect(os.environ["TESTLANE_POSTGRES_URL"]) as conn:
            data_dir = conn.execute("SHOW data_directory").fetchone()[0]
        assert redis.Redis.from_url(os.environ["TESTLANE_REDIS_URL"]).ping()
        run_id = os.environ["TESTLANE_RUN_ID"]
        partial = out / f"{run_id}.partial"  # written whole, then renamed: readers never see half a file
        partial.write_text(json.dumps({
            "run_id": run_id,
            "postgres": os.environ["TESTLANE_POSTGRES_URL"],
            "redis": os.environ["TESTLANE_REDIS_URL"],
            "data_dir": data_dir,
            "it": os.environ["TESTLANE_IT"],
            "pytest_pid": os.getpid(),
        }))
        os.replace(partial, out / f"{run_id}.json")
        hold = os.environ.get("PROBE_HOLD")
        if hold:
            wait_until(pathlib.Path(hold).exists, timeout=600, what="release")
    """
)


@pytest.fixture
def probe_project(project: Path, tmp_path: Path) -> Path:
    (project / "tests").mkdir()
    (project / "tests" / "test_probe_it.py").write_text(PROBE_TEST)
    (tmp_path / "out").mkdir()
    return project


def _env(data_dir: Path, out: Path, **extra: str) -> dict[str, str]:
    return clean_env({"TESTLANE_DATA_DIR": str(data_dir), "PROBE_OUT": str(out), **extra})


def _reports(out: Path) -> list[dict[str, str]]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]


def test_four_runs_started_together_all_pass_on_distinct_ports(
    probe_project: Path, data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    env = _env(data_dir, out)
    procs = [start_cli(["run", "--", "-q", "-p", "no:cacheprovider"], cwd=probe_project, env=env) for _ in range(4)]
    results = [(p.wait(timeout=180), *p.communicate()) for p in procs]
    for code, stdout, stderr in results:
        assert code == 0, stdout + stderr
    reports = _reports(out)
    assert len(reports) == 4
    assert len({r["run_id"] for r in reports}) == 4
    assert len({r["postgres"] for r in reports}) == 4
    assert len({r["redis"] for r in reports}) == 4
    assert len({r["data_dir"] for r in reports}) == 4
    assert all(r["it"] == "1" for r in reports)
    assert leftovers(data_dir) == []
    assert server_processes(data_dir) == []


def test_failing_test_makes_run_fail(project: Path, data_dir: Path) -> None:
    (project / "test_fail.py").write_text("def test_fails():\n    assert 1 == 2\n")
    result = run_cli(
        ["run", "--", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        env=clean_env({"TESTLANE_DATA_DIR": str(data_dir)}),
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 failed" in result.stdout
    assert leftovers(data_dir) == []


def test_missing_binary_is_one_clear_message(project: Path, data_dir: Path) -> None:
    env = clean_env({"TESTLANE_DATA_DIR": str(data_dir)})
    result = run_cli(
        ["--set", "postgres.backend=local", "--set", "postgres.bin_dir=/nonexistent/pg/bin", "run"],
        cwd=project,
        env=env,
    )
    assert result.returncode == 3
    assert "no local PostgreSQL installation found" in result.stderr
    assert "/nonexistent/pg/bin" in result.stderr
    assert "hint:" in result.stderr
    assert "Traceback" not in result.stderr
    assert leftovers(data_dir) == []


def test_unknown_option_is_one_clear_message(project: Path) -> None:
    result = run_cli(["run", "--no-such-thing"], cwd=project, env=clean_env())
    assert result.returncode == 4
    assert "No such option '--no-such-thing'" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_cli(["--set", "postgres.backend=docker", "run"], cwd=project, env=clean_env())
    assert result.returncode == 4
    assert "postgres.backend = 'docker' is not one of" in result.stderr


@pytest.mark.parametrize(
    ("signum", "expected", "background"),
    [(signal.SIGINT, 130, False), (signal.SIGTERM, 143, False), (signal.SIGINT, 130, True)],
    ids=["SIGINT", "SIGTERM", "SIGINT-in-a-background-job"],
)
def test_signal_stops_everything_and_returns_the_signal_code(
    probe_project: Path, data_dir: Path, tmp_path: Path, signum: int, expected: int, background: bool
) -> None:
    out = tmp_path / "out"
    env = _env(data_dir, out, PROBE_HOLD=str(tmp_path / "never"))
    proc = start_cli(
        ["run", "--", "-q", "-p", "no:cacheprovider"], cwd=probe_project, env=env, as_background_job=background
    )
    try:
        wait_for_file_glob(out, "*.json")
        report = _reports(out)[0]
        servers = server_processes(data_dir)
        assert len(servers) >= 2
        pytest_proc = psutil.Process(int(report["pytest_pid"]))
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=60)  # reading the pipes: a full pipe must not block the run
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == expected, stdout + stderr
    assert "did not stop within" not in stdout + stderr  # pytest stopped in an orderly way, by itself
    assert wait_gone([*servers, pytest_proc]) == []
    assert server_processes(data_dir) == []
    assert leftovers(data_dir) == []


def test_a_pytest_that_ignores_ctrl_c_is_terminated_after_the_grace_period(
    probe_project: Path, data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    env = _env(data_dir, out, PROBE_HOLD=str(tmp_path / "never"), PROBE_IGNORE_SIGINT="1", TESTLANE_STOP_GRACE="1")
    proc = start_cli(["run", "--", "-q", "-p", "no:cacheprovider"], cwd=probe_project, env=env)
    try:
        wait_for_file_glob(out, "*.json")
        servers = server_processes(data_dir)
        pytest_proc = psutil.Process(int(_reports(out)[0]["pytest_pid"]))
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stdout + stderr
    assert "pytest did not stop within 1s of the signal; terminating it" in stdout + stderr
    assert wait_gone([*servers, pytest_proc]) == []
    assert server_processes(data_dir) == []
    assert leftovers(data_dir) == []


def test_a_killed_run_started_as_a_background_job_takes_its_servers_with_it(
    probe_project: Path, data_dir: Path, tmp_path: Path
) -> None:
    """SIGQUIT, the servers' parent-death signal, is ignored in a shell's background job: not by them."""
    out = tmp_path / "out"
    env = _env(data_dir, out, PROBE_HOLD=str(tmp_path / "never"))
    proc = start_cli(["run", "--", "-q", "-p", "no:cacheprovider"], cwd=probe_project, env=env, as_background_job=True)
    try:
        wait_for_file_glob(out, "*.json")
        servers = server_processes(data_dir)
        assert len(servers) >= 2
        pytest_proc = psutil.Process(int(_reports(out)[0]["pytest_pid"]))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        assert wait_gone([*servers, pytest_proc]) == []  # at once, not only when the next run reaps
    finally:
        if proc.poll() is None:
            proc.kill()
    assert run_cli(["reap"], cwd=probe_project, env=env).returncode == 0
    assert leftovers(data_dir) == []


def wait_for_file_glob(directory: Path, pattern: str, timeout: float = 120) -> None:
    from testlane.core.waiting import wait_until

    wait_until(lambda: any(directory.glob(pattern)), timeout=timeout, what=f"{pattern} in {directory}")


def test_sigkilled_run_is_reaped_by_the_next_run_and_a_live_run_is_untouched(
    probe_project: Path, data_dir: Path, tmp_path: Path
) -> None:
    out_live, out_killed, out_next = tmp_path / "live", tmp_path / "killed", tmp_path / "next"
    for d in (out_live, out_killed, out_next):
        d.mkdir()
    release = tmp_path / "release-live"
    live = start_cli(
        ["run", "--", "-q", "-p", "no:cacheprovider"],
        cwd=probe_project,
        env=_env(data_dir, out_live, PROBE_HOLD=str(release)),
    )
    doomed = start_cli(
        ["run", "--", "-q", "-p", "no:cacheprovider"],
        cwd=probe_project,
        env=_env(data_dir, out_killed, PROBE_HOLD=str(tmp_path / "never")),
    )
    try:
        wait_for_file_glob(out_live, "*.json")
        wait_for_file_glob(out_killed, "*.json")
        live_run = _reports(out_live)[0]["run_id"]
        doomed_run = _reports(out_killed)[0]["run_id"]
        found = server_processes(data_dir / live_run)
        # The servers themselves, not their children: a Postgres backend (the pool clones while tests run)
        # may end on its own at any moment.
        parents = {}
        for proc in found:
            with contextlib.suppress(psutil.Error):  # ended before we looked: a child, not a server
                parents[proc] = proc.ppid()
        live_servers = [proc for proc, ppid in parents.items() if ppid not in {p.pid for p in found}]
        assert len(live_servers) >= 2
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=30)
        # The killed run's directory and records are still there ...
        assert doomed_run in leftovers(data_dir)
        # ... until the next run starts, which reaps them and passes.
        nxt = run_cli(["run", "--", "-q", "-p", "no:cacheprovider"], cwd=probe_project, env=_env(data_dir, out_next))
        assert nxt.returncode == 0, nxt.stdout + nxt.stderr
        assert not any(item.startswith(doomed_run) or doomed_run in item for item in leftovers(data_dir))
        assert server_processes(data_dir / doomed_run) == []
        # The live run was not touched: same servers, still answering, and it passes when released.
        assert all(p.is_running() for p in live_servers)
        assert live.poll() is None
        release.touch()
        assert live.wait(timeout=120) == 0, live.communicate()
    finally:
        for p in (live, doomed):
            if p.poll() is None:
                p.kill()
    assert leftovers(data_dir) == []
    assert server_processes(data_dir) == []


OWNER_SCRIPT = textwrap.dedent(
    """
    import os, pathlib, sys
    from testlane.core.config import load_settings
    from testlane.core.runtime import RunContext
    from testlane.core.waiting import wait_until
    from testlane.services.stack import ServiceStack

    settings = load_settings()
    ctx = RunContext.from_settings(settings, owner=os.getpid())
    stack = ServiceStack(settings, ctx, die_with_parent=False)  # like a worker-started server
    stack.start()
    pathlib.Path(sys.argv[1]).write_text(ctx.run_id)
    wait_until(lambda: False, timeout=600, what="being killed")
    """
)


def test_reap_kills_servers_that_outlived_their_owner(project: Path, data_dir: Path, tmp_path: Path) -> None:
    env = clean_env({"TESTLANE_DATA_DIR": str(data_dir)})
    marker_dead, marker_live = tmp_path / "dead", tmp_path / "live"
    script = tmp_path / "owner.py"
    script.write_text(OWNER_SCRIPT)
    dead_owner = subprocess.Popen([sys.executable, str(script), str(marker_dead)], cwd=project, env=env)
    live_owner = subprocess.Popen([sys.executable, str(script), str(marker_live)], cwd=project, env=env)
    try:
        wait_for_file(marker_dead)
        wait_for_file(marker_live)
        dead_run, live_run = marker_dead.read_text(), marker_live.read_text()
        orphans = server_processes(data_dir / dead_run)
        survivors = server_processes(data_dir / live_run)
        assert len(orphans) >= 2 and len(survivors) >= 2
        dead_owner.kill()
        dead_owner.wait()
        assert all(p.is_running() for p in orphans), "servers should outlive a SIGKILLed owner here"
        result = run_cli(["reap"], cwd=project, env=env)
        assert result.returncode == 0, result.stderr
        assert f"of run {dead_run}" in result.stderr
        assert wait_gone(orphans) == []
        assert not (data_dir / dead_run).exists()
        assert all(p.is_running() for p in survivors)
        assert (data_dir / live_run).exists()
        again = run_cli(["reap"], cwd=project, env=env)
        assert "nothing to reap" in again.stderr
    finally:
        for p in (dead_owner, live_owner):
            if p.poll() is None:
                p.kill()
                p.wait()
    run_cli(["reap"], cwd=project, env=env)
    assert server_processes(data_dir) == []
    assert leftovers(data_dir) == []


def test_services_commands(project: Path, data_dir: Path) -> None:
    env = clean_env({"TESTLANE_DATA_DIR": str(data_dir)})
    started = run_cli(["services", "start"], cwd=project, env=env)
    assert started.returncode == 0, started.stderr
    try:
        again = run_cli(["services", "start", "postgres"], cwd=project, env=env)
        assert "already running" in again.stderr
        status = run_cli(["services", "status"], cwd=project, env=env)
        assert "detached" in status.stdout + status.stderr
        exported = run_cli(["services", "env"], cwd=project, env=env)
        lines = dict(
            line.removeprefix("export ").split("=", 1)
            for line in exported.stdout.splitlines()
            if line.startswith("export ")
        )
        assert lines["TESTLANE_POSTGRES_URL"].startswith("postgresql://")
        assert lines["TESTLANE_REDIS_URL"].startswith("redis://")
        import psycopg

        with psycopg.connect(lines["TESTLANE_POSTGRES_URL"]) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        logs = run_cli(["services", "logs", "postgres"], cwd=project, env=env)
        assert logs.returncode == 0
        # a reap never touches detached services
        run_cli(["reap"], cwd=project, env=env)
        with psycopg.connect(lines["TESTLANE_POSTGRES_URL"]) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        missing = run_cli(["services", "logs", "mariadb"], cwd=project, env=env)
        assert missing.returncode == 3
        assert "no running service named 'mariadb'" in missing.stderr
    finally:
        stopped = run_cli(["services", "stop"], cwd=project, env=env)
    assert stopped.returncode == 0
    assert "stopped postgres" in stopped.stderr
    assert server_processes(data_dir) == []
    assert leftovers(data_dir) == []


def test_killed_run_dir_without_owner_is_removed(data_dir: Path, project: Path) -> None:
    """A run killed between creating its directory and recording anything is cleaned too."""
    run_dir = data_dir / "deadbeef"
    run_dir.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run_dir / "owner.json").write_text(json.dumps({"owner_pid": dead.pid, "owner_create_time": 1.0}))
    result = run_cli(["reap"], cwd=project, env=clean_env({"TESTLANE_DATA_DIR": str(data_dir)}))
    assert result.returncode == 0
    assert not run_dir.exists()
    assert os.path.isdir(data_dir)


DETACHED_UNIT_TEST = textwrap.dedent(
    """
    import os, socket
    from urllib.parse import urlsplit

    def test_reaches_the_database():
        url = urlsplit(os.environ["TESTLANE_POSTGRES_URL"])
        socket.create_connection((url.hostname, url.port), timeout=5).close()
    """
)


def test_plain_pytest_with_detached_services_says_how_to_run_the_integration_lane(
    project: Path, data_dir: Path
) -> None:
    """`testlane services start`, `eval "$(testlane services env)"`, then plain `pytest`: the unit lane's guard
    refused testlane's own server with only `integration_patterns` as the fix; `pytest --it` is the one-word one."""
    env = clean_env({"TESTLANE_DATA_DIR": str(data_dir)})
    started = run_cli(["services", "start", "postgres"], cwd=project, env=env)
    assert started.returncode == 0, started.stderr
    try:
        exported = run_cli(["services", "env"], cwd=project, env=env)
        detached = dict(
            line.removeprefix("export ").split("=", 1)
            for line in exported.stdout.splitlines()
            if line.startswith("export ")
        )
        detached = {name: shlex.split(value)[0] for name, value in detached.items()}  # as the shell's eval
        (project / "tests").mkdir()
        (project / "tests" / "test_users.py").write_text(DETACHED_UNIT_TEST)
        pytest_env = {**env, **detached}
        plain = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "tests"],
            cwd=project,
            env=pytest_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        out = plain.stdout + plain.stderr
        assert plain.returncode == 1, out
        assert "tried to connect to 127.0.0.1:" in out and "testlane's detached postgres" in out, out
        assert "`pytest --it` (or `TESTLANE_IT=1 pytest`, or `testlane run`)" in out, out
        assert "unit_allow_hosts" not in out, out
        lane = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--it", "tests"],
            cwd=project,
            env=pytest_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert lane.returncode == 0, lane.stdout + lane.stderr
    finally:
        stopped = run_cli(["services", "stop"], cwd=project, env=env)
    assert stopped.returncode == 0
    assert server_processes(data_dir) == []
