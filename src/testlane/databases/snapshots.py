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

**Checkpoints** make an edited migration cheap: a build applies the steps (SQL files, Alembic
revisions; other sources are one step each, see :meth:`~testlane.databases.template.TemplateSpec.steps`)
one segment at a time and keeps a copy of the database after ``n-1``, ``n-2``, ``n-4``, ``n-8``
of its ``n`` steps (``db.checkpoints``: how many), named by the hash of the steps it holds. New ones are
stored beside the snapshot in a second cluster, ``checkpoints/`` (runs start from ``cluster/``, which
holds only the template, so a warm start copies no more than before); ``checkpoints.json`` maps each
step key to the stored cluster and database holding it (and, under ``seconds``, how long the steps up to
that key took from an empty database: a later build applies steps known to take less than
:data:`~testlane.databases.template.CHECKPOINT_WORTH_S` in one call); a build that made no new checkpoint (the last
migration edited) refers to those of the snapshot it resumed from, and claims that snapshot again so
retention keeps it. The next build for this
cluster key (the same binaries and initdb arguments) whose steps share a prefix with a stored
snapshot's starts its builder server from that snapshot's ``checkpoints/``, creates the template from
the longest matching checkpoint (or from that snapshot's whole template, when steps were only added)
and applies only the remaining steps; checkpoints that no longer match are dropped. Extensions, the
environment mapping and ``extra_fingerprint`` are part of the first step's key: a change there
replays everything.

Concurrent runs share one build: the build holds a file lock on the snapshot's key, and a run
that waited for it finds the snapshot ready.

As root, a stored snapshot is sealed against the service user (:mod:`testlane.services.cache`):
what a server running as that user does cannot change what later runs start from. The copy is
staged in ``.<name>.<pid>.tmp``; one left by a killed build is removed by the next start or reap.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

from testlane.core.errors import ServiceStartError
from testlane.core.runtime import is_root
from testlane.databases.template import (
    Checkpoints,
    Step,
    TemplateSpec,
    checkpoint_name,
    drop_database,
    ensure_template,
)
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
from testlane.services.postgres import PostgresEngine, PostgresServer

if TYPE_CHECKING:
    import psycopg

__all__ = ["SnapshotCache"]

log = logging.getLogger("testlane")


CHECKPOINTS = "checkpoints.json"


def keep_after(steps: int, limit: int = 4) -> frozenset[int]:
    """After how many of ``steps`` steps a build keeps a checkpoint: ``steps - 1``, ``- 2``, ``- 4``, ...,
    at most ``limit`` of them (``db.checkpoints``).

    An edit to the last migration replays one step; one ``k`` steps from the end at most ``2k - 1``
    (within the last ``2 ** (limit - 1)`` steps)."""
    keep: set[int] = set()
    back = 1
    while steps - back >= 1 and len(keep) < limit:
        keep.add(steps - back)
        back *= 2
    return frozenset(keep)


@dataclass(frozen=True)
class Origin:
    """Where a build resumes: ``data`` (a stored cluster) holds ``database`` with the first ``steps`` steps."""

    data: Path
    database: str
    steps: int


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

    def _origin(self, spec: TemplateSpec, target: Path) -> Origin | None:
        """The stored checkpoint (or template) holding the longest prefix of ``spec``'s steps, if any."""
        if not self.engine.settings.db.checkpoints:
            return None
        steps = spec.steps()
        if not steps:
            return None
        index = {step.key: number for number, step in enumerate(steps, 1)}
        prefix = f"{self.engine.cluster_key(self.engine.binaries())}-"
        best: Origin | None = None
        for entry in self.root.glob(prefix + "*"):
            if entry == target or not entry.is_dir():
                continue
            try:
                databases = dict(json.loads((entry / CHECKPOINTS).read_text())["databases"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            for key, record in databases.items():
                number = index.get(key, 0)
                if number <= (best.steps if best else 0) or not (isinstance(record, list) and len(record) == 2):
                    continue
                data = self.root / str(record[0])
                if data.parent == target or data.parent.parent != self.root:  # our own entry's lock is held
                    continue
                if trusted(data) and (data / "PG_VERSION").exists():
                    best = Origin(data, str(record[1]), number)
        return best

    def _known_seconds(self, steps: list[Step], target: Path) -> dict[int, float]:
        """What earlier builds for this cluster key measured: number of steps -> seconds from an empty
        database (``checkpoints.json``'s ``seconds``; a step's key covers every step before it, so a record
        holds for any spec whose steps share that prefix)."""
        index = {step.key: number for number, step in enumerate(steps, 1)}
        known: dict[int, float] = {}
        for entry in self.root.glob(f"{self.engine.cluster_key(self.engine.binaries())}-*"):
            if entry == target or not entry.is_dir():
                continue
            try:
                seconds = dict(json.loads((entry / CHECKPOINTS).read_text()).get("seconds", {}))
            except (OSError, ValueError, TypeError, AttributeError):
                continue
            for key, value in seconds.items():
                number = index.get(key)
                if number is not None and isinstance(value, int | float):
                    known[number] = float(value)
        return known

    def _build(self, spec: TemplateSpec, target: Path) -> None:
        origin = self._origin(spec, target)
        name = f"postgres-build-{target.name[-8:]}"
        try:
            launch = self.engine.launch(name, data_source=origin.data if origin else None)
            builder = cast(PostgresServer, launch.run())
        except ServiceStartError:
            if origin is None:
                raise
            log.debug("checkpoint %s gone; building from the base cluster", origin.data)
            origin = None
            launch = self.engine.launch(name)
            builder = cast(PostgresServer, launch.run())
        second: PostgresServer | None = None
        try:
            steps = spec.steps()
            plan = Checkpoints(keep=keep_after(len(steps), self.engine.settings.db.checkpoints))
            if plan.keep:
                plan.known = self._known_seconds(steps, target)
            with builder.connect() as admin:
                _lean_wal(admin)
                if origin is not None:
                    plan.start, plan.origin = origin.steps, origin.database
                    _adopt_origin(admin, plan, checkpoint_name(steps[origin.steps - 1].key))
            template = ensure_template(builder, spec, plan)
            made_now = set(plan.made.values())
            with builder.connect() as admin:
                wanted = {number: checkpoint_name(steps[number - 1].key) for number in plan.keep}
                _keep_only(admin, plan, template, wanted)
                fresh = bool(made_now & set(plan.made.values()))
                if not fresh:  # every checkpoint kept is stored in the origin already: none here
                    for db in plan.made.values():
                        drop_database(admin, db)
                _reset_wal(admin)  # for the runs: from the next start on
            builder.halt(clean=True)
            data = Path(builder.instance.instance_dir or "") / "data"
            user = self.engine.user
            target.mkdir(mode=0o700, exist_ok=True)
            if user is not None:
                os.chown(target, os.getuid(), user.gid)
            os.chmod(target, 0o750 if user is not None else 0o700)  # the service user may enter, not write
            version = self.engine.binaries().version
            write_meta(target, "snapshot", version=version)
            leave_out = ("postmaster.pid", "postmaster.opts")
            records: dict[str, tuple[str, str]] = {}
            if fresh:
                # The checkpoints go beside the snapshot; runs start from a cluster without them.
                store(data, target / "checkpoints", user, leave_out=leave_out)
                for number, db in plan.made.items():
                    records[steps[number - 1].key] = (f"{target.name}/checkpoints", db)
                try:  # the builder again, on the same data directory, to drop them
                    launch.spawn()
                    second = cast(PostgresServer, launch.wait())
                except BaseException:
                    launch.abort()
                    raise
                with second.connect() as admin:
                    _lean_wal(admin)
                    for db in plan.made.values():
                        drop_database(admin, db)
                    _reset_wal(admin)
                second.halt(clean=True)
            elif origin is not None:
                where = str(origin.data.relative_to(self.root))
                for number, db in plan.made.items():
                    adopted = number == origin.steps and origin.database.startswith("tl_tpl_")
                    records[steps[number - 1].key] = (where, origin.database if adopted else db)
                claim(origin.data.parent, self.project_key, self.project)  # kept while its checkpoints serve
            store(data, target / "cluster", user, leave_out=leave_out)
            if steps:
                records[steps[-1].key] = (f"{target.name}/cluster", template)
                # What was known is written again: the entries it came from may be pruned before the next build.
                seconds = {steps[n - 1].key: round(s, 4) for n, s in {**plan.known, **plan.measured}.items()}
                (target / CHECKPOINTS).write_text(json.dumps({"databases": records, "seconds": seconds}))
            claim(target, self.project_key, self.project)
        finally:
            (second or builder).stop()  # one instance; the second handle holds its new process

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


def _lean_wal(admin: psycopg.Connection) -> None:
    """Have the shutdown checkpoint remove the WAL segments the build wrote instead of keeping them for
    reuse (up to ``min_wal_size``, 80 MB), so the stored cluster, which every run copies, holds none."""
    admin.execute("ALTER SYSTEM SET min_wal_size = '2MB'")
    if admin.info.server_version >= 120000:
        admin.execute("ALTER SYSTEM SET wal_recycle = off")  # removed at each checkpoint, whatever was written
    admin.execute("SELECT pg_reload_conf()")


def _reset_wal(admin: psycopg.Connection) -> None:
    """Undo :func:`_lean_wal` in the configuration the next start reads (this server keeps it until it stops)."""
    admin.execute("ALTER SYSTEM RESET min_wal_size")
    if admin.info.server_version >= 120000:
        admin.execute("ALTER SYSTEM RESET wal_recycle")


def _adopt_origin(admin: psycopg.Connection, plan: Checkpoints, as_checkpoint: str) -> None:
    """Resume from ``plan.origin``; a whole template resumed from becomes the checkpoint it is when
    the new build keeps one there (steps were only added)."""
    from psycopg import sql

    if not plan.origin or not plan.origin.startswith("tl_tpl_") or plan.start not in plan.keep:
        return
    old, new = sql.Identifier(plan.origin), sql.Identifier(as_checkpoint)
    admin.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false ALLOW_CONNECTIONS true").format(old))
    admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(old, new))
    plan.origin = as_checkpoint


def _keep_only(admin: psycopg.Connection, plan: Checkpoints, template: str, wanted: dict[int, str]) -> None:
    """Drop every database but ``template`` and the checkpoints this spec's build keeps (recorded in ``plan.made``)."""
    rows = admin.execute(
        r"SELECT datname FROM pg_database WHERE datname LIKE 'tl\_ck\_%' OR datname LIKE 'tl\_tpl\_%'"
    ).fetchall()
    present = {row[0] for row in rows}
    plan.made = {number: db for number, db in wanted.items() if db in present}
    for db in present - set(plan.made.values()) - {template}:
        drop_database(admin, db)
