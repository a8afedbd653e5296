"""Deaths: end a Postgres backend, a client connection, a process or a thread, on purpose.

Crash-recovery contracts (an advisory lock is released when its holder dies, a job held by a dead
worker is redelivered) can only be tested by really killing something. Each helper waits, under a
deadline, until the death has happened, so the next line of the test sees its consequences:

* :func:`terminate_backend` — the server ends a session (``pg_terminate_backend``): what an
  administrator, ``idle_in_transaction_session_timeout`` or a failover does. Returns once the
  backend process has exited and released its locks.
* :func:`kill_connection` — the *client* vanishes mid-transaction: its socket is shut down under
  the driver, as when a worker process dies or the network drops. The server notices the end of
  the stream, rolls back and exits; pass ``via=`` to wait for that.
* :func:`kill_process` — SIGKILL (or another signal) to a worker process; waits for it to exit.
* :func:`stop_thread` — Python cannot kill a thread. A worker *thread* can only be asked to stop
  (a :class:`threading.Event` it checks) — a cooperative stop, not a crash: code after its last
  check (an ``except``/``finally`` that acks or releases) still runs. To test a real crash, run the
  worker in a process and :func:`kill_process` it; ``stop_thread`` is for winding threads down
  within a deadline, and says where a thread is stuck if it does not stop.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
from typing import TYPE_CHECKING, Protocol

from testlane.core.errors import SeamError
from testlane.core.waiting import WaitTimeout
from testlane.seams._pg import admin_connection, backend_alive, backend_pid, wait_backend_gone
from testlane.seams._where import thread_location

if TYPE_CHECKING:
    from testlane.seams._pg import PgConnection, PgVia

__all__ = ["ProcessLike", "kill_connection", "kill_process", "stop_thread", "terminate_backend"]


class ProcessLike(Protocol):
    """A process object: :class:`subprocess.Popen`, :class:`multiprocessing.Process`, :class:`psutil.Process`
    (``pid`` is ``None`` before it started)."""

    @property
    def pid(self) -> int | None: ...


def terminate_backend(target: PgConnection | int, *, via: PgVia, timeout: float = 10.0) -> int:
    """End the Postgres backend behind ``target`` (a psycopg connection, or a backend pid); return its pid.

    ``via`` reaches the same server: ``pg_database``, the ``postgres`` fixture, a URL, or another
    open connection. Returns once the backend has exited — its transaction rolled back, its
    session and transaction locks (advisory locks included) released. The connection object, if
    one was given, is now broken: its next use raises ``psycopg.OperationalError``.
    """
    __tracebackhide__ = True
    pid = target if isinstance(target, int) else backend_pid(target)
    with admin_connection(via) as admin:
        if admin.info.backend_pid == pid:
            raise SeamError(f"terminate_backend was asked to end backend {pid} through that same backend")
        if not backend_alive(admin, pid):
            raise SeamError(
                f"no backend with pid {pid} on the server of {via!r}",
                hint="it has exited already, or the connection and via= point at different servers",
            )
        if admin.info.server_version >= 140000:  # waits for the exit itself
            row = admin.execute("SELECT pg_terminate_backend(%s, %s)", (pid, max(1, int(timeout * 1000)))).fetchone()
            if not (row and row[0]):
                raise WaitTimeout(f"timed out after {timeout:g}s waiting for Postgres backend {pid} to exit")
        else:  # pragma: no cover - servers before 14 (local backends only)
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            wait_backend_gone(admin, pid, timeout=timeout, why="after pg_terminate_backend")
    return pid


def kill_connection(conn: PgConnection, *, via: PgVia | None = None, timeout: float = 10.0) -> int:
    """Cut a psycopg connection (sync or async) from the client side, as if its process died; return the backend pid.

    The connection's socket is shut down under the driver (the descriptor itself stays the
    driver's, so nothing else can reuse it): the server reads end-of-stream, rolls back the open
    transaction and ends the session. With ``via`` (as for :func:`terminate_backend`) this waits
    until the backend has exited and released its locks; without it, the server notices on its
    own an instant later. The connection object is now broken: its next use raises
    ``psycopg.OperationalError``; close it as usual.
    """
    __tracebackhide__ = True
    pid = backend_pid(conn)
    try:
        fd = conn.fileno()
    except Exception as exc:
        raise SeamError(f"cannot reach the socket of {conn!r}: {exc}", hint="is it closed already?") from exc
    # shutdown() acts on the socket, which the duplicate shares; closing the duplicate leaves the
    # driver's descriptor open (closing that would let a new socket reuse its number under libpq).
    dup = socket.socket(fileno=os.dup(fd))
    try:
        with contextlib.suppress(OSError):
            dup.shutdown(socket.SHUT_RDWR)
    finally:
        dup.close()
    if via is not None:
        with admin_connection(via) as admin:
            wait_backend_gone(admin, pid, timeout=timeout, why="after its client connection was cut")
    return pid


def _pid_of(proc: ProcessLike | int) -> int:
    if isinstance(proc, int):
        return proc
    pid = getattr(proc, "pid", None)
    if not isinstance(pid, int):
        raise SeamError(
            f"{proc!r} has no process id (not started yet?)",
            hint="pass a subprocess.Popen, a multiprocessing.Process, a psutil.Process or a pid",
        )
    return pid


def kill_process(
    proc: ProcessLike | int, *, sig: int = signal.SIGKILL, timeout: float = 10.0, group: bool = False
) -> int | None:
    """Send ``sig`` (default SIGKILL) to a process and wait until it has exited; return its exit code.

    ``proc`` is a :class:`subprocess.Popen`, a :class:`multiprocessing.Process`, a
    :class:`psutil.Process` or a pid; our own children are reaped. ``group=True`` signals the
    process's whole process group (start it with ``start_new_session=True``; pytest's own group is
    refused). A process that has already exited is not an error. The exit code is ``None`` when it
    cannot be known (a process that is not our child).
    """
    __tracebackhide__ = True
    import psutil

    pid = _pid_of(proc)
    if pid in (0, 1, os.getpid()):
        raise SeamError(f"kill_process refuses to signal pid {pid} (this process, or init)")
    if isinstance(proc, subprocess.Popen) and proc.poll() is not None:
        return proc.returncode
    try:
        if group:
            pgid = os.getpgid(pid)
            if pgid == os.getpgrp():
                raise SeamError(
                    f"process {pid} is in the test run's own process group; signalling the group would kill the run",
                    hint="start the process with start_new_session=True, or kill it alone (group=False)",
                )
            os.killpg(pgid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass  # already gone: fall through to reap it
    except PermissionError as exc:
        raise SeamError(f"not allowed to signal process {pid}: {exc}") from exc
    what = f"process {pid} to exit after signal {signal.Signals(sig).name}"
    if isinstance(proc, subprocess.Popen):
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what}") from None
    from multiprocessing.process import BaseProcess

    if isinstance(proc, BaseProcess):  # multiprocessing.Process, whatever its start method
        proc.join(timeout)
        if proc.is_alive():
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what}")
        code: int | None = proc.exitcode
        return code
    try:
        ps = proc if isinstance(proc, psutil.Process) else psutil.Process(pid)
        return ps.wait(timeout=timeout)
    except psutil.NoSuchProcess:
        return None
    except psutil.TimeoutExpired:
        raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what}") from None


def stop_thread(thread: threading.Thread, stop: threading.Event, *, timeout: float = 10.0) -> None:
    """Set ``stop`` and wait until ``thread`` has finished; say where it is stuck if it does not.

    A cooperative stop (see the module docstring): the thread must check ``stop`` (and use
    timeouts on its blocking calls). For a crash, run the worker in a process and use
    :func:`kill_process`.
    """
    __tracebackhide__ = True
    stop.set()
    thread.join(timeout)
    if thread.is_alive():
        raise WaitTimeout(
            f"thread {thread.name!r} did not stop within {timeout:g}s of its stop event being set; "
            f"it is at {thread_location(thread)}. Python cannot kill a thread: make it check the event "
            "between blocking calls that have timeouts, or run it in a process and use kill_process()"
        )
