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

Keys and entries. A base cluster (or MariaDB data directory) is keyed by the *content* of the server
binary (:func:`content_digest`), not by where it is installed: every virtual environment holding the
same PostgreSQL build shares one entry. An entry is a directory ``<cache>/<kind dir>/<key>`` holding the
data (``cluster``/``data``), ``meta.json`` (kind, layout, version) and, for snapshots, ``used-by/<project
key>`` records of the projects that use it (:func:`claim`; retention is per project), with a lock file next to
it, ``<key>.lock`` (:func:`entry_lock`): a build holds it exclusively, a copy out of the entry holds it
shared (:func:`copy_out`), and removing an entry (:func:`remove_entry`, ``testlane cache prune``,
snapshot retention) takes it exclusively without waiting, so an entry being built or copied is never
removed. The entry directory's modification time is its *last use* (:func:`touch`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

from testlane.core.errors import ServiceStartError
from testlane.services.privileges import ServiceUser
from testlane.services.process import pid_alive

__all__ = [
    "KINDS",
    "LAYOUT",
    "CacheEntry",
    "building",
    "claim",
    "claims",
    "content_digest",
    "copy_out",
    "entry_lock",
    "list_entries",
    "older_than",
    "read_meta",
    "remove_entry",
    "seal",
    "staging_path",
    "store",
    "sweep_staging",
    "touch",
    "trusted",
    "unclaim",
    "write_meta",
]

log = logging.getLogger("testlane")

# 3: base entries keyed by the binary's content, meta.json in every entry, the lock next to the entry.
# 2: entries sealed (root-owned, read-only to the service user); 1 (implicit): owned by the service user.
LAYOUT = 3

# kind -> (directory under the cache, the data directory inside an entry)
KINDS: dict[str, tuple[str, str]] = {
    "postgres": ("postgres", "cluster"),
    "snapshot": ("snapshots", "cluster"),
    "mariadb": ("mariadb", "data"),
    "bin": ("bin", ""),
}
META = "meta.json"

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
    While copying, the entry's lock is held shared, so ``testlane cache prune`` leaves the entry alone.
    Raises ServiceStartError when the copy fails or the entry is gone.
    """
    argv = ["cp", "-R" if user is not None else "-a", str(source), str(target)]
    switch: dict[str, object] = {}
    if user is not None:
        setpriv = _setpriv()
        if setpriv:
            argv = [setpriv, f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups", *argv]
        else:
            switch = {"user": user.uid, "group": user.gid, "extra_groups": []}
    with _shared(entry_lock(source.parent)):
        if not source.exists():
            raise ServiceStartError(
                f"the cache entry {source.parent} was removed while this run was starting.",
                hint="run again (`testlane cache prune` removed it).",
            )
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, cwd="/", **switch)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise ServiceStartError(
            f"could not copy the cached data directory {source} to {target}: {proc.stderr.strip()}",
            hint="check free space on the data directory's filesystem (`df -h /dev/shm`) and `testlane doctor`.",
        )
    os.chmod(target, 0o700)


# -- content keys ---------------------------------------------------------------------------------------


def content_digest(exe: Path, cache_dir: Path) -> str:
    """The sha256 (hex) of the file ``exe``'s content, remembered per (path, size, mtime, inode).

    Hashing a 10 MB ``postgres`` costs about 20 ms; the index (``<cache_dir>/digests/``, one small file
    per identity, private to the invoking user) makes every later start a ``stat`` and a 64-byte read.
    A file changed in place gets a new mtime or size, hence a new identity and a fresh hash.
    Raises OSError when ``exe`` cannot be read.
    """
    st = exe.stat()
    ident = f"{exe.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}|{st.st_dev}"
    index = cache_dir / "digests"
    record = index / hashlib.sha256(ident.encode()).hexdigest()[:32]
    try:
        value = record.read_text().strip()
        if re.fullmatch(r"[0-9a-f]{64}", value) and record.lstat().st_uid == os.getuid():
            return value
    except OSError:
        pass
    digest = hashlib.sha256()
    with open(exe, "rb") as f:
        for block in iter(functools.partial(f.read, 1 << 20), b""):
            digest.update(block)
    value = digest.hexdigest()
    try:
        index.mkdir(mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=index, prefix=".", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(value + "\n")
        os.replace(tmp, record)
    except OSError as exc:  # a read-only cache still works: it hashes each time
        log.debug("could not remember the digest of %s: %s", exe, exc)
    log.debug("sha256 of %s: %s", exe, value)
    return value


# -- entries --------------------------------------------------------------------------------------------


def entry_lock(entry: Path) -> Path:
    """The lock file of the cache entry ``entry``: ``<key>.lock`` next to it."""
    return entry.with_name(f"{entry.name}.lock")


def building(entry: Path, timeout: float) -> FileLock:
    """The exclusive lock a build (or a removal, with ``timeout=0``) of ``entry`` holds; file mode 0600."""
    return FileLock(str(entry_lock(entry)), timeout=timeout, mode=0o600)


def write_meta(entry: Path, kind: str, *, project: str = "", version: str = "", **extra: str) -> None:
    """Record what the entry is (``meta.json``: kind, layout, project, version), replaced in one rename."""
    meta = {"kind": kind, "layout": LAYOUT, "project": project, "version": version, **extra}
    fd, tmp = tempfile.mkstemp(dir=entry, prefix=".meta.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(meta, f)
    os.chmod(tmp, 0o600)  # only testlane (the invoking user) reads it
    os.replace(tmp, entry / META)


def read_meta(entry: Path) -> dict[str, object]:
    """The entry's ``meta.json`` (empty when missing or unreadable: an entry of an earlier layout)."""
    try:
        with open(entry / META, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def touch(entry: Path) -> None:
    """Mark ``entry`` used now (its directory's mtime), so age-based pruning keeps it."""
    with contextlib.suppress(OSError):
        os.utime(entry)


USERS = "used-by"  # inside an entry: one file per project that uses it, named by the project's key


def claim(entry: Path, key: str, project: Path) -> None:
    """Record that the project at ``project`` (key ``key``) used ``entry`` now: ``used-by/<key>``,
    holding the project's path, its mtime the project's last use. Also :func:`touch`."""
    users = entry / USERS
    with contextlib.suppress(OSError):
        users.mkdir(mode=0o750 if os.getuid() == 0 else 0o700, exist_ok=True)
        record = users / key
        if not record.exists():
            fd, tmp = tempfile.mkstemp(dir=users, prefix=".", suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                f.write(str(project))
            os.chmod(tmp, 0o640 if os.getuid() == 0 else 0o600)
            os.replace(tmp, record)
        os.utime(record)
    touch(entry)


def claims(entry: Path) -> dict[str, tuple[str, float]]:
    """The projects that used ``entry``: key -> (project path, last use as a Unix time)."""
    found: dict[str, tuple[str, float]] = {}
    try:
        records = list(os.scandir(entry / USERS))
    except OSError:
        return found
    for record in records:
        if record.name.startswith(".") or not record.is_file(follow_symlinks=False):
            continue
        with contextlib.suppress(OSError):
            found[record.name] = (Path(record.path).read_text()[:4096], record.stat(follow_symlinks=False).st_mtime)
    return found


def unclaim(entry: Path, key: str) -> None:
    """The project ``key`` no longer keeps ``entry`` (retention): its record goes."""
    with contextlib.suppress(OSError):
        (entry / USERS / key).unlink()


@contextlib.contextmanager
def _shared(lock: Path) -> Iterator[None]:
    """Hold ``lock`` shared (flock) while copying out of an entry; builders and pruners hold it exclusively.

    The lock file may be removed (with its entry, or by the lock library at the end of a build) between
    our open and our lock: then the lock is on a file nobody else will open, so open the path again.
    """
    for _attempt in range(50):
        try:
            fd = os.open(lock, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError:  # e.g. a read-only cache: copy without the lock, as before
            break
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            try:
                same = os.fstat(fd).st_ino == os.stat(lock, follow_symlinks=False).st_ino
            except FileNotFoundError:
                same = False
            if same:
                yield
                return
        finally:
            os.close(fd)
    yield


@dataclass
class CacheEntry:
    """One entry of the cache, as ``testlane cache list`` shows it.

    ``size`` is in bytes (blocks on disk, so holes do not count); ``last_used`` a Unix time;
    ``stale`` the reason it is never used again ("" when it is current).
    """

    kind: str
    key: str
    path: Path
    project: str = ""
    version: str = ""
    size: int = 0
    last_used: float = 0.0
    stale: str = ""
    meta: dict[str, object] = field(default_factory=dict)

    users: dict[str, tuple[str, float]] = field(default_factory=dict)


def _size(path: Path) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    with contextlib.suppress(OSError):
        total += path.lstat().st_blocks * 512
    return total


def _bin_keyed_by_content(entry: Path) -> bool:
    """A copy of binaries (``bin/postgres-<version>-<10 hex>``) is current when the hex is its ``postgres``'s
    content digest; earlier versions keyed it by the path it was copied from, which no start uses now."""
    exe = next(entry.glob("**/bin/postgres"), None)
    if exe is None:
        return True  # not a Postgres install: nothing to compare with
    digest = hashlib.sha256()
    try:
        with open(exe, "rb") as f:
            for block in iter(functools.partial(f.read, 1 << 20), b""):
                digest.update(block)
    except OSError:
        return True
    return entry.name.endswith("-" + digest.hexdigest()[:10])


# The names testlane gives entries: ``<version>-<hex>``, ``<cluster key>-<hex>``, ``postgres-<version>-<hex>``.
_ENTRY_NAME = re.compile(r"[0-9A-Za-z._+~-]+")


def _stale_reason(kind: str, entry: Path, meta: dict[str, object]) -> str:
    if not _ENTRY_NAME.fullmatch(entry.name):  # e.g. named after a binary's output by earlier versions
        return "not a name testlane gives"
    try:
        owner = entry.lstat().st_uid
    except OSError:
        return "unreadable"
    data = KINDS[kind][1]
    if owner != os.getuid() or (data and (entry / data).exists() and not trusted(entry / data)):
        return "foreign owner"
    if kind == "bin":
        if not (entry / ".complete").exists():
            return "incomplete"
        return "" if _bin_keyed_by_content(entry) else "older layout"
    if meta.get("layout") != LAYOUT:
        return f"layout {meta['layout']}" if "layout" in meta else "older layout"
    if data and not (entry / data).exists():
        return "incomplete"
    return ""


def list_entries(cache_dir: Path, *, sizes: bool = True) -> list[CacheEntry]:
    """Every entry of the cache at ``cache_dir``, newest use first (sizes in bytes unless ``sizes=False``)."""
    entries: list[CacheEntry] = []
    for kind, (dirname, _data) in KINDS.items():
        root = cache_dir / dirname
        try:
            children = sorted(os.scandir(root), key=lambda e: e.name)
        except OSError:
            continue
        for child in children:
            if child.name.startswith(".") or not child.is_dir(follow_symlinks=False):
                continue
            path = Path(child.path)
            meta = read_meta(path) if kind != "bin" else {}
            users = claims(path)
            recent = sorted(users.values(), key=lambda user: user[1], reverse=True)
            project = str(meta.get("project", "")) or (recent[0][0] if recent else "")
            if len(recent) > 1:
                project += f" (+{len(recent) - 1})"
            entries.append(
                CacheEntry(
                    kind=kind,
                    key=child.name,
                    path=path,
                    project=project,
                    version=str(meta.get("version", "")) or child.name.split("-", 1)[0],
                    size=_size(path) if sizes else 0,
                    last_used=child.stat(follow_symlinks=False).st_mtime,
                    stale=_stale_reason(kind, path, meta),
                    meta=meta,
                    users=users,
                )
            )
    entries.sort(key=lambda e: e.last_used, reverse=True)
    return entries


def remove_entry(entry: Path) -> int | None:
    """Remove the cache entry ``entry`` unless it is in use; the bytes freed, or None when in use.

    Takes the entry's lock (:func:`entry_lock`) exclusively without waiting: a build (exclusive) or a
    copy out of the entry (shared) in progress, in any process, makes this return None and leaves the
    entry alone. The lock file goes with the entry (removed while held). Symbolic links inside are
    removed, never followed.
    """
    lock_path = entry_lock(entry)
    lock = building(entry, timeout=0)
    try:
        lock.acquire()
    except (TimeoutError, OSError):
        return None
    try:
        freed = _size(entry)
        shutil.rmtree(entry, ignore_errors=True)
        if os.path.lexists(entry):
            return None
        lock_path.unlink(missing_ok=True)
        return freed
    finally:
        lock.release()


def older_than(entry: CacheEntry, days: float, now: float | None = None) -> bool:
    """True when ``entry`` was last used more than ``days`` days ago."""
    return ((now if now is not None else time.time()) - entry.last_used) > days * 86400
