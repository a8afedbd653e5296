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
holds only the template, so a warm start copies no more than before), and the one after all steps but the
last also in a third, ``last/`` (the template and that copy alone: what an edit of the last migration resumes
from, copied instead of every checkpoint); ``checkpoints.json`` maps each
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

**After an edit, on the run's own server** (:meth:`SnapshotCache.start_for_run`, for callers that store the
snapshot after their tests: ``testlane run`` and the pytest plugin). A builder server costs about 0.5 s
whatever it replays (copy in, start, stop, store: docs/benchmarks.md), and a run after an edit paid it before
its first test. When earlier builds of this history measured the steps left to apply (from the nearest
checkpoint, or from an empty database when none is kept) under :data:`RUN_SERVER_REPLAY_S`, the run's own
Postgres starts from the stored cluster holding that checkpoint (the base cluster when none) and the template
is built there, on the template database itself
(:func:`~testlane.databases.template.ensure_template` resuming from the checkpoint); the first test starts
then. The snapshot for later runs is built and stored *after the tests* (:meth:`SnapshotCache.store_after_run`:
:meth:`ensure`, a builder replaying the same steps from the same checkpoint) and not from the run's server: by
then the tests have used that cluster (roles, the ``postgres`` database, settings), and the server has no
clean moment to be copied at (``wal_level = minimal``: no online backup). The price: the replayed steps run
twice per edit, once off the tests' path, which is why it is taken only when they are known to be short; a
first build, or one after ``env.py``, the extensions or the environment mapping changed (nothing of the
history measured), uses the builder first, as before. Isolation is the same either way: the template is
built under the same advisory lock and marked ``IS_TEMPLATE`` only once complete, a failing migration fails
the run's start with the same message and stores nothing, and the snapshot is stored under the same file
lock, staged and renamed into place (a run whose tests end while another process holds that lock leaves
the snapshot to it; an interrupted store leaves only a staging directory, removed by the next start).

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
from typing import TYPE_CHECKING, Any, cast

from filelock import Timeout

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

__all__ = ["RUN_SERVER_REPLAY_S", "RunBuild", "SnapshotCache"]

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


# Seconds of migrations (as earlier builds measured the steps left to apply) below which an edit is replayed
# on the run's own server (module doc): the first test no longer waits for a builder server (0.5 s measured,
# docs/benchmarks.md "Editing a migration"), and the run as a whole pays the replay once more after its tests.
RUN_SERVER_REPLAY_S = 1.0


@dataclass(frozen=True)
class RunBuild:
    """The template built on the run's own server (module doc): that server starts from ``data`` (a stored
    cluster holding ``checkpoints.origin``; None: the base cluster), and
    :func:`~testlane.databases.template.ensure_template` resumes there as ``checkpoints`` says. ``steps``: of
    the spec; ``seconds``: what the steps to apply took when last built."""

    data: Path | None
    checkpoints: Checkpoints
    steps: int
    seconds: float


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
        cluster = self._ensure(spec, wait=True, announce="later runs start from a snapshot")
        assert cluster is not None  # waited for the lock
        return cluster

    def start_for_run(self, spec: TemplateSpec) -> Path | RunBuild:
        """What a run's Postgres starts from, for a run that calls :meth:`store_after_run` after its tests: the
        stored snapshot (claimed, as :meth:`ensure` does); after an edit whose steps left to apply earlier builds
        measured under :data:`RUN_SERVER_REPLAY_S`, a :class:`RunBuild` (module doc); else the snapshot, built
        now by :meth:`ensure`."""
        cluster = self.lookup(spec)
        if cluster is not None:
            claim(cluster.parent, self.project_key, self.project)
            return cluster
        plan = self._run_build(spec)
        return plan if plan is not None else self.ensure(spec)

    def store_after_run(self, spec: TemplateSpec) -> Path | None:
        """After a run that built ``spec``'s template on its own server (:meth:`start_for_run`): the snapshot
        built and stored for later runs, as :meth:`ensure` builds it. None when another process holds its lock
        (that process is building it: not waited for, the run is over)."""
        return self._ensure(spec, wait=False, announce="stored for later runs, after the tests")

    def _ensure(self, spec: TemplateSpec, *, wait: bool, announce: str) -> Path | None:
        target = self._dir(spec)
        cluster = target / "cluster"
        if self.lookup(spec) is not None:
            claim(target, self.project_key, self.project)  # most recently used by this project: kept
            return cluster
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755 if is_root() else 0o700)
        sweep_staging(self.engine.context.cache_dir)
        try:
            with building(target, timeout=1800 if wait else 0):
                if self.lookup(spec) is not None:
                    claim(target, self.project_key, self.project)
                    return cluster
                started = time.perf_counter()
                self.progress(f"building the migrated template ({spec.describe()}); {announce}")
                self._build(spec, target)
                log.debug("snapshot %s built in %.2fs", target.name, time.perf_counter() - started)
        except Timeout:
            if wait:
                raise
            log.debug("snapshot %s: another process is building it", target.name)
            return None
        self.prune()
        return cluster

    def _run_build(self, spec: TemplateSpec) -> RunBuild | None:
        """The :class:`RunBuild` for ``spec`` when its replay is known to be short (see :meth:`start_for_run`)."""
        if not self.engine.settings.db.checkpoints:
            return None  # checkpoints off: every change is a build from scratch, by a builder, as before
        steps = spec.steps()
        if not steps:
            return None
        target = self._dir(spec)
        origin = self._origin(spec, target)
        start = origin.steps if origin is not None else 0
        seconds = self._replay_seconds(steps, start, target)
        if seconds is None or seconds >= RUN_SERVER_REPLAY_S:
            return None
        plan = Checkpoints(start=start, origin=origin.database if origin is not None else None)
        return RunBuild(origin.data if origin is not None else None, plan, len(steps), seconds)

    def _records(self, target: Path) -> list[dict[str, Any]]:
        """The ``checkpoints.json`` of every other snapshot of this cluster key (unreadable ones left out)."""
        found = []
        for entry in self.root.glob(f"{self.engine.cluster_key(self.engine.binaries())}-*"):
            if entry == target or not entry.is_dir():
                continue
            try:
                record = json.loads((entry / CHECKPOINTS).read_text())
            except (OSError, ValueError):
                continue
            if isinstance(record, dict):
                found.append(record)
        return found

    def _replay_seconds(self, steps: list[Step], start: int, target: Path) -> float | None:
        """How long applying ``steps[start:]`` took when this history was last built: the whole of the earlier
        history sharing the longest prefix with ``steps`` (its slowest record: the time up to its last step), less
        the time up to ``start``. The steps past that prefix (the edited ones) count as they took before the edit.
        None when no step of ``steps`` was ever measured (a first build; ``env.py``, the extensions or the
        environment mapping changed)."""
        index = {step.key: number for number, step in enumerate(steps, 1)}
        known: dict[int, float] = {}
        longest, total = 0, 0.0
        for record in self._records(target):
            seconds = record.get("seconds")
            if not isinstance(seconds, dict):
                continue
            values = {key: float(v) for key, v in seconds.items() if isinstance(v, int | float)}
            mine = {index[key]: value for key, value in values.items() if key in index}
            known.update(mine)
            if mine and (max(mine), max(values.values())) > (longest, total):
                longest, total = max(mine), max(values.values())
        if not longest:
            return None
        return max(total - known.get(start, 0.0), 0.0)

    def _origin(self, spec: TemplateSpec, target: Path) -> Origin | None:
        """The stored checkpoint (or template) holding the longest prefix of ``spec``'s steps, if any."""
        if not self.engine.settings.db.checkpoints:
            return None
        steps = spec.steps()
        if not steps:
            return None
        index = {step.key: number for number, step in enumerate(steps, 1)}
        best: Origin | None = None
        for found in self._records(target):
            try:
                databases = dict(found["databases"])
            except (KeyError, TypeError, ValueError):
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
        for record in self._records(target):
            try:
                seconds = dict(record.get("seconds", {}))
            except (TypeError, ValueError):
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
                # The last checkpoint (an edit of the last migration, the most frequent, resumes there) also in a
                # cluster of its own, ``last/``: a run's server after such an edit copies the base cluster, the
                # template and that one checkpoint, not every checkpoint (46 MB instead of 80 MB for 60
                # revisions: docs/benchmarks.md "Editing a migration"). One more start of the builder, on a first
                # build only.
                alone = len(steps) - 1 if len(steps) - 1 in plan.made and len(plan.made) > 1 else None
                for number, db in plan.made.items():
                    where = "last" if number == alone else "checkpoints"
                    records[steps[number - 1].key] = (f"{target.name}/{where}", db)
                stages = [[db for number, db in plan.made.items() if number != alone]] if alone is not None else []
                stages.append(list(plan.made.values()) if alone is None else [plan.made[alone]])
                for stage, drops in enumerate(stages):
                    try:  # the builder again, on the same data directory, to drop them
                        launch.spawn()
                        second = cast(PostgresServer, launch.wait())
                    except BaseException:
                        launch.abort()
                        raise
                    with second.connect() as admin:
                        _lean_wal(admin)
                        for db in drops:
                            drop_database(admin, db)
                        _reset_wal(admin)
                    second.halt(clean=True)
                    if stage < len(stages) - 1:
                        store(data, target / "last", user, leave_out=leave_out)
            elif origin is not None:
                where = str(origin.data.relative_to(self.root))
                for number, db in plan.made.items():
                    adopted = number == origin.steps and origin.database.startswith("tl_tpl_")
                    records[steps[number - 1].key] = (where, origin.database if adopted else db)
                # Resumed from a cluster holding only the last checkpoint (``last/``): the origin's other
                # checkpoints this build would keep are still stored beside it, recorded as they were.
                for key, record in _stored_records(origin.data.parent).items():
                    if key in {steps[number - 1].key for number in plan.keep}:
                        records.setdefault(key, record)
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


def _stored_records(entry: Path) -> dict[str, tuple[str, str]]:
    """The step keys ``entry``'s ``checkpoints.json`` maps to a stored cluster and database (none if unreadable)."""
    try:
        databases = json.loads((entry / CHECKPOINTS).read_text())["databases"]
        return {
            str(k): (str(v[0]), str(v[1])) for k, v in dict(databases).items() if isinstance(v, list) and len(v) == 2
        }
    except (OSError, ValueError, KeyError, TypeError):
        return {}


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
