"""Running servers when testlane itself runs as root.

PostgreSQL refuses to start as root (and MariaDB prefers not to). When the
effective user is root, testlane runs those servers as an unprivileged system
user — ``testlane`` by default (setting ``service_user``), created with
``useradd --system`` when missing, falling back to ``nobody`` when it cannot be
created — and makes sure that user can reach the binaries: a virtual
environment under /root is not traversable by other users, so the install is
copied once into the cache directory (root-owned, world-readable) when the
user cannot reach it where it is. Every such step is logged at debug level.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from testlane.core.config import Settings
from testlane.core.errors import PrivilegeError
from testlane.core.runtime import RunContext, is_root

__all__ = [
    "ServiceUser",
    "chown_tree",
    "ensure_reachable",
    "lookup_user",
    "reachable_by_others",
    "require_traversable",
    "resolve_service_user",
    "service_user_for",
]

log = logging.getLogger("testlane")


@dataclass(frozen=True)
class ServiceUser:
    """The unprivileged OS user a server runs as."""

    name: str
    uid: int
    gid: int


def lookup_user(name: str) -> ServiceUser | None:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return ServiceUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _create_user(name: str) -> str | None:
    """Create a system user; returns an error description, or None on success."""
    commands = []
    if shutil.which("useradd"):
        nologin = shutil.which("nologin") or "/usr/sbin/nologin"
        commands.append(
            [
                "useradd",
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                nologin,
                name,
            ]
        )
    if shutil.which("adduser"):  # busybox/Alpine
        commands.append(["adduser", "-S", "-D", "-H", name])
    if not commands:
        return "neither useradd nor adduser is available"
    errors = []
    for cmd in commands:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode == 0 or lookup_user(name) is not None:
            return None
        errors.append(f"{' '.join(cmd)}: {proc.stderr.strip() or proc.returncode}")
    return "; ".join(errors)


def resolve_service_user(name: str, lock_dir: Path) -> ServiceUser:
    """The user to run servers as when we are root: ``name``, created if missing, else ``nobody``."""
    found = lookup_user(name)
    if found is not None:
        if found.uid == 0:
            raise PrivilegeError(
                f"service_user {name!r} is root; PostgreSQL refuses to run as root.",
                hint="set service_user to an unprivileged user (default: testlane).",
            )
        return found
    lock_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_dir / "service-user.lock"), timeout=60):
        found = lookup_user(name)
        if found is not None:
            return found
        error = _create_user(name)
        found = lookup_user(name)
        if found is not None:
            log.debug("running as root: created system user %r (uid %d) to run servers", name, found.uid)
            return found
    fallback = lookup_user("nobody")
    if fallback is not None and fallback.uid != 0:
        log.debug("running as root: could not create user %r (%s); running servers as 'nobody'", name, error)
        return fallback
    raise PrivilegeError(
        f"running as root, and no unprivileged user could be used to run servers: "
        f"user {name!r} does not exist and could not be created ({error}), and there is no 'nobody'.",
        hint=f"create one (useradd --system {name}), set service_user to an existing user, or run as non-root.",
    )


def service_user_for(settings: Settings, context: RunContext) -> ServiceUser | None:
    """The user a server process of this run runs as: None unless testlane runs as root.

    As root: ``service_user`` (created if missing, see :func:`resolve_service_user`), after checking
    that it can reach the cache and data directories. Raises :class:`PrivilegeError` otherwise.
    """
    if not is_root():
        return None
    user = resolve_service_user(settings.service_user, context.ensure_cache_dir())
    require_traversable(context.cache_dir, "cache directory", "cache_dir", user)
    require_traversable(context.data_root, "data directory", "data_dir", user)
    return user


def reachable_by_others(path: Path) -> bool:
    """True when every directory above ``path`` is world-traversable and ``path`` world-readable."""
    try:
        for parent in path.resolve().parents:
            if not parent.stat().st_mode & stat.S_IXOTH:
                return False
        return bool(path.stat().st_mode & stat.S_IROTH)
    except OSError:
        return False


def require_traversable(path: Path, what: str, setting: str, user: ServiceUser) -> None:
    """As root: fail clearly when ``user`` could not reach ``path`` (a parent is not world-traversable)."""
    blocked = next((p for p in (path, *path.parents) if p.exists() and not p.stat().st_mode & stat.S_IXOTH), None)
    if blocked is not None:
        raise PrivilegeError(
            f"running as root: the {what} {path} is not reachable by the service user {user.name!r} "
            f"({blocked} is not traversable by other users).",
            hint=f"set {setting} to a directory outside /root, e.g. /var/cache/testlane or /dev/shm/...",
        )


def ensure_reachable(base: Path, parts: list[Path], probe: Path, cache_dir: Path, key: str) -> Path:
    """Return a base directory from which the service user can run ``probe``.

    ``parts`` are directories under ``base`` that the install needs (kept at the
    same relative paths, so ``$ORIGIN``-relative library paths keep working).
    When ``probe`` is reachable in place, ``base`` is returned unchanged; otherwise
    the parts are copied once to ``<cache_dir>/bin/<key>`` (world-readable).
    """
    if reachable_by_others(probe):
        return base
    target = cache_dir / "bin" / key
    marker = target / ".complete"
    if marker.exists():
        return target
    (cache_dir / "bin").mkdir(parents=True, exist_ok=True)
    os.chmod(cache_dir / "bin", 0o755)
    with FileLock(str(cache_dir / "bin" / f"{key}.lock"), timeout=300):
        if marker.exists():
            return target
        log.debug("running as root: %s is not reachable by other users; copying the install to %s", probe, target)
        staging = target.with_name(f".{key}.{os.getpid()}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        for part in parts:
            shutil.copytree(base / part, staging / part, symlinks=True)
        for dirpath, _dirs, filenames in os.walk(staging):
            os.chmod(dirpath, 0o755)
            for fname in filenames:
                fpath = os.path.join(dirpath, fname)
                if not os.path.islink(fpath):
                    mode = os.stat(fpath).st_mode
                    os.chmod(fpath, 0o755 if mode & stat.S_IXUSR else 0o644)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
        marker.touch()
    return target


def chown_tree(path: Path, user: ServiceUser) -> None:
    """Give ``path`` and everything below it to ``user`` (as root)."""
    os.chown(path, user.uid, user.gid, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), user.uid, user.gid, follow_symlinks=False)


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
