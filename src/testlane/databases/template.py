"""Templates: a database migrated once, then cloned per test.

A :class:`TemplateSpec` is what goes into a template — extensions, migration sources, seed
steps — and its *fingerprint* (their content hashes). The template's name carries the
fingerprint and the server version (``tl_tpl_<hash>``), so a changed migration file means a new
template and an unchanged one is never migrated twice.

:func:`ensure_template` builds it once per server: under a Postgres advisory lock (so
concurrent workers and runs sharing a server never build it twice), into a database that is
marked ``IS_TEMPLATE`` and closed to connections only after every step succeeded. A half-built
template (a crash mid-build) is dropped and rebuilt; a failed build is dropped and reported.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testlane.core.config import Settings
from testlane.core.errors import ExtensionMissingError
from testlane.core.interrupts import phase
from testlane.databases.build_scope import BuildScope, build_scope
from testlane.databases.migrations import MigrationSource, SqlFolder, Target, migration_error, source_from_spec
from testlane.databases.naming import template_name
from testlane.services.backends import missing_extensions_hint

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

    from testlane.services.postgres import PostgresServer

__all__ = [
    "Checkpoints",
    "Step",
    "TemplateSpec",
    "checkpoint_name",
    "drop_database",
    "dropped_on_failure",
    "ensure_template",
    "require_extensions",
    "template_state",
    "terminate_connections",
]

log = logging.getLogger("testlane")


@dataclass(frozen=True)
class TemplateSpec:
    """What a template contains: extensions, then migrations, then seed steps."""

    migrations: tuple[MigrationSource, ...] = ()
    extensions: tuple[str, ...] = ()
    seed: tuple[MigrationSource, ...] = ()
    extra_fingerprint: str = ""
    requires: tuple[str, ...] = ()  # extensions the migrations create themselves: checked first, not created
    env: tuple[tuple[str, str], ...] = ()  # [tool.testlane.env] as written (placeholders unrendered), see build_scope
    label: str = field(default="", compare=False)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> TemplateSpec:
        """The spec from ``[tool.testlane.db]``; ``overrides`` (migrations=, seed=, extensions=)
        come from a ``migrations`` marker or a direct call."""
        db = settings.db
        root = settings.project_root
        migrations = overrides.get("migrations", db.migrations)
        seed = overrides.get("seed", db.seed)
        extensions = overrides.get("extensions", db.extensions)
        kind = overrides.get("kind", db.migrations_kind)
        sources: list[MigrationSource] = []
        for item in _as_list(migrations):
            sources.append(source_from_spec(item, root=root, kind=kind))
        seeds = [_seed_source(item, root) for item in _as_list(seed)]
        if settings.setup and "migrations" not in overrides:
            from testlane.databases.setup_commands import SetupCommands

            sources.append(SetupCommands(settings))  # the project's own commands, after its migrations
        return cls(
            tuple(sources),
            tuple(extensions),
            tuple(seeds),
            overrides.get("extra_fingerprint", ""),
            requires=tuple(settings.extensions),
            env=tuple(settings.env.items()),
            label=", ".join(s.describe() for s in sources),
        )

    @property
    def empty(self) -> bool:
        return not (self.migrations or self.extensions or self.seed or self.extra_fingerprint)

    def fingerprint(self, server_version: str = "") -> str:
        """Hash of everything that goes into the template (computed once per spec and version)."""
        cache: dict[str, str] = self.__dict__.setdefault("_fingerprints", {})
        if server_version not in cache:
            cache[server_version] = self._compute_fingerprint(server_version)
        return cache[server_version]

    def _compute_fingerprint(self, server_version: str) -> str:
        digest = hashlib.sha256()
        digest.update(f"v1|{server_version}|".encode())
        digest.update(("ext:" + ",".join(self.extensions)).encode())
        for source in (*self.migrations, *self.seed):
            digest.update(f"|{source.kind}:{source.fingerprint()}".encode())
        digest.update(f"|extra:{self.extra_fingerprint}".encode())
        # What migrations see of [tool.testlane.env] is part of what they build (a mapping edited so that
        # env.py reaches another server must rebuild, where the build's guard refuses it): as in steps().
        digest.update(f"|env:{sorted(self.env)!r}".encode())
        return digest.hexdigest()

    def name(self, server_version: str) -> str:
        return template_name(self.fingerprint(server_version))

    def steps(self) -> list[Step]:
        """Every step of the build, in order, each keyed by everything up to and including it.

        The first key covers what goes into the template before any migration (extensions, the
        environment migrations see, ``extra_fingerprint``): two specs share a key only when a database
        holding that prefix of steps is the same for both. Computed once per spec (it reads the
        migration files; an Alembic history is loaded)."""
        cached: list[Step] | None = self.__dict__.get("_steps")
        if cached is None:
            start = f"steps v1|ext:{','.join(self.extensions)}|env:{sorted(self.env)!r}|extra:{self.extra_fingerprint}"
            key = hashlib.sha256(start.encode()).hexdigest()
            cached = []
            for number, source in enumerate((*self.migrations, *self.seed)):
                for index, step_key in enumerate(source.step_keys()):
                    key = hashlib.sha256(f"{key}|{number}:{source.kind}:{index}:{step_key}".encode()).hexdigest()
                    cached.append(Step(source, index, key))
            self.__dict__["_steps"] = cached
        return cached

    def describe(self) -> str:
        parts = []
        if self.extensions:
            parts.append(f"extensions {', '.join(self.extensions)}")
        parts.extend(s.describe() for s in self.migrations)
        parts.extend(f"seed {s.describe()}" for s in self.seed)
        return "; ".join(parts) or "an empty database"


@dataclass(frozen=True)
class Step:
    """One step of a template build: step ``index`` of ``source``; ``key`` covers it and all before it."""

    source: MigrationSource
    index: int
    key: str


@dataclass
class Checkpoints:
    """How a build resumes and what it keeps (see :mod:`~testlane.databases.snapshots`).

    ``start``: the number of steps already in ``origin``, the database the template is created from
    (None: an empty one); ``keep``: after how many steps to keep a copy of the database being built;
    ``made`` receives them (number of steps -> database name, ``tl_ck_<key>``). ``known``: what earlier
    builds measured, number of steps -> seconds the migrations up to there took from an empty database;
    ``measured`` receives this build's figures of the same kind (at each stop, when the time up to
    ``start`` is known or ``start`` is 0)."""

    start: int = 0
    origin: str | None = None
    keep: frozenset[int] = frozenset()
    made: dict[int, str] = field(default_factory=dict)
    known: dict[int, float] = field(default_factory=dict)
    measured: dict[int, float] = field(default_factory=dict)

    def cheap_through(self) -> int:
        """The most steps earlier builds showed to take less than :data:`CHECKPOINT_WORTH_S` (0: none known).
        The time up to a step only grows with the steps, so no copy within them can pay."""
        return max((n for n, seconds in self.known.items() if seconds < CHECKPOINT_WORTH_S), default=0)


# Migration time (s) a build must have spent before a checkpoint is kept: below it, replaying those steps
# costs less than keeping the copy (bench/migration_edit.py: cheap 60-revision project, +0.6-1.1 s per first
# build for 4 checkpoints, 0.1 s saved per edit; with 1.2 s of migrations, 1.7 s saved per edit).
CHECKPOINT_WORTH_S = 1.0


def checkpoint_name(key: str) -> str:
    """The database holding the steps up to the one keyed ``key``."""
    return f"tl_ck_{key[:24]}"


def _as_list(value: Any) -> list[Any]:
    if value in (None, "", []):
        return []
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def _seed_source(item: Any, root: Path) -> MigrationSource:
    if isinstance(item, str) and not (":" in item and not (root / item).exists()):
        path = Path(item).expanduser()
        path = path if path.is_absolute() else root / path
        return SqlFolder(path)
    return source_from_spec(item, root=root)


def _lock_key(name: str) -> int:
    return zlib.crc32(name.encode()) - 2**31  # fits a signed 32-bit advisory lock key


def template_state(admin: psycopg.Connection, name: str) -> str:
    """``ready`` (marked template), ``partial`` (exists, not marked) or ``missing``."""
    row = admin.execute("SELECT datistemplate FROM pg_database WHERE datname = %s", (name,)).fetchone()
    if row is None:
        return "missing"
    return "ready" if row[0] else "partial"


def terminate_connections(admin: psycopg.Connection, name: str) -> None:
    admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (name,),
    )


def drop_database(admin: psycopg.Connection, name: str) -> None:
    """Drop a database testlane made (template flag cleared first; connections ended)."""
    from psycopg import sql

    ident = sql.Identifier(name)
    row = admin.execute("SELECT datistemplate FROM pg_database WHERE datname = %s", (name,)).fetchone()
    if row is None:
        return
    if row[0]:
        admin.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false").format(ident))
    if admin.info.server_version >= 130000:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
    else:
        admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(ident))
        terminate_connections(admin, name)
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(ident))


def ensure_template(server: PostgresServer, spec: TemplateSpec, checkpoints: Checkpoints | None = None) -> str:
    """Build ``spec``'s template on ``server`` unless it is already there; return its name.

    ``checkpoints``: build step by step from ``checkpoints.origin`` and keep the copies it asks for."""
    name = spec.name(server.version)
    with server.connect() as admin:
        if template_state(admin, name) == "ready":
            return name
        key = _lock_key(name)
        admin.execute("SELECT pg_advisory_lock(%s)", (key,))
        try:
            state = template_state(admin, name)
            if state == "ready":
                return name  # built by someone else while we waited
            if state == "partial":
                log.info("dropping half-built template %s (a previous build did not finish)", name)
                drop_database(admin, name)
            with phase("building the migrated template"):  # what an interruption names
                _build(server, admin, name, spec, checkpoints)
        finally:
            admin.execute("SELECT pg_advisory_unlock(%s)", (key,))
    return name


@contextlib.contextmanager
def dropped_on_failure(drop: Callable[[], None], what: str) -> Iterator[None]:
    """Run the block; when it raises (interrupts too), call ``drop()`` and re-raise.

    A ``drop()`` that fails itself is logged as a warning naming ``what`` ("template tl_..."): the
    original error matters more. Both engines' template builds use it.
    """
    try:
        yield
    except BaseException:
        try:
            drop()
        except Exception as exc:
            log.warning("could not drop failed %s: %s", what, exc)
        raise


def _build(
    server: PostgresServer,
    admin: psycopg.Connection,
    name: str,
    spec: TemplateSpec,
    checkpoints: Checkpoints | None = None,
) -> None:
    from psycopg import sql

    log.debug("building template %s from %s", name, spec.describe())
    plan = checkpoints or Checkpoints()
    if plan.origin is None:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    else:
        admin.execute(copy_database(admin, name, plan.origin))
    with dropped_on_failure(lambda: _drop_all(admin, [name, *plan.made.values()]), f"template {name}"):
        target = Target(server.dsn(name))
        if spec.requires:
            _check_available(server, target, spec.requires, "declared in `extensions`")
        if spec.extensions and plan.origin is None:
            _create_extensions(server, target, spec.extensions)
        with build_scope(target, dict(spec.env), socket_dir=server.socket_dir) as scope:
            if checkpoints is None:
                for source in (*spec.migrations, *spec.seed):
                    scope.apply(source, target)
            else:
                _apply_steps(server, admin, scope, target, name, spec.steps(), checkpoints)
        terminate_connections(admin, name)
        admin.execute(
            sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false").format(sql.Identifier(name))
        )


def _apply_steps(
    server: PostgresServer,
    admin: psycopg.Connection,
    scope: BuildScope,
    target: Target,
    name: str,
    steps: list[Step],
    plan: Checkpoints,
) -> None:
    """Apply ``steps[plan.start:]``, copying the database after each count of steps in ``plan.keep``."""
    if plan.start:
        log.info(
            "replaying %d of %d migration steps from a checkpoint (%d unchanged)",
            len(steps) - plan.start,
            len(steps),
            plan.start,
        )
    # Each stop splits the build into one more call of the migration tool (for Alembic, env.py loaded again:
    # about 30 ms, 0.15 s for 4 stops measured by bench/migration_edit.py), so stops where an earlier build
    # showed no copy can pay are not made.
    cheap = plan.cheap_through()
    stops = sorted({n for n in plan.keep if max(plan.start, cheap) < n < len(steps)} | {len(steps)})
    done = plan.start
    base = plan.known.get(plan.start, 0.0 if plan.start == 0 else None)
    started = time.perf_counter()
    while stops:
        stop = stops.pop(0)
        while done < stop:  # one call per source in [done, stop)
            source = steps[done].source
            end = done
            while end < stop and steps[end].source is source:
                end += 1
            scope.apply(source, target, (steps[done].index, steps[end - 1].index + 1))
            done = end
        elapsed = time.perf_counter() - started
        if base is not None:
            plan.measured[stop] = base + elapsed
        if stop < len(steps) and (base or 0.0) + elapsed < CHECKPOINT_WORTH_S:
            # Too cheap to be worth a copy: a checkpoint costs a stored cluster and a builder restart
            # (0.4-0.6 s measured, docs/benchmarks.md) and saves at most the replay of what came before.
            # The later stops are still looked at: the slow steps may be the last ones.
            continue
        if stop < len(steps):
            copy = checkpoint_name(steps[stop - 1].key)
            terminate_connections(admin, name)
            drop_database(admin, copy)
            admin.execute(copy_database(admin, copy, name))
            plan.made[stop] = copy


def copy_database(admin: psycopg.Connection, name: str, template: str) -> sql.Composed:
    """``CREATE DATABASE name TEMPLATE template``; on PostgreSQL 15+ with ``STRATEGY FILE_COPY``: the files are
    copied, not written to the WAL block by block (a build's WAL stays small, and so does its snapshot)."""
    from psycopg import sql

    strategy = sql.SQL(" STRATEGY FILE_COPY" if admin.info.server_version >= 150000 else "")
    return sql.SQL("CREATE DATABASE {} TEMPLATE {}{}").format(sql.Identifier(name), sql.Identifier(template), strategy)


def _drop_all(admin: psycopg.Connection, names: list[str]) -> None:
    for db in names:
        drop_database(admin, db)


def _check_available(server: PostgresServer, target: Target, extensions: tuple[str, ...], where: str) -> None:
    """Fail before any migration runs when a needed extension is not installed in these binaries."""
    with target.connect(autocommit=True) as conn:
        available = {row[0] for row in conn.execute("SELECT name FROM pg_available_extensions").fetchall()}
    missing = [ext for ext in extensions if ext not in available]
    if missing:
        inst = server.instance  # servers testlane runs from binaries say how their backend was chosen
        raise _missing(
            f"PostgreSQL {server.version} ({inst.backend})",
            [f"{', '.join(missing)} {where}"],
            missing_extensions_hint(inst.backend, inst.extra.get("configured_backend"), missing),
        )


def require_extensions(
    spec: TemplateSpec, available: Iterable[str], binaries: str, *, backend: str, configured: str | None = None
) -> None:
    """Raise :class:`ExtensionMissingError` when ``spec`` needs an extension ``available`` lacks.

    ``available``: the extension names the binaries ship (their ``share/extension/*.control`` files);
    ``binaries``: how the message names them (``PostgreSQL 18.6 (embedded)``); ``backend`` and
    ``configured``: the backend in use and the one the settings ask for (the hint; ``spec`` is the
    settings', so its extensions are declared ones). Called before a template
    build is announced or a server started for it, so a run that cannot work stops first, with the one
    message a build would end with."""
    have = set(available)
    groups, lacking = [], []
    declarations = ((spec.requires, "declared in `extensions`"), (spec.extensions, "declared in db.extensions"))
    for declared, where in declarations:
        missing = [ext for ext in declared if ext not in have]
        if missing:
            groups.append(f"{', '.join(missing)} {where}")
            lacking += missing
    if groups:
        raise _missing(binaries, groups, missing_extensions_hint(backend, configured, lacking, declared=True))


def _missing(binaries: str, groups: list[str], hint: str) -> ExtensionMissingError:
    return ExtensionMissingError(f"{binaries} does not have the extension(s) {'; '.join(groups)}.", hint=hint)


def _create_extensions(server: PostgresServer, target: Target, extensions: tuple[str, ...]) -> None:
    import psycopg
    from psycopg import sql

    _check_available(server, target, extensions, "declared in db.extensions")
    with target.connect(autocommit=True) as conn:
        for ext in extensions:
            try:
                conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(ext)))
            except psycopg.Error as exc:
                raise migration_error(exc, source=f"db.extensions ({ext})") from None
