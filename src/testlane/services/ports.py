"""Free ports that two runs starting at the same moment never share.

The kernel hands out a free port for ``bind(("127.0.0.1", 0))``, but once that
probe socket is closed nothing stops another process from being handed the same
number before our server binds it. So each candidate is also *reserved*: an
exclusive ``flock`` on ``<ports_dir>/<port>.lock``, held until the server is
listening (after which the kernel itself keeps the port ours). A candidate whose
lock is held elsewhere is skipped. A port taken by an unrelated program in the
remaining window makes the server fail to bind; callers retry with a new port.

Releasing deletes the lock file while still holding its lock, so files do not pile up. Another
process may have opened the file just before: once it gets the lock, it holds a lock on a deleted
file, which reserves nothing. So a lock counts only when the path still names the locked file (same
inode, checked after locking); otherwise the taker opens the path again. ``reap`` removes lock files
left by processes that died holding none (:func:`sweep_port_locks`).

Hand-written because the libraries that pick ports (portpicker, pytest-xprocess'
helpers) only probe; none reserves across processes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
from pathlib import Path

from testlane.core.closing import Closing
from testlane.core.config import set_in_project
from testlane.core.errors import PortUnavailableError

__all__ = ["PortReservation", "port_in_use", "reserve_port", "sweep_port_locks"]


class PortReservation(Closing):
    """A port held for us until :meth:`release` (or the end of a ``with`` block)."""

    def __init__(self, port: int, fd: int | None, path: Path | None = None) -> None:
        self.port = port
        self._fd = fd
        self._path = path

    def release(self) -> None:
        """Delete the lock file (while holding its lock, see the module docstring), then unlock."""
        if self._fd is not None:
            if self._path is not None:
                _unlink_held(self._path, self._fd)
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def close(self) -> None:
        """The same as :meth:`release` (so ``with reservation:`` releases it)."""
        self.release()

    def __repr__(self) -> str:
        return f"PortReservation(port={self.port}, held={self._fd is not None})"


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True if something already listens on (or holds) ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def _lock(ports_dir: Path, port: int) -> int | None:
    """An fd holding the lock of ``<ports_dir>/<port>.lock``, or None when someone else holds it."""
    path = ports_dir / f"{port}.lock"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        if _names(path, fd):
            return fd
        os.close(fd)  # the previous holder deleted this file as we opened it: take the new one


def _names(path: Path, fd: int) -> bool:
    """True when ``path`` still names the file open at ``fd``."""
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)


def _unlink_held(path: Path, fd: int) -> None:
    if _names(path, fd):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def sweep_port_locks(ports_dir: Path) -> int:
    """Delete the lock files nobody holds (left by processes killed before they released); return
    how many. Each is locked first, so a reservation in progress is never disturbed."""
    removed = 0
    with contextlib.suppress(FileNotFoundError):
        for path in ports_dir.glob("*.lock"):
            try:
                fd = os.open(path, os.O_RDWR)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            if _names(path, fd):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                    removed += 1
            os.close(fd)
    return removed


def reserve_port(
    ports_dir: Path, *, host: str = "127.0.0.1", fixed: int = 0, setting: str = "", attempts: int = 50
) -> PortReservation:
    """Reserve a free port (or check and reserve ``fixed`` when non-zero: the value of ``setting``, the key the
    error's hint names, e.g. ``postgres.port``)."""
    if fixed:
        fd = _lock(ports_dir, fixed)
        if fd is None or port_in_use(fixed, host):
            if fd is not None:
                PortReservation(fixed, fd, ports_dir / f"{fixed}.lock").release()
            where = f"{setting} to 0 ({set_in_project(setting, '0')})" if setting else "the port to 0"
            raise PortUnavailableError(
                f"port {fixed} on {host} is already in use.",
                hint=f"stop what listens there, or set {where} so testlane picks a free one.",
            )
        return PortReservation(fixed, fd, ports_dir / f"{fixed}.lock")
    for _ in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
            port = int(probe.getsockname()[1])
        fd = _lock(ports_dir, port)
        if fd is not None:
            return PortReservation(port, fd, ports_dir / f"{port}.lock")
    raise PortUnavailableError(  # pragma: no cover - needs thousands of concurrent runs
        f"no free port on {host} after {attempts} attempts.",
        hint="too many testlane servers are running; see `testlane services status` and `testlane reap`.",
    )
