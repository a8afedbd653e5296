"""Run identity and the directories testlane works in.

A *run* is one ``testlane run`` (or one pytest session that starts services on
demand). It has a short random id that appears in directory names, database
names and container names, and an *owner*: the process whose death means the
run is over and its leftovers may be reaped.

Directories::

    <data_root>/                 /dev/shm/testlane-<uid> (tmpfs, chosen by room: default_data_root),
                                 mode 0700 (0711 as root)
        <run_id>/                0700 (0710 root:<service group> as root): services.json (0600)
        <run_id>/<service>/      one instance: data/, socket, log
        state/                   registry of instances, one 0600 file each (unless state_dir is set)
        ports/                   port reservations (flock files)
    <cache_dir>/                 ~/.cache/testlane, or /var/cache/testlane as root
        postgres/<key>/cluster   initialized cluster, copied for each new instance
"""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from testlane.core import environment
from testlane.core.config import Settings
from testlane.core.errors import ConfigError
from testlane.core.private import ensure_private_dir
from testlane.core.runenv import RunEnv

__all__ = [
    "DataRootChoice",
    "RunContext",
    "choose_data_base",
    "data_root_candidates",
    "default_data_root",
    "filesystem_type",
    "is_root",
    "new_run_id",
    "owner_pid",
    "run_id_from_env",
]

log = logging.getLogger("testlane")

RUN_ID_ENV = environment.RUN_ID
OWNER_PID_ENV = environment.OWNER_PID


def is_root() -> bool:
    """True when the effective user is root (servers then run as an unprivileged user)."""
    return hasattr(os, "geteuid") and os.geteuid() == 0


def new_run_id() -> str:
    """A short id, safe in database, directory and container names: 8 lowercase hex chars."""
    return secrets.token_hex(4)


def run_id_from_env() -> str | None:
    """``TESTLANE_RUN_ID`` when a parent named the run."""
    return RunEnv.current().run_id


def owner_pid() -> int:
    """The process that owns this run: ``TESTLANE_OWNER_PID`` when a parent set it, else us."""
    pid = RunEnv.current().owner_pid
    return pid if pid is not None else os.getpid()


def is_writable_tmpfs(path: Path) -> bool:
    if not path.is_dir() or not os.access(path, os.W_OK | os.X_OK):
        return False
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            return any(line.split()[1] == str(path) and line.split()[2] == "tmpfs" for line in mounts if " " in line)
    except OSError:
        return False


# The data directory needs room for a few copies of a cluster (20 MB each) and a snapshot (30+ MB) and
# what the tests write; less than this and starts fail with "No space left on device".
MIN_FREE_BYTES = 256 * 1024 * 1024
CHOSEN_ENV = environment.CHOSEN_DATA_ROOT  # the choice, inherited by the run's processes (pytest, workers)
FAST_FILESYSTEMS = ("tmpfs", "ramfs")


def filesystem_type(path: Path) -> str:
    """The type of the filesystem ``path`` is on (``tmpfs``, ``ext4``...), from /proc/mounts; "" if unknown."""
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            rows = [line.split() for line in mounts]
    except OSError:
        return ""
    target = os.path.realpath(path)
    best, kind = "", ""
    for row in rows:
        if len(row) < 3:
            continue
        mount = row[1].replace("\\040", " ")
        if (target == mount or target.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best):
            best, kind = mount, row[2]
    return kind


@dataclass(frozen=True)
class DataRootChoice:
    """Where instance data goes: ``base`` (the data root is ``<base>/testlane-<uid>``), why, and a
    ``warning`` (one line with the fix) when the place is slow (not tmpfs) or has less than
    ``MIN_FREE_BYTES`` free; "" otherwise."""

    base: Path
    reason: str
    warning: str = ""


def data_root_candidates() -> list[Path]:
    """/dev/shm, $XDG_RUNTIME_DIR (when set), the system temp dir: in order of preference."""
    found = [Path("/dev/shm")]
    runtime = os.environ.get("XDG_RUNTIME_DIR", "").strip()
    if runtime:
        found.append(Path(runtime))
    found.append(Path(tempfile.gettempdir()))
    return list(dict.fromkeys(found))


def choose_data_base(
    candidates: list[Path],
    *,
    statvfs: Callable[[str], os.statvfs_result] = os.statvfs,
    fstype: Callable[[Path], str] = filesystem_type,
    need: int = MIN_FREE_BYTES,
) -> DataRootChoice:
    """Pick the base directory for instance data among ``candidates`` (in order of preference).

    The first tmpfs with at least ``need`` bytes free wins. Without one, the first candidate with that
    room (a disk: slower, with a warning), else the one with the most room (with a warning). Candidates
    that are not writable directories are skipped; as root, so are those the service user cannot
    traverse (e.g. /run/user/0). ``statvfs`` and ``fstype`` are seams for tests.
    """
    usable: list[tuple[Path, int, bool]] = []
    for path in candidates:
        if not path.is_dir() or not os.access(path, os.W_OK | os.X_OK):
            continue
        if is_root() and not path.stat().st_mode & 0o001:
            continue  # the service user could not reach the data below it
        try:
            st = statvfs(str(path))
        except OSError:
            continue
        usable.append((path, st.f_bavail * st.f_frsize, fstype(path) in FAST_FILESYSTEMS))
    if not usable:
        fallback = Path(tempfile.gettempdir())
        return DataRootChoice(fallback, f"no candidate among {', '.join(map(str, candidates))} is usable")

    def mb(n: int) -> str:
        return f"{n // (1024 * 1024)} MB"

    summary = "; ".join(f"{p} {'tmpfs' if fast else 'disk'} {mb(free)} free" for p, free, fast in usable)
    for path, free, fast in usable:
        if fast and free >= need:
            return DataRootChoice(path, f"{path} is tmpfs with {mb(free)} free (candidates: {summary})")
    fix = (
        "for a container, give it a larger /dev/shm (docker run --shm-size=1g, compose `shm_size: 1g`); "
        "or set data_dir (TESTLANE_DATA_DIR) to a tmpfs directory with room"
    )
    small_fast = [p for p, free, fast in usable if fast]
    for path, free, _fast in usable:
        if free >= need:
            why = (
                f"{', '.join(map(str, small_fast))} has less than {mb(need)} free"
                if small_fast
                else "no tmpfs is available"
            )
            return DataRootChoice(
                path,
                f"{path} has {mb(free)} free, not tmpfs; {why} (candidates: {summary})",
                f"data goes to {path}, which is not tmpfs ({why}): database clones cost several times more. "
                f"Fix: {fix}.",
            )
    path, free, _fast = max(usable, key=lambda item: item[1])
    return DataRootChoice(
        path,
        f"{path} has the most room ({mb(free)}); none has {mb(need)} free (candidates: {summary})",
        f"data goes to {path}, which has only {mb(free)} free (testlane needs {mb(need)}): starts may fail "
        f"with 'No space left on device'. Fix: {fix}.",
    )


def default_data_root() -> Path:
    """``<base>/testlane-<uid>``, ``<base>`` chosen by :func:`choose_data_base` once per run.

    The choice is logged at debug level; a slow or small place is warned about once (one line with the
    fix). The run's processes (pytest, xdist workers) inherit the choice through ``TESTLANE_CHOSEN_DATA_ROOT``
    so they all agree on where the run's data and registry are, and warn no more.
    """
    uid = os.getuid() if hasattr(os, "getuid") else 0
    inherited = RunEnv.current().chosen_data_root
    if inherited:
        return Path(inherited)
    choice = choose_data_base(data_root_candidates())
    log.debug("data directory: %s/testlane-%d, because %s", choice.base, uid, choice.reason)
    if choice.warning:
        log.warning("%s", choice.warning)
    root = choice.base / f"testlane-{uid}"
    RunEnv(chosen_data_root=str(root)).write(os.environ)
    return root


def default_cache_dir() -> Path:
    if is_root():
        # /root is not traversable by the unprivileged user servers run as.
        return Path("/var/cache/testlane")
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg) if xdg else Path.home() / ".cache") / "testlane"


@dataclass(frozen=True)
class RunContext:
    """Where a run keeps its things, and who owns it."""

    run_id: str
    owner_pid: int
    data_root: Path
    state_dir: Path
    cache_dir: Path

    @classmethod
    def from_settings(cls, settings: Settings, *, run_id: str | None = None, owner: int | None = None) -> RunContext:
        data_root = settings.resolve_path(settings.data_dir) if settings.data_dir else default_data_root()
        state_dir = settings.resolve_path(settings.state_dir) if settings.state_dir else data_root / "state"
        cache_dir = settings.resolve_path(settings.cache_dir) if settings.cache_dir else default_cache_dir()
        return cls(
            run_id=run_id or run_id_from_env() or new_run_id(),
            owner_pid=owner if owner is not None else owner_pid(),
            data_root=data_root,
            state_dir=state_dir,
            cache_dir=cache_dir,
        )

    def ensure_dirs(self) -> None:
        """Create the data root, state and port directories with safe permissions."""
        ensure_private_dir(self.data_root, traversable=is_root(), parents=True)
        ensure_private_dir(self.state_dir)
        ensure_private_dir(self.ports_dir)

    @property
    def run_dir(self) -> Path:
        return self.data_root / self.run_id

    def ensure_run_dir(self, *, group: int | None = None) -> Path:
        """The run's directory, created private: 0700, or 0710 with ``group`` (the service user's, as root).

        See :mod:`testlane.core.private`. Raises :class:`ConfigError` when it cannot be made private.
        """
        if not self.data_root.is_dir():
            self.ensure_dirs()
        return ensure_private_dir(self.run_dir, group=group)

    @property
    def ports_dir(self) -> Path:
        return self.data_root / "ports"

    def instance_dir(self, name: str) -> Path:
        return self.run_dir / name

    def ensure_cache_dir(self) -> Path:
        """The cache dir, created; world-traversable (0755) as root so the service user can read it."""
        mode = 0o755 if is_root() else 0o700
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True, mode=mode)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the cache directory {self.cache_dir}: {exc.strerror}.",
                hint="set cache_dir (TESTLANE_CACHE_DIR) to a writable directory.",
            ) from None
        return self.cache_dir
