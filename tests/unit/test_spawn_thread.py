"""A server's parent-death signal follows the process, not the thread that started it.

Linux sends ``PR_SET_PDEATHSIG`` when the *thread* that forked the child exits (prctl(2)). testlane starts
servers from short-lived threads (the services readied while pytest collects; a retry after a port was
taken happens in the thread that waits): forked there, such a server got SIGQUIT as soon as that thread
ended, in the middle of the run. Real processes: a ``sleep`` started from a thread that then ends.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

from testlane.core.waiting import wait_until
from testlane.services.process import spawn, terminate

SIGQUIT_BIT = 1 << (signal.SIGQUIT - 1)


def _signalled(pid: int) -> bool:
    """SIGQUIT pending for ``pid`` (queued to it, not yet acted on)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return any(int(fields[key].strip(), 16) & SIGQUIT_BIT for key in ("SigPnd", "ShdPnd"))


def test_a_server_started_from_a_thread_outlives_the_thread(tmp_path: Path) -> None:
    started: list[subprocess.Popen[bytes]] = []
    native: list[int] = []

    def start() -> None:
        native.append(threading.get_native_id())
        started.append(spawn(["sleep", "60"], log_file=tmp_path / "log"))

    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
    (popen,) = started
    try:
        # Once the thread's task is gone the kernel has sent its children's parent-death signals, if any.
        wait_until(lambda: not Path(f"/proc/self/task/{native[0]}").exists(), timeout=10, what="the thread to end")
        assert popen.poll() is None, f"the server died with the thread that started it (exit {popen.returncode})"
        assert not _signalled(popen.pid), "SIGQUIT is on its way to the server"
    finally:
        terminate(popen, first_signal=signal.SIGKILL, grace=5)


def test_a_server_still_dies_with_the_process(tmp_path: Path) -> None:
    """The death signal still comes when the process that started the server dies (here a child process
    that starts it from a thread, then exits)."""
    script = (
        "import sys, threading\n"
        "from pathlib import Path\n"
        "from testlane.services.process import spawn\n"
        "out = []\n"
        "t = threading.Thread(target=lambda: out.append(spawn(['sleep', '60'], log_file=Path(sys.argv[1]))))\n"
        "t.start(); t.join()\n"
        "print(out[0].pid, flush=True)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "log")], capture_output=True, text=True, check=True
    )
    pid = int(proc.stdout.strip())
    wait_until(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid), timeout=10, what="the server to die")


def _zombie(pid: int) -> bool:
    try:
        return "\nState:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
