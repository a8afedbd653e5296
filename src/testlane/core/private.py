"""Private run state: directories no other local user can enter, files no other local user can read.

A run's directory (``<data_dir>/<run id>/``) holds its servers' sockets and data and, in
``services.json`` and the registry records, their passwords. So:

* a run directory is **0700**, owned by the user testlane runs as; as root, when servers run as the
  unprivileged service user, **0710 root:<the service user's group>**: that user may pass through
  to its own instance directory (0700, its own), list nothing, and read nothing else;
* a file that may hold a credential is written by :func:`write_private_file`: created **0600** with
  ``O_CREAT | O_EXCL | O_NOFOLLOW`` under a fresh temporary name in the same directory, then renamed
  over the target, so it is never readable by others, not even for an instant, and a reader never
  sees half of it.

The modes do not depend on the umask. A directory that exists already must be a real directory
(not a symbolic link) owned by us, or it is refused: another user cannot prepare one for us.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from testlane.core.errors import ConfigError, config_errors

__all__ = [
    "PRIVATE_DIR_MODE",
    "PRIVATE_FILE_MODE",
    "SHARED_DIR_MODE",
    "TRAVERSABLE_DIR_MODE",
    "ensure_private_dir",
    "write_private_file",
]

PRIVATE_DIR_MODE = 0o700
SHARED_DIR_MODE = 0o710  # group (the service user's) may traverse, not list
TRAVERSABLE_DIR_MODE = 0o711  # everyone may traverse, not list
PRIVATE_FILE_MODE = 0o600


def ensure_private_dir(
    path: Path, *, group: int | None = None, traversable: bool = False, parents: bool = False
) -> Path:
    """Create ``path`` as a private directory, or check and fix it (``parents``: create missing parents).

    ``group``: a group id that must be able to traverse the directory (the service user's, as root):
    the directory becomes 0710 with that group. ``traversable``: every user may pass through, not list
    (0711: the data root, above run directories that are private themselves). Otherwise the directory
    is 0700, unless it was already opened to a group (0710) by an earlier call, which is kept (servers
    may be running in it).

    Raises :class:`ConfigError` when the path cannot be created, or is a symbolic link or a directory
    owned by another user.
    """
    mode = TRAVERSABLE_DIR_MODE if traversable else SHARED_DIR_MODE if group is not None else PRIVATE_DIR_MODE
    with config_errors(
        OSError,
        lambda exc: f"cannot create testlane's directory {path}: {exc.strerror}.",
        hint="set data_dir (TESTLANE_DATA_DIR) to a writable directory, preferably on tmpfs.",
    ):
        if parents:
            path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, mode)
        st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise ConfigError(
            f"{path} is not a directory owned by the current user; refusing to use it.",
            hint="remove it, or set data_dir (TESTLANE_DATA_DIR) elsewhere.",
        )
    current = stat.S_IMODE(st.st_mode)
    if group is not None and st.st_gid != group:
        os.chown(path, -1, group)
    if group is None and not traversable and current in (PRIVATE_DIR_MODE, SHARED_DIR_MODE):
        return path
    if current != mode:
        os.chmod(path, mode)
    return path


def write_private_file(path: Path, data: str | bytes, *, owner: tuple[int, int] | None = None) -> Path:
    """Write ``data`` to ``path`` atomically, readable and writable by its owner only (0600).

    ``owner`` (uid, gid) hands the file to another user (as root: the service user a server runs as).

    The content goes to a new temporary file in the same directory, created with mode 0600 and
    ``O_EXCL`` (never an existing file, never through a symbolic link), which then replaces ``path``.
    Raises ``OSError`` when the directory is not writable.
    """
    payload = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(tmp, flags, PRIVATE_FILE_MODE)
    try:
        try:
            os.fchmod(fd, PRIVATE_FILE_MODE)  # exactly 0600, whatever the umask took away
            if owner is not None:
                os.fchown(fd, *owner)
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path
