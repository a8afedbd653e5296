"""Snapshots: a migrated cluster kept in the cache, so a warm start never re-runs migrations.

For a template spec with content (migrations, extensions, seed), the first run builds it in a
short-lived *builder* server started from the base cluster, shuts that server down cleanly and
copies its data directory to ``<cache_dir>/snapshots/<cluster key>-<spec hash>/cluster``. Every
later run starts its Postgres from that copy: the template is already there. A changed migration
file changes the hash, so a new snapshot is built; unused old ones are pruned (the newest
``KEEP`` are kept).

Concurrent runs share one build: the build holds a file lock on the snapshot's key, and a run
that waited for it finds the snapshot ready.

As root, a stored snapshot is sealed against the service user (:mod:`testlane.services.cache`):
what a server running as that user does cannot change what later runs start from. The copy is
staged in ``.<name>.<pid>.tmp``; one left by a killed build is removed by the next start or reap.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

from testlane.core.runtime import is_root
from testlane.databases.template import TemplateSpec, ensure_template
from testlane.services.cache import store, sweep_staging, trusted
from testlane.services.postgres import PostgresEngine

__all__ = ["SnapshotCache"]

log = logging.getLogger("testlane")

KEEP = 8


class SnapshotCache:
    """Migrated clusters in the cache, keyed by binaries + initdb arguments + template spec."""

    def __init__(self, engine: PostgresEngine, *, progress: Callable[[str], None] | None = None) -> None:
        self.engine = engine
        self.progress = progress or (lambda message: None)
        self.root = engine.context.ensure_cache_dir() / "snapshots"

    def _dir(self, spec: TemplateSpec) -> Path:
        bins = self.engine.binaries()
        return self.root / f"{self.engine.cluster_key(bins)}-{spec.fingerprint(bins.version)[:16]}"

    def lookup(self, spec: TemplateSpec) -> Path | None:
        cluster = self._dir(spec) / "cluster"
        return cluster if (cluster / "PG_VERSION").exists() and trusted(cluster) else None

    def ensure(self, spec: TemplateSpec) -> Path:
        """The snapshot for ``spec``, built now (under a lock) if missing."""
        target = self._dir(spec)
        cluster = target / "cluster"
        if self.lookup(spec) is not None:
            os.utime(target)  # most recently used: kept by pruning
            return cluster
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755 if is_root() else 0o700)
        sweep_staging(self.engine.context.cache_dir)
        with FileLock(str(self.root / f"{target.name}.lock"), timeout=1800):
            if self.lookup(spec) is not None:
                return cluster
            started = time.perf_counter()
            self.progress(f"building the migrated template ({spec.describe()}); later runs start from a snapshot")
            self._build(spec, target)
            log.debug("snapshot %s built in %.2fs", target.name, time.perf_counter() - started)
            self._prune(keep=KEEP)
        return cluster

    def _build(self, spec: TemplateSpec, target: Path) -> None:
        builder = self.engine.start(f"postgres-build-{target.name[-8:]}")
        try:
            ensure_template(builder, spec)
            builder.halt(clean=True)
            data = Path(builder.instance.instance_dir or "") / "data"
            user = self.engine.user
            target.mkdir(mode=0o700, exist_ok=True)
            if user is not None:
                os.chown(target, os.getuid(), user.gid)
            os.chmod(target, 0o750 if user is not None else 0o700)  # the service user may enter, not write
            store(data, target / "cluster", user, leave_out=("postmaster.pid", "postmaster.opts"))
        finally:
            builder.stop()

    def _prune(self, keep: int) -> None:
        snapshots = sorted(
            (p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        for old in snapshots[keep:]:
            lock = FileLock(str(self.root / f"{old.name}.lock"), timeout=0)
            try:
                with lock:
                    shutil.rmtree(old, ignore_errors=True)
                Path(lock.lock_file).unlink(missing_ok=True)
            except TimeoutError:
                continue  # in use by a build
