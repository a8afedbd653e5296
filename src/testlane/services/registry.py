"""The registry of instances on disk, and the reaper of those whose owner is dead.

Each instance is one JSON file, ``<state_dir>/<run_id>.<name>.json``, written
before the server starts (so a crash during start still leaves a trace) and
rewritten once its PID is known. Each run directory holds an ``owner.json``.

Reaping (at every start, and with ``testlane reap``):

* a record whose owner process is dead (PID gone, or reused: start times differ)
  is claimed with an exclusive ``flock`` on the record file, so two reapers never
  stop the same instance; its server is stopped and its directory removed;
* a detached instance (``testlane services start``) is only cleaned once its
  server process has died;
* a run directory whose owner is dead and which no record mentions is removed.

Instances owned by a live process are never touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from testlane.core.private import write_private_file
from testlane.core.runtime import RunContext
from testlane.services.instance import Instance
from testlane.services.process import ProcessRef, pid_alive

__all__ = ["ReapReport", "Registry", "owner_alive", "reap_reason", "write_run_owner"]

log = logging.getLogger("testlane")


def reap_reason(instance: Instance) -> str:
    """Why the reaper stopped ``instance``, for its report line."""
    if instance.extra.get("kept_until") is not None:
        return "kept for failed tests' databases"
    if instance.owner_pid is None:
        return "detached, and its server had exited"
    return f"owner {instance.owner_pid} is gone"


def owner_alive(instance: Instance) -> bool:
    if instance.owner_pid is None:
        return True
    return pid_alive(instance.owner_pid, instance.owner_create_time)


def write_run_owner(run_dir: Path, owner: int | None) -> None:
    """Record who owns a run directory (``None``: detached services)."""
    ref = ProcessRef.of(owner) if owner is not None else None
    data = {"owner_pid": owner, "owner_create_time": ref.create_time if ref else None}
    owner_file = run_dir / "owner.json"
    if not owner_file.exists():
        write_private_file(owner_file, json.dumps(data))


def _run_dir_owner_dead(run_dir: Path) -> bool:
    try:
        data = json.loads((run_dir / "owner.json").read_text())
    except (OSError, ValueError):
        # No owner file: a crash between mkdir and writing it; old enough means abandoned.
        try:
            return time.time() - run_dir.stat().st_mtime > 60
        except OSError:
            return False
    if data.get("owner_pid") is None:
        return True  # detached services; the caller checked that no record mentions the run
    return not pid_alive(data["owner_pid"], data.get("owner_create_time"))


@dataclass
class ReapReport:
    """What a reap did: instances stopped and directories removed."""

    stopped: list[Instance]
    removed_dirs: list[Path]

    def __bool__(self) -> bool:
        return bool(self.stopped or self.removed_dirs)


class Registry:
    """Instance records in ``state_dir``; safe for concurrent runs of the same user."""

    def __init__(self, context: RunContext) -> None:
        self.context = context
        self.dir = context.state_dir

    def record_path(self, instance: Instance) -> Path:
        """The file that records ``instance`` (mode 0600: it may hold the server's password)."""
        return self.dir / f"{instance.key}.json"

    def save(self, instance: Instance) -> None:
        """Write (or rewrite) a record atomically, readable by us only (it may hold a password)."""
        write_private_file(self.record_path(instance), instance.to_json())

    def remove(self, instance: Instance) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.record_path(instance).unlink()

    def _records(self) -> Iterator[tuple[Path, Instance]]:
        if not self.dir.is_dir():
            return
        for path in sorted(self.dir.glob("*.json")):
            try:
                yield path, Instance.from_json(path.read_text())
            except (OSError, ValueError, TypeError) as exc:
                log.debug("ignoring unreadable registry record %s: %s", path, exc)

    def instances(self, run_id: str | None = None) -> list[Instance]:
        """All recorded instances (of one run when ``run_id`` is given)."""
        return [inst for _, inst in self._records() if run_id is None or inst.run_id == run_id]

    def find(self, run_id: str, name: str) -> Instance | None:
        path = self.dir / f"{run_id}.{name}.json"
        try:
            return Instance.from_json(path.read_text())
        except (OSError, ValueError, TypeError):
            return None

    def reap(self, stop: Callable[[Instance], None], *, kept: bool = False) -> ReapReport:
        """Stop and remove every instance whose owner is dead; never touch live owners.

        Servers kept for failed tests' databases are stopped once their time is up, or now with ``kept``.
        """
        report = ReapReport([], [])
        live_runs: set[str] = set()
        now = time.time()
        for path, instance in self._records():
            orphaned = not owner_alive(instance)
            dead_detached = (
                instance.detached and instance.pid is not None and not pid_alive(instance.pid, instance.pid_create_time)
            )
            kept_until = instance.extra.get("kept_until")
            expired = kept_until is not None and (kept or float(kept_until) < now)
            if not (orphaned or dead_detached or expired):
                live_runs.add(instance.run_id)
                continue
            if self._reap_one(path, instance, stop):
                report.stopped.append(instance)
        report.removed_dirs.extend(self._reap_run_dirs(live_runs))
        return report

    def _reap_one(self, path: Path, instance: Instance, stop: Callable[[Instance], None]) -> bool:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False  # another reaper finished it
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # another reaper is on it
            if not path.exists():
                return False
            log.debug("reaping %s (owner %s is gone)", instance.key, instance.owner_pid)
            try:
                stop(instance)
            except Exception as exc:  # keep reaping the others; say what failed
                log.warning("could not fully clean up %s: %s", instance.key, exc)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return True
        finally:
            os.close(fd)

    def _reap_run_dirs(self, live_runs: set[str]) -> list[Path]:
        removed: list[Path] = []
        root = self.context.data_root
        if not root.is_dir():
            return removed
        recorded = {inst.run_id for inst in self.instances()}
        for run_dir in root.iterdir():
            if run_dir.name in ("state", "ports") or not run_dir.is_dir() or run_dir.is_symlink():
                continue
            if run_dir.name in live_runs or run_dir.name in recorded:
                continue
            if run_dir.name == self.context.run_id and self.context.owner_pid == os.getpid():
                continue
            if _run_dir_owner_dead(run_dir) and not any(self.dir.glob(f"{run_dir.name}.*.json")):
                log.debug("removing abandoned run directory %s", run_dir)
                shutil.rmtree(run_dir, ignore_errors=True)
                if not run_dir.exists():
                    removed.append(run_dir)
        return removed
