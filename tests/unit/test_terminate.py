"""One way to stop a process (services.process.terminate), on real processes: a child that ignores
SIGTERM is killed after the grace period, a process group's grandchildren do not outlive it, a recycled
PID is left alone, and the gate's timed-out checks and the servers use it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testlane.cli.gate import Check, run_check
from testlane.core.waiting import wait_until
from testlane.services.process import ProcessRef, pid_alive, terminate

IGNORES_TERM = "import signal, sys, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\n"
IGNORES_TERM += "time.sleep(60)\n"
# A leader that stops on SIGTERM, with a grandchild that ignores it (and holds the leader's stdout open).
GRANDCHILD = '(trap "" TERM; exec sleep 20) & echo $!; wait'


def _started(argv: list[str], **kwargs: object) -> subprocess.Popen[str]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, **kwargs)  # type: ignore[call-overload]
    assert proc.stdout is not None
    proc.first_line = proc.stdout.readline().strip()  # the process says it is ready: no sleep needed
    return proc  # type: ignore[no-any-return]


@pytest.fixture
def leftovers() -> Iterator[list[int]]:
    pids: list[int] = []
    yield pids
    for pid in pids:  # only if a test failed: never leave a sleeper behind
        if pid_alive(pid):
            subprocess.run(["kill", "-9", str(pid)], check=False)


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_period() -> None:
    proc = _started([sys.executable, "-c", IGNORES_TERM])
    started = time.monotonic()
    code = terminate(proc, grace=0.3)
    assert code == -signal.SIGKILL
    assert time.monotonic() - started >= 0.3
    assert proc.returncode == -signal.SIGKILL  # reaped: no zombie


def test_a_child_that_stops_on_sigterm_is_not_killed() -> None:
    proc = _started([sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(60)"])
    assert terminate(proc, grace=10) == -signal.SIGTERM


def test_a_process_groups_grandchildren_are_gone(leftovers: list[int]) -> None:
    proc = _started(["sh", "-c", GRANDCHILD], start_new_session=True)
    grandchild = int(proc.first_line)
    leftovers.append(grandchild)
    assert pid_alive(grandchild)
    terminate(proc, grace=5, group=True)
    assert proc.returncode == -signal.SIGTERM  # the leader stopped on the first signal ...
    wait_until(lambda: not pid_alive(grandchild), timeout=5, what="the grandchild to be killed with its group")


def test_without_group_the_first_signal_goes_to_the_process_alone(leftovers: list[int]) -> None:
    proc = _started(["sh", "-c", GRANDCHILD], start_new_session=True)
    grandchild = int(proc.first_line)
    leftovers.append(grandchild)
    terminate(proc, grace=5)
    assert pid_alive(grandchild)  # what ``group`` is for


def test_a_recycled_pid_is_left_alone() -> None:
    proc = _started([sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(60)"])
    try:
        ref = ProcessRef.of(proc.pid)
        assert ref is not None
        assert terminate(proc.pid, create_time=ref.create_time - 100, grace=0.1, group=True) is None
        assert proc.poll() is None
        assert terminate(proc.pid, create_time=ref.create_time, grace=5) is None  # not our Popen: no exit code
        wait_until(lambda: proc.poll() is not None, timeout=5, what="the process to stop")
    finally:
        terminate(proc)


def test_a_timed_out_gate_check_leaves_no_grandchild_behind(tmp_path: Path, leftovers: list[int]) -> None:
    started = time.monotonic()
    result = run_check(Check("slow", f"bash -c {GRANDCHILD!r}"), cwd=tmp_path, exec_prefix="", timeout=0.5)
    elapsed = time.monotonic() - started
    grandchild = int(result.stdout.split()[0])
    leftovers.append(grandchild)
    assert result.problem == "timed out after 0.5s"
    # Before: the leader stopped, the grandchild ignored SIGTERM and held the pipe open for its 20 s.
    assert elapsed < 10
    wait_until(lambda: not pid_alive(grandchild), timeout=5, what="the check's grandchild to be killed")
