"""The cache of initialized data directories: who may change it, how it is copied, what it leaves.

Threat model (docs/services.md): as root, servers run as an unprivileged *service user*, and anything
a server runs (``COPY ... TO PROGRAM``, an extension, a test's own commands through the database)
runs as that user. What one run's server does must not change what a later run starts from. So, as
root, every entry stored in the cache is **sealed** (:func:`seal`): owned by root, group the service
user's group, directories 0750 and files 0640: the service user can read and copy it, not change it.
Each instance starts from its own copy in its private instance directory (:func:`copy_out`), made
by the service user, so the copy is the service user's and the cache stays root's. An entry that is
not owned by the invoking user is never used (:func:`trusted`): it is rebuilt.

:data:`LAYOUT` is part of every cache key, so entries written before a layout change (for example the
service-user-owned entries of earlier versions) are never reused.

Entries are built in a *staging* directory next to their final place and renamed into it at the end.
A staging directory is named ``.<name>.<pid>.tmp`` after the process building it (:func:`staging_path`),
so that one left by a killed process is recognized and removed by the next start and by
``testlane reap`` (:func:`sweep_staging`) while a build in progress, whose process is alive, is left alone.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

from testlane.core.errors import ServiceStartError
from testlane.services.privileges import ServiceUser
from testlane.services.process import pid_alive

__all__ = ["LAYOUT", "copy_out", "seal", "staging_path", "store", "sweep_staging", "trusted"]

log = logging.getLogger("testlane")

# 2: entries sealed (root-owned, read-only to the service user); 1 (implicit): owned by the service user.
LAYOUT = 2

_STAGING = re.compile(r"^\..+\.(?P<pid>\d+)\.tmp$")


def staging_path(final: Path) -> Path:
    """Where this process builds ``final`` before renaming it into place: ``.<name>.<pid>.tmp``."""
    return final.with_name(f".{final.name}.{os.getpid()}.tmp")


def sweep_staging(cache_dir: Path) -> list[Path]:
    """Remove staging directories left by dead processes, up to three levels below ``cache_dir``.

    Returns the paths removed. A staging directory whose process is alive (a build in progress, in
    this or another run) is left alone; so is anything not named like a staging directory.
    """
    removed: list[Path] = []
    if not cache_dir.is_dir():
        return removed
    levels = [cache_dir]
    for _depth in range(3):
        below: list[Path] = []
        for directory in levels:
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            for entry in entries:
                if not entry.is_dir(follow_symlinks=False):
                    continue
                match = _STAGING.match(entry.name)
                if match is None:
                    below.append(Path(entry.path))
                elif not pid_alive(int(match["pid"])):
                    log.debug("removing %s, left by process %s (gone)", entry.path, match["pid"])
                    shutil.rmtree(entry.path, ignore_errors=True)
                    if not os.path.lexists(entry.path):
                        removed.append(Path(entry.path))
        levels = below
    return removed


def seal(path: Path, user: ServiceUser | None) -> None:
    """Make ``path`` (a tree) read-only to the service user: owned by us, group ``user``'s, 0750/0640.

    Without a service user (not root) the server runs as the invoking user, who owns the cache anyway;
    the tree is then only made private (0700/0600). Symbolic links are left as they are and never
    followed: every change goes through a descriptor opened with ``O_NOFOLLOW`` below a directory
    descriptor (``os.fwalk``), so a link swapped in cannot redirect it.
    """
    gid = user.gid if user is not None else -1
    dir_mode, file_mode = (0o750, 0o640) if user is not None else (0o700, 0o600)
    uid = os.getuid()

    def fix(name: str | Path, mode: int, dir_fd: int | None = None) -> None:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return  # a symbolic link
            raise
        try:
            if user is not None:
                os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)

    fix(path, dir_mode)
    for _dirpath, dirnames, filenames, dirfd in os.fwalk(path, follow_symlinks=False):
        for name in dirnames:
            fix(name, dir_mode, dirfd)
        for name in filenames:
            fix(name, file_mode, dirfd)


def store(
    source: Path, final: Path, user: ServiceUser | None, *, leave_out: tuple[str, ...] = (), sparse: bool = False
) -> None:
    """Put a copy of the directory ``source`` into the cache at ``final``, sealed, in one rename.

    The copy is made by us (``cp -a``) into a staging directory only we can enter, so no process of the
    service user can reach it, or hold a descriptor on any of its files, before it is sealed; files
    named in ``leave_out`` (top level) are not kept. With ``sparse``, runs of zeros become holes
    (``cp --sparse=always``), which every :func:`copy_out` keeps (cp's default ``--sparse=auto``) without
    reading them: MariaDB's 70 MB ``ibdata1`` is mostly zeros, and its copies go from 77 MB to 6.5 MB.
    Raises ServiceStartError when the copy fails.
    """
    holder = staging_path(final)
    shutil.rmtree(holder, ignore_errors=True)
    holder.mkdir(mode=0o700)
    try:
        entry = holder / final.name
        argv = ["cp", "-a", *(["--sparse=always"] if sparse else []), str(source), str(entry)]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ServiceStartError(f"could not store {final} in the cache: {proc.stderr.strip()}")
        for name in leave_out:
            (entry / name).unlink(missing_ok=True)
        seal(entry, user)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(entry, final)
    finally:
        shutil.rmtree(holder, ignore_errors=True)


def trusted(path: Path) -> bool:
    """True when the cache entry ``path`` exists and belongs to the invoking user (so it was sealed)."""
    try:
        return path.lstat().st_uid == os.getuid() and not path.is_symlink()
    except OSError:
        return False


@functools.cache
def _setpriv() -> str | None:
    return shutil.which("setpriv")


def copy_out(source: Path, target: Path, user: ServiceUser | None) -> None:
    """Copy the cache entry ``source`` to ``target`` (a new directory), owned by whoever runs the server.

    As root the copy is made by the service user (``cp -R``: its files become the service user's, as a
    server's data directory must be; the cache, which it cannot write, stays root's; root never works
    inside a directory the service user controls). Otherwise ``cp -a``. One ``cp`` process: on tmpfs it
    beats a per-file Python copy by far. The identity switch goes through ``setpriv`` (util-linux) when
    it is there: subprocess can only switch users after a full ``fork()`` of this process (15-20 ms for
    a pytest process on a busy machine), while an ``exec`` of setpriv costs about 1 ms more than
    ``cp`` alone (``vfork``).
    Raises ServiceStartError when the copy fails.
    """
    argv = ["cp", "-R" if user is not None else "-a", str(source), str(target)]
    switch: dict[str, object] = {}
    if user is not None:
        setpriv = _setpriv()
        if setpriv:
            argv = [setpriv, f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups", *argv]
        else:
            switch = {"user": user.uid, "group": user.gid, "extra_groups": []}
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, cwd="/", **switch)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise ServiceStartError(
            f"could not copy the cached data directory {source} to {target}: {proc.stderr.strip()}",
            hint="check free space on the data directory's filesystem (`df -h /dev/shm`) and `testlane doctor`.",
        )
    os.chmod(target, 0o700)
