"""Starting a run's services with the project's template in place.

When ``[tool.testlane.db]`` declares migrations (or extensions or seed steps), Postgres starts from
the migrated snapshot (built first if missing, see :mod:`testlane.databases.snapshots`), so the
template already exists in the new server and no migration runs on a warm start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypedDict, Unpack

from testlane.core.config import Settings
from testlane.core.errors import ConfigError, TestlaneError
from testlane.databases.leftovers import Leftover, reap_leftovers, sweep_run
from testlane.databases.snapshots import SnapshotCache
from testlane.databases.template import TemplateSpec, require_extensions
from testlane.services.backends import choose_backend, configured_backend
from testlane.services.base import Server
from testlane.services.external import url_instance
from testlane.services.postgres import PostgresEngine
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
    from the settings); ``reap_first`` (default true) reaps dead runs' leftovers before starting."""

    progress: Callable[[str], None] | None
    spec: TemplateSpec | None
    reap_first: bool


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
    wanted = stack.validate(stack.settings.services if names is None else names)
    stack.context.ensure_dirs()
    sources: dict[str, Path] = {}
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
                sources["postgres"] = SnapshotCache(engine, progress=progress).ensure(spec)
    return stack.begin(wanted, reap_first=options.get("reap_first", True), data_sources=sources)
