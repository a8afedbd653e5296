"""Helpers for testlane's own tests: run the CLI as a user would, inspect leftovers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import psutil

from testlane.cli.run import RUN_SCOPED_ENV

TESTLANE = str(Path(sys.executable).with_name("testlane"))


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment minus the outer run's variables (tests run under `testlane run` too)."""
    env = {k: v for k, v in os.environ.items() if k not in RUN_SCOPED_ENV and k != "TESTLANE_IT"}
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("PYTEST_CURRENT_TEST", None)
    env.update(extra or {})
    return env


def run_cli(
    args: list[str], *, cwd: Path, env: Mapping[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TESTLANE, *args],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_cli(
    args: list[str], *, cwd: Path, env: Mapping[str, str], as_background_job: bool = False
) -> subprocess.Popen[str]:
    """``testlane ARGS`` in the background; ``as_background_job``: with SIGINT and SIGQUIT ignored, as a
    non-interactive shell starts ``cmd &`` (and as CI runners and nohup'd scripts often run it)."""
    return subprocess.Popen(
        [TESTLANE, *args],
        cwd=cwd,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ignore_interrupts if as_background_job else None,
    )


def _ignore_interrupts() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)


def server_processes(data_dir: Path) -> list[psutil.Process]:
    """Processes whose command line or working directory is under ``data_dir`` (ours, for this test).

    Servers are started with their instance directory as working directory; that also finds
    Valkey, which rewrites its command line to ``valkey-server 127.0.0.1:PORT``.
    """
    found = []
    prefix = str(data_dir)
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        cmdline = proc.info.get("cmdline") or []
        cwd = proc.info.get("cwd") or ""
        if cwd.startswith(prefix) or any(prefix in part for part in cmdline):
            found.append(proc)
    return found


def wait_for_file(path: Path, timeout: float = 60) -> None:
    """Wait until ``path`` exists (a test's marker that it reached a point)."""
    from testlane.core.waiting import wait_until

    wait_until(path.exists, timeout=timeout, what=f"{path} to appear")


def wait_gone(procs: list[psutil.Process], timeout: float = 15) -> list[psutil.Process]:
    """Wait for processes to exit; return those still alive after ``timeout``."""
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return alive


def leftovers(data_dir: Path) -> list[str]:
    """Run directories and records still present under a test's data dir."""
    items: list[str] = []
    if data_dir.is_dir():
        items += [p.name for p in data_dir.iterdir() if p.name not in ("state", "ports")]
        state = data_dir / "state"
        if state.is_dir():
            items += [f"state/{p.name}" for p in state.iterdir()]
    return sorted(items)


def elapsed_since(start: float) -> float:
    return time.monotonic() - start


def dead_pid() -> int:
    """The pid of a process that has exited (and was reaped)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def owner_decoys(suffix: str) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """Databases (name -> comment) for the exact-ownership tests, on a shared server.

    Returns ``(reaped, decoys, other_host)``: ``reaped`` carry a complete record of this host whose owner
    is dead (``reap`` drops them); ``decoys`` merely look like testlane's (a record with text before or
    after it, the pre-v1 shape inside other text, no pid, a record of another run than the name's) and
    must survive every reap; ``other_host`` carry complete records of another host, made long ago:
    kept unless ``--other-hosts-older-than`` is given. Run ids are random, so concurrent suites on the
    same server never share names. ``suffix`` ends the names (``1`` for Postgres, ``m1`` for MariaDB).
    """
    import secrets

    from testlane.databases.owner import this_host

    host = this_host()
    pid = dead_pid()

    def run() -> str:
        return secrets.token_hex(4)

    def record(run_id: str, *, on: str = host) -> str:
        return f"testlane:v1 run={run_id} host={on} pid={pid} ctime=1.00 created=1700000000"

    def legacy(run_id: str) -> str:  # the shape main's reaper searched for anywhere in a comment
        return f"testlane run={run_id} host={host} pid={pid} ctime=1.00 created=1700000000"

    reaped = {}
    real = run()
    reaped[f"tl_{real}_main_{suffix}"] = record(real)
    decoys = {}
    for make in (
        lambda r: f"see {record(r)}",
        lambda r: f"{record(r)} -- kept by hand",
        lambda r: f"backup of {legacy(r)}",
        lambda r: f"{legacy(r)}\nimportant data",
        lambda r: f"testlane:v1 run={r} host={host} ctime=- created=1700000000",
        lambda r: record(run()),  # a complete record, but of another run than the name's
    ):
        r = run()
        decoys[f"tl_{r}_main_{suffix}"] = make(r)
    far = run()
    other_host = {f"tl_{far}_main_{suffix}": record(far, on="elsewhere.example")}
    return reaped, decoys, other_host
