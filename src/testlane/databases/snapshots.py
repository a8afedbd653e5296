"""Snapshots: a migrated cluster kept in the cache, so a warm start never re-runs migrations.

For a template spec with content (migrations, extensions, seed), the first run builds it in a
short-lived *builder* server started from the base cluster, shuts that server down cleanly and
copies its data directory to ``<cache_dir>/snapshots/<cluster key>-<spec hash>/cluster``. Every later
run starts its Postgres from that copy: the template is already there. A changed migration file
changes the hash, so a new snapshot is built. The key is the content: projects (or checkouts of one
project at different paths, as CI makes them) with the same migrations share one snapshot.

Retention is per project. Each project that uses a snapshot records it (``used-by/<project key>``,
:func:`~testlane.services.cache.claim`). After a build, the project drops its claim on its snapshots
beyond the ``cache_keep_snapshots`` it used last; a snapshot no project claims any more is removed,
and so is any snapshot unused for ``cache_max_unused_days``. Other projects building snapshots never
push this project's out. An entry in use (being built or copied) is never removed.

Concurrent runs share one build: the build holds a file lock on the snapshot's key, and a run
that waited for it finds the snapshot ready.

As root, a stored snapshot is sealed against the service user (:mod:`testlane.services.cache`):
what a server running as that user does cannot change what later runs start from. The copy is
staged in ``.<name>.<pid>.tmp``; one left by a killed build is removed by the next start or reap.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from testlane.core.runtime import is_root
from testlane.databases.template import TemplateSpec, ensure_template
from testlane.services.cache import (
    building,
    claim,
    list_entries,
    older_than,
    remove_entry,
    store,
    sweep_staging,
    trusted,
    unclaim,
    write_meta,
)
from testlane.services.postgres import PostgresEngine

__all__ = ["SnapshotCache"]

log = logging.getLogger("testlane")


def project_key(project_root: Path) -> str:
    """12 hex characters naming a project directory in a snapshot's ``used-by`` records."""
    return hashlib.sha256(str(project_root.resolve()).encode()).hexdigest()[:12]


class SnapshotCache:
    """Migrated clusters in the cache, keyed by binaries + initdb arguments + template spec."""

    def __init__(self, engine: PostgresEngine, *, progress: Callable[[str], None] | None = None) -> None:
        self.engine = engine
        self.progress = progress or (lambda message: None)
        self.root = engine.context.ensure_cache_dir() / "snapshots"
        self.project = engine.settings.project_root.resolve()
        self.project_key = project_key(self.project)

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
            claim(target, self.project_key, self.project)  # most recently used by this project: kept
            return cluster
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755 if is_root() else 0o700)
        sweep_staging(self.engine.context.cache_dir)
        with building(target, timeout=1800):
            if self.lookup(spec) is not None:
                claim(target, self.project_key, self.project)
                return cluster
            started = time.perf_counter()
            self.progress(f"building the migrated template ({spec.describe()}); later runs start from a snapshot")
            self._build(spec, target)
            log.debug("snapshot %s built in %.2fs", target.name, time.perf_counter() - started)
        self.prune()
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
            version = self.engine.binaries().version
            write_meta(target, "snapshot", version=version)
            store(data, target / "cluster", user, leave_out=("postmaster.pid", "postmaster.opts"))
            claim(target, self.project_key, self.project)
        finally:
            builder.stop()

    def prune(self) -> list[Path]:
        """Apply the retention (module docstring); the entries removed. Entries in use are skipped."""
        settings = self.engine.settings
        keep, max_days = settings.cache_keep_snapshots, settings.cache_max_unused_days
        snapshots = [e for e in list_entries(self.engine.context.cache_dir, sizes=False) if e.kind == "snapshot"]
        mine = sorted(
            (e for e in snapshots if self.project_key in e.users),
            key=lambda e: e.users[self.project_key][1],
            reverse=True,
        )
        dropped_by_me = {entry.path for entry in mine[keep:]}
        for entry in mine[keep:]:
            unclaim(entry.path, self.project_key)
            del entry.users[self.project_key]
        removed: list[Path] = []
        for entry in snapshots:
            dropped = entry.path in dropped_by_me and not entry.users
            if (dropped or older_than(entry, max_days)) and remove_entry(entry.path) is not None:
                log.debug("removed snapshot %s (retention: %d per project, %g days unused)", entry.key, keep, max_days)
                removed.append(entry.path)
        return removed
