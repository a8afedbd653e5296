"""Starting a run's services with the project's template in place.

When ``[tool.testlane.db]`` declares migrations (or extensions or seed steps), Postgres starts from
the migrated snapshot (built first if missing, see :mod:`testlane.databases.snapshots`), so the
template already exists in the new server and no migration runs on a warm start.

A caller that says it stores the snapshot after its tests (``store_later``: ``testlane run``, the pytest
plugin) gets, after an edit whose replay is known to be short, its Postgres started from the nearest
checkpoint and the template built on it before the start returns; the snapshot's build is left to
``stack.run_deferred()``, which that caller runs once its tests are done (see the snapshots module's
"After an edit").
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypedDict, Unpack

from testlane.core.config import Settings
from testlane.core.errors import ConfigError, ServiceStartError, TestlaneError
from testlane.core.interrupts import last_interruption, phase
from testlane.databases.leftovers import Leftover, reap_leftovers, sweep_run
from testlane.databases.snapshots import RunBuild, SnapshotCache
from testlane.databases.template import TemplateSpec, ensure_template, require_extensions
from testlane.services.backends import choose_backend, configured_backend
from testlane.services.base import Server
from testlane.services.external import url_instance
from testlane.services.postgres import PostgresEngine, PostgresServer
from testlane.services.stack import ServiceStack, service_cause

__all__ = [
    "StartOptions",
    "begin_services",
    "check_services",
    "reap_detached_leftovers",
    "reap_shared_leftovers",
    "start_services",
    "sweep_shared_run",
]

log = logging.getLogger("testlane")


class StartOptions(TypedDict, total=False):
    """How services start: ``progress`` gets one line per step; ``spec`` is Postgres's template (default:
    from the settings); ``reap_first`` (default true) reaps dead runs' leftovers before starting;
    ``store_later`` (default false): the caller runs ``stack.run_deferred()`` after its tests, so a template
    missing from the snapshots may be built on the run's own server and its snapshot stored then."""

    progress: Callable[[str], None] | None
    spec: TemplateSpec | None
    reap_first: bool
    store_later: bool


def start_services(
    stack: ServiceStack, names: Iterable[str] | None = None, **options: Unpack[StartOptions]
) -> dict[str, Server]:
    """``stack.start(names)``, with Postgres started from the project's migrated snapshot."""
    begin_services(stack, names, **options)
    stack.finish()
    reap_shared_leftovers(stack)
    return dict(stack.servers)


def reap_shared_leftovers(stack: ServiceStack) -> None:
    """On an existing Postgres or MariaDB server, drop what crashed runs left (see :mod:`leftovers`)."""
    for name in ("postgres", "mariadb"):
        server = stack.servers.get(name)
        if server is not None and server.instance.backend == "url":
            reap_leftovers(server)


def reap_detached_leftovers(server: Server) -> list[Leftover]:
    """On a detached Postgres or MariaDB server (``testlane services start``) a session is about to use,
    drop what crashed sessions left (see :mod:`leftovers`). Never raises: the session's own use of the
    server reports a server that does not answer."""
    if not (server.instance.detached and server.engine in ("postgres", "mariadb")):
        return []
    try:
        return reap_leftovers(server)
    except Exception as exc:
        log.warning("could not reap leftovers on the detached %s server: %s", server.engine, exc)
        return []


def sweep_shared_run(servers: Iterable[Server], run_id: str) -> list[Leftover]:
    """At the end of a run, on Postgres and MariaDB servers that outlive it (existing or detached), drop
    every database carrying this run's owner record (whatever its processes could not drop themselves).
    Never raises: a server that cannot be reached keeps them for the next start's reaper."""
    dropped: list[Leftover] = []
    for server in servers:
        if not server.instance.outlives_run or server.engine not in ("postgres", "mariadb"):
            continue
        try:
            dropped += sweep_run(server, run_id)
        except Exception as exc:
            log.warning(
                "could not drop this run's databases on the %s server at %s: %s",
                server.engine,
                server.instance.port,
                exc,
            )
    return dropped


def check_services(settings: Settings, names: Iterable[str]) -> list[str]:
    """Raise now the :class:`ConfigError` starting ``names`` would raise for the settings alone, without starting,
    building or writing anything: a name that is no service, a backend its kind lacks, ``url`` without a URL
    or with one that is not the kind's (or S3 without its keys), a ``db.migrations`` that is not there.

    For a process that leaves the starting to others (pytest-xdist's controller: its workers start the
    services), so that such a mistake is said once, before any test, as when the process starts them itself.
    Whatever is not a configuration mistake (no binaries found) is left to the start that meets it. Returns
    the canonical names."""
    wanted = ServiceStack.validate(names)
    for name in wanted:
        try:
            if choose_backend(name, settings).backend == "url":
                url_instance(name, settings, run_id="check", name=name)
        except ConfigError:
            raise
        except TestlaneError:
            continue  # said by the start that meets it, as before
    if "postgres" in wanted:
        try:
            TemplateSpec.from_settings(settings)  # db.migrations, db.seed: read, not applied
        except ConfigError:
            raise
        except Exception as exc:  # the project's module failing to import: the tests that build the template say it
            log.debug("checking the template's settings: %s", exc)
    return wanted


def begin_services(
    stack: ServiceStack, names: Iterable[str] | None = None, **options: Unpack[StartOptions]
) -> list[str]:
    """Spawn the services (Postgres from the snapshot) without waiting; ``stack.finish()`` waits."""
    spec, progress = options.get("spec"), options.get("progress")
    reap_first = options.get("reap_first", True)
    wanted = stack.validate(stack.settings.services if names is None else names)
    stack.context.ensure_dirs()
    sources: dict[str, Path] = {}
    build: tuple[SnapshotCache, TemplateSpec, RunBuild] | None = None
    if "postgres" in wanted and "postgres" not in stack.servers and "postgres" not in stack.pending:
        engine = stack.engine("postgres")
        spec = spec if spec is not None else TemplateSpec.from_settings(stack.settings)
        # Snapshots are data directories: only for servers testlane runs from binaries it controls.
        if not spec.empty and isinstance(engine, PostgresEngine):
            # One root cause for every test (a failing migration keeps its own, more precise one).
            with service_cause("postgres"):
                # A declared extension these binaries lack: refused now, before any build is announced or started.
                bins = engine.binaries()
                require_extensions(
                    spec,
                    bins.extensions(),
                    f"PostgreSQL {bins.version} ({engine.backend})",
                    backend=engine.backend,
                    configured=configured_backend(stack.settings, "postgres"),
                )
                cache = SnapshotCache(engine, progress=progress)
                start = cache.start_for_run(spec) if options.get("store_later") else cache.ensure(spec)
                if isinstance(start, RunBuild):
                    build = (cache, spec, start)
                    if start.data is not None:  # else the base cluster, as without a source
                        sources["postgres"] = start.data
                else:
                    sources["postgres"] = start
    importing = _prepared_meanwhile(build[1]) if build is not None else None
    try:
        begun = stack.begin(wanted, reap_first=reap_first, data_sources=sources)
    except ServiceStartError:
        if build is None or build[2].data is None or build[2].data.exists():
            raise
        # The checkpoint's snapshot was pruned while being copied (another project's build, `testlane cache
        # prune`): build the snapshot first, as without store_later.
        cache, spec, _ = build
        build = None
        with service_cause("postgres"):
            sources["postgres"] = cache.ensure(spec)
        begun = stack.begin(wanted, reap_first=False, data_sources=sources)
    if importing is not None:
        importing.join()
    if build is not None:
        _build_on_run_server(stack, *build, progress or (lambda message: None))
    return begun


def _prepared_meanwhile(spec: TemplateSpec) -> threading.Thread:
    """Import what applying ``spec``'s migrations needs (:meth:`MigrationSource.prepare`: Alembic and SQLAlchemy,
    0.3-0.7 s) in a thread, while this one copies the data directory in and the server starts; joined before
    the build, and so before anything else of the run runs (an import in a thread must not race pytest's own
    use of the loggers it creates: see the plugin's ``_import_clients``)."""

    def prepare() -> None:
        for source in (*spec.migrations, *spec.seed):
            source.prepare()

    thread = threading.Thread(target=prepare, name="testlane-prepare-migrations", daemon=True)
    thread.start()
    return thread


def _build_on_run_server(
    stack: ServiceStack, cache: SnapshotCache, spec: TemplateSpec, build: RunBuild, progress: Callable[[str], None]
) -> None:
    """Wait for the run's Postgres (started from ``build.data``) and build ``spec``'s template on it, resuming from
    the checkpoint; leave the snapshot's build to ``stack.run_deferred()``. A failing migration raises here, with
    the message a builder's build gives, and defers nothing (the run's server is stopped with the stack)."""
    start, steps = build.checkpoints.start, build.steps
    log.debug("replaying steps %d-%d on the run's server (%.2fs when last built)", start + 1, steps, build.seconds)
    where = f"from a checkpoint ({start} of {steps} steps unchanged)" if start else "from its first step"
    progress(
        f"building the migrated template ({spec.describe()}) on this run's server, {where}; its snapshot is "
        "stored for later runs after the tests"
    )
    with service_cause("postgres"):
        stack.finish("postgres")
        server = stack.servers["postgres"]
        assert isinstance(server, PostgresServer)
        ensure_template(server, spec, build.checkpoints)
    stack.defer(lambda: _store_after_run(cache, spec))


def _store_after_run(cache: SnapshotCache, spec: TemplateSpec) -> None:
    """Store the snapshot of a template a run built on its own server. A failure is the next run's to repeat (it
    builds the template again), not this run's result: logged, not raised; an interruption propagates."""
    try:
        with phase("storing the migrated template for later runs"):
            cache.store_after_run(spec)
    except Exception as exc:
        if last_interruption() is not None:
            raise  # pytest.exit() from pytest's SIGTERM handler: an interruption, not a failure
        log.warning("could not store the migrated template for later runs (the next run builds it again): %s", exc)
