"""Server processes: spawn, identify, stop, and read their logs.

A process is identified by its PID *and* its start time, so a recycled PID is
never mistaken for one of ours (psutil gives the start time portably).

Servers are started in their own session (``start_new_session``): a Ctrl-C in
the terminal reaches testlane, which then stops the servers in order, instead
of reaching the servers directly while tests are still talking to them. When
``die_with_parent`` is set, Linux's parent-death signal stops the server at once
if its owner is SIGKILLed; the registry reaps what is left either way. Linux sends that signal when
the *thread* that forked the child ends, not the process: a server started from a short-lived thread
(the services readied while pytest collects, a retry after a port was taken) is therefore forked on
one thread that lives as long as the process (:func:`_on_a_lasting_thread`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from queue import SimpleQueue
from typing import Any, TypeVar

import psutil

from testlane.core.redact import redact
from testlane.core.waiting import Deadline, sleep

__all__ = [
    "ProcessRef",
    "child_preexec",
    "log_tail",
    "pid_alive",
    "server_environment",
    "spawn",
    "strip_ansi",
    "terminate",
]

log = logging.getLogger("testlane")

_PR_SET_PDEATHSIG = 1


# Signals a shell may have left ignored: a non-interactive shell starts background jobs with SIGINT
# and SIGQUIT ignored, and an ignored disposition survives fork and exec. A server would then ignore
# its parent-death signal (SIGQUIT) and outlive a killed testlane; a pytest child would ignore the
# Ctrl-C testlane forwards to it (Python installs its KeyboardInterrupt handler only where SIGINT is
# not ignored) and never stop in an orderly way.
RESET_SIGNALS = (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, loaded once: finding it runs ``ldconfig -p`` (1.5-4.5 ms here, per server start)."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    libc = ctypes.CDLL(name, use_errno=True)
    libc.signal.restype = ctypes.c_void_p
    libc.signal.argtypes = (ctypes.c_int, ctypes.c_void_p)
    return libc


def child_preexec(death_signal: int | None) -> Callable[[], None] | None:
    """A preexec function for the processes testlane starts: :data:`RESET_SIGNALS` back to their
    defaults, then (Linux only) ``death_signal`` as the parent-death signal when it is not None.

    Written by hand because subprocess has no such options and no library offers them; libc is
    loaded here, in the parent, so the child only makes foreign calls (no Python signal handling,
    which is not safe between fork and exec).
    """
    libc = _libc()
    if libc is None:
        return None
    reset_disposition, prctl = libc.signal, libc.prctl if sys.platform.startswith("linux") else None
    numbers = [int(sig) for sig in RESET_SIGNALS]

    def setup() -> None:
        for number in numbers:
            reset_disposition(number, None)  # SIG_DFL is the null handler
        if prctl is not None and death_signal is not None:
            prctl(_PR_SET_PDEATHSIG, int(death_signal), 0, 0, 0)

    return setup


@dataclass(frozen=True)
class ProcessRef:
    """A process we started, identified by PID and start time."""

    pid: int
    create_time: float

    @classmethod
    def of(cls, pid: int) -> ProcessRef | None:
        try:
            return cls(pid, psutil.Process(pid).create_time())
        except psutil.Error:
            return None

    def alive(self) -> bool:
        return pid_alive(self.pid, self.create_time)


def pid_alive(pid: int | None, create_time: float | None = None) -> bool:
    """True if ``pid`` exists, is not a zombie and (when given) started at ``create_time``."""
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return create_time is None or abs(proc.create_time() - create_time) < 0.01
    except psutil.Error:
        return False


def server_environment() -> dict[str, str]:
    """Our environment without credentials, for the servers testlane starts.

    Dropped: every ``TESTLANE_*`` variable (the run's URLs and passwords) and every variable whose
    value carries a credential (a URL with a password, e.g. a mapped ``DATABASE_URL``). A server runs
    as the service user when testlane runs as root; what that user can run (``COPY ... FROM PROGRAM``)
    can read its server's ``/proc/<pid>/environ``, and must not find another server's password there.
    """
    return {
        key: value for key, value in os.environ.items() if not key.startswith("TESTLANE_") and redact(value) == value
    }


T = TypeVar("T")
_forker: SimpleQueue[tuple[Callable[[], Any], Future[Any]]] | None = None
_forker_lock = threading.Lock()


def _forker_loop(jobs: SimpleQueue[tuple[Callable[[], Any], Future[Any]]]) -> None:
    while True:
        call, result = jobs.get()
        try:
            result.set_result(call())
        except BaseException as exc:  # handed to the caller's thread, raised there
            result.set_exception(exc)


def _on_a_lasting_thread(call: Callable[[], T]) -> T:
    """``call()`` on the main thread as is, otherwise on one daemon thread that ends only with the process.

    A child's parent-death signal (``PR_SET_PDEATHSIG``) fires when the thread that forked it exits
    (prctl(2)): a server forked on a thread that ends once the server is ready would be stopped then.
    Hand-written: no library forks on a given thread; a daemon thread is never joined, so it lasts until
    the process exits."""
    if threading.current_thread() is threading.main_thread():
        return call()
    global _forker
    with _forker_lock:
        if _forker is None:
            _forker = SimpleQueue()
            threading.Thread(target=_forker_loop, args=(_forker,), name="testlane-forker", daemon=True).start()
        jobs = _forker
    result: Future[T] = Future()
    jobs.put((call, result))
    return result.result()


def spawn(
    argv: Sequence[str],
    *,
    log_file: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: int | None = None,
    group: int | None = None,
    die_with_parent: bool = True,
) -> subprocess.Popen[bytes]:
    """Start a server in its own session with stdout and stderr appended to ``log_file``.

    ``user``/``group`` switch identity in the child (used as root). With
    ``die_with_parent`` the child gets SIGQUIT when this process dies (forked on a thread that lasts as
    long as the process, whichever thread calls this). ``env``
    defaults to :func:`server_environment` (ours, without credentials). Secrets never go in ``argv``
    (every local user can read it in ``ps``): pass them in a 0600 file or in ``env``.
    """
    preexec = child_preexec(signal.SIGQUIT if die_with_parent else None)
    environment = dict(env) if env is not None else server_environment()
    with open(log_file, "ab") as out:

        def fork() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=environment,
                cwd=cwd,
                start_new_session=True,
                user=user,
                group=group,
                extra_groups=[] if user is not None else None,
                preexec_fn=preexec,
                close_fds=True,
            )

        return _on_a_lasting_thread(fork) if die_with_parent else fork()


KILL_WAIT = 5.0  # seconds for a SIGKILLed process to be reaped (it cannot refuse; this only bounds a hung kernel)


def terminate(
    target: subprocess.Popen[Any] | int,
    *,
    create_time: float | None = None,
    first_signal: int = signal.SIGTERM,
    grace: float = 10.0,
    group: bool = False,
    first_to_group: bool = False,
) -> int | None:
    """Stop a process: ``first_signal``, up to ``grace`` seconds to exit, then SIGKILL. The one way
    testlane stops a process (servers, gate checks, the pytest child of ``testlane run``).

    ``target`` is a :class:`subprocess.Popen` we started (reaped here: no zombie remains; its exit
    code is returned) or a PID from a record, identified by ``create_time`` too (a recycled PID is
    left alone; None is returned). With ``group`` the process leads its own process group
    (``start_new_session``): once it has exited, or at the deadline, the whole group is SIGKILLed, so
    no child or grandchild (Postgres backends, a shell's pipeline, a test's helper that ignores
    SIGTERM) outlives it. ``first_to_group`` sends the first signal to the whole group as well, for
    commands whose children should each get the chance to stop (a shell pipeline); servers get it
    alone and stop their own children.
    """
    popen = target if isinstance(target, subprocess.Popen) else None
    pid = popen.pid if popen is not None else int(target)  # type: ignore[arg-type]
    if popen is not None and popen.returncode is not None:
        return popen.returncode  # reaped before: its PID is no longer ours to signal
    if popen is None and not pid_alive(pid, create_time):
        return None

    def running() -> bool:
        if popen is None:
            return pid_alive(pid, create_time)
        # Without reaping (WNOWAIT): an exited leader stays a zombie, so its PID (= the group's ID)
        # cannot be reused before the group is killed below.
        try:
            return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
        except ChildProcessError:
            return popen.poll() is None

    if running():
        with contextlib.suppress(ProcessLookupError):
            if first_to_group:
                os.killpg(pid, first_signal)
            else:
                os.kill(pid, first_signal)
        deadline = Deadline.after(grace)
        delay = 0.002
        while running() and not deadline.expired:
            sleep(min(delay, deadline.remaining))
            delay = min(delay * 2, 0.05)
        if running():
            log.warning("process %s did not stop within %gs of signal %s; killing it", pid, grace, first_signal)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(pid, signal.SIGKILL)
        elif running():
            os.kill(pid, signal.SIGKILL)
    if popen is None:
        return None
    try:
        return popen.wait(timeout=KILL_WAIT)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not fail
        log.warning("process %s survived SIGKILL", pid)
        return None


# Terminal escape sequences (colours: RabbitMQ's console log is ``\x1b[38;5;160m...\x1b[0m``): never shown.
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")


def strip_ansi(text: str) -> str:
    """``text`` without terminal escape sequences (colours, cursor moves): a server log as plain text."""
    return _ANSI.sub("", text) if "\x1b" in text else text


def log_tail(path: Path | None, lines: int = 30, *, max_bytes: int = 64 * 1024) -> str:
    """The last ``lines`` lines of a log file ("" when it does not exist), without terminal escapes."""
    if path is None:
        return ""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return ""
    text = strip_ansi(data.decode("utf-8", errors="replace"))
    return "\n".join(text.splitlines()[-lines:])
