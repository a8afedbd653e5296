"""Stalls: freeze a server, one Postgres session, or a worker process (SIGSTOP), then resume it.

A stall is not a death: a stopped process keeps its sockets, its locks and its place in every
queue, it just stops answering. That is what a long GC pause, a swapped-out VM, a saturated
disk or a half-dead network looks like from the other side, and what timeouts, heartbeats and
lease expiries exist for. ``with paused(target):`` sends SIGSTOP, waits until the kernel reports
the process(es) stopped, and always sends SIGCONT on the way out.

What to pause, and what it simulates:

============================ ==================================================================
``paused(postgres)``         the whole server (the postmaster and every child: backends too):
                             every query and every new connection hangs — a frozen database host.
``paused(conn)``             the one backend behind a psycopg connection: that session freezes
                             mid-transaction *holding its locks*; other sessions queue behind its
                             row locks, everything else works — a stuck worker's connection.
``paused(postgres,           the postmaster alone: open sessions keep working, new connections
tree=False)``                hang in ``connect`` — a server that stopped accepting.
``paused(valkey)``           Valkey (one process): every command blocks until it resumes; stream
                             idle times keep growing (they are wall-clock), so a pause past a
                             consumer's claim timeout makes its entries claimable.
``paused(proc)``             a worker process (``subprocess.Popen``, ``multiprocessing.Process``,
                             ``psutil.Process``, pid): it holds its jobs and stops acking.
============================ ==================================================================

Pausing a server stalls every test using it — under pytest-xdist, other workers' tests too;
prefer pausing one backend where that models the fault. A paused process's pending signals
(``pg_terminate_backend``'s SIGTERM included) take effect only once it resumes.

Nothing can hang: a watchdog resumes the target after ``max_seconds`` even if the ``with`` block is
stuck in a call to the paused process (a client without a timeout), and the block then fails
with :class:`~testlane.core.errors.SeamError` saying so.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from testlane.core.errors import SeamError
from testlane.core.waiting import wait_until

if TYPE_CHECKING:
    import psycopg

    from testlane.seams.kill import ProcessLike
    from testlane.services.base import Server

__all__ = ["Pause", "paused"]

STATE_TIMEOUT = 5.0  # seconds for the kernel to report a signalled process stopped/running


@dataclass
class Pause:
    """A paused target: what it is, the process ids stopped, and :meth:`resume` to end the stall early."""

    what: str
    pids: tuple[int, ...]
    tree: bool = False
    resumed: bool = False
    resumed_by_watchdog: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def resume(self) -> None:
        """Send SIGCONT now (idempotent); the process(es) run again before this returns."""
        with self._lock:
            if self.resumed:
                return
            self.resumed = True
            _signal(self, signal.SIGCONT)
        _wait_state(self, stopped=False)

    def _watchdog(self) -> None:
        if not self.resumed:
            self.resumed_by_watchdog = True
            with contextlib.suppress(Exception):
                self.resume()


def _descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def _signal(pause: Pause, sig: int) -> None:
    try:
        for pid in pause.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if pause.tree and sig == signal.SIGSTOP:
            # The root is stopped first, so it forks nothing new while its descendants are listed.
            children = [pid for pid in _descendants(pause.pids[0]) if pid not in pause.pids]
            for pid in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            pause.pids = (*pause.pids, *children)
    except PermissionError as exc:
        raise SeamError(
            f"not allowed to signal {pause.what}: {exc}",
            hint="pausing needs the process to run as your user (or testlane to run as root)",
        ) from exc


def _wait_state(pause: Pause, *, stopped: bool) -> None:
    import psutil

    def reached() -> bool:
        for pid in pause.pids:
            try:
                status = psutil.Process(pid).status()
            except psutil.NoSuchProcess:
                continue
            if status in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
                continue  # exited (a backend whose stopped parent cannot reap it): nothing to stop or resume
            if (status == psutil.STATUS_STOPPED) != stopped:
                return False
        return True

    state = "stopped" if stopped else "running again"
    wait_until(reached, timeout=STATE_TIMEOUT, what=f"{pause.what} to be {state}")


def _local_process(pid: int, what: str) -> None:
    import psutil

    if pid in (0, 1, os.getpid()):
        raise SeamError(f"refusing to pause pid {pid} ({what}): this process, or init")
    if not psutil.pid_exists(pid):
        raise SeamError(
            f"cannot pause {what}: no process {pid} on this machine",
            hint="pausing needs a server on this machine (testlane's own are); an existing server given by URL "
            "cannot be paused from here",
        )


def _resolve(target: Any, tree: bool | None) -> Pause:
    """What to stop: a server handle's process tree, a connection's backend, or a process."""
    import psutil

    if hasattr(target, "instance") and hasattr(target, "url"):  # a testlane server handle
        pid = target.pid
        what = f"{target.instance.name} at {target.url}"
        if pid is None:
            backend = getattr(target.instance, "backend", "unknown")
            raise SeamError(
                f"cannot pause {what}: it is not a process on this machine ({backend} backend)",
                hint="pausing needs a server testlane runs as a process here (the embedded and local backends); "
                "a container can be paused with `podman pause`/`docker pause`, an existing server not from here",
            )
        _local_process(pid, what)
        if tree is False:
            return Pause(f"{what} (pid {pid} only)", (pid,))
        return _tree_pause(what, pid)
    info = getattr(target, "info", None)
    if info is not None and hasattr(info, "backend_pid"):  # a psycopg connection
        pid = int(info.backend_pid)
        what = f"Postgres backend {pid}"
        _local_process(pid, what)
        return _tree_pause(what, pid) if tree else Pause(what, (pid,))
    pid = target if isinstance(target, int) else getattr(target, "pid", None)
    if not isinstance(pid, int):
        raise SeamError(
            f"cannot pause {target!r}",
            hint="pass a server fixture (postgres, valkey), a psycopg connection, a process object or a pid",
        )
    try:
        name = psutil.Process(pid).name()
    except psutil.Error:
        name = "process"
    what = f"{name} (pid {pid})"
    _local_process(pid, what)
    return _tree_pause(what, pid) if tree else Pause(what, (pid,))


def _tree_pause(what: str, pid: int) -> Pause:
    """The process and all its descendants (Postgres backends call setsid(): a process group would miss them)."""
    return Pause(what, (pid,), tree=True)


@contextlib.contextmanager
def paused(
    target: Server | psycopg.Connection[object] | ProcessLike | int,
    *,
    tree: bool | None = None,
    max_seconds: float = 30.0,
) -> Iterator[Pause]:
    """Freeze ``target`` (SIGSTOP) for the ``with`` block; resume it (SIGCONT) however the block ends.

    ``target``: a testlane server handle (``postgres``, ``valkey``: the process and its descendants
    unless ``tree=False``), a psycopg connection (its backend), or a process (``Popen``,
    ``multiprocessing.Process``, ``psutil.Process``, pid; ``tree=True`` for its descendants too). Returns
    once the kernel reports the target stopped. A watchdog resumes it after ``max_seconds``; the
    block then raises :class:`~testlane.core.errors.SeamError` (unless it is already raising).
    """
    __tracebackhide__ = True
    pause = _resolve(target, tree)
    _signal(pause, signal.SIGSTOP)
    watchdog = threading.Timer(max_seconds, pause._watchdog)
    watchdog.name = "testlane-seams-watchdog"
    watchdog.daemon = True
    try:
        _wait_state(pause, stopped=True)
        watchdog.start()
        yield pause
    finally:
        watchdog.cancel()
        pause.resume()
    if pause.resumed_by_watchdog:
        raise SeamError(
            f"{pause.what} stayed paused longer than max_seconds={max_seconds:g}; the watchdog resumed it",
            hint="something in the with-block waited on the paused process without a timeout: give that call a "
            "timeout (socket_timeout, connect_timeout, statement_timeout), or raise max_seconds",
        )
