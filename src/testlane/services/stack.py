"""A run's services together: reap leftovers, start in parallel, export, stop.

:class:`ServiceStack` is what ``testlane run``, ``testlane services start`` and
the pytest plugin use. Starting reaps orphans first, prepares every service's
data in parallel, spawns every process from the calling thread, then waits for
each to answer a real query. Stopping stops everything this stack owns and
removes the run directory. The stack is a context manager and stops what it
started even when a later service fails to start.

The services of a run are described to other processes (pytest workers, the
tests' subprocesses) by a JSON *services file* and ``TESTLANE_*`` variables.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from testlane.core import environment
from testlane.core.closing import Closing
from testlane.core.config import Settings
from testlane.core.errors import ConfigError, TestlaneError
from testlane.core.private import write_private_file
from testlane.core.redact import redact_url
from testlane.core.runenv import RunEnv
from testlane.core.runtime import RunContext
from testlane.core.service_names import canonical_services
from testlane.services import kinds
from testlane.services.backends import choose_backend
from testlane.services.base import KeepRequest, Launch, Progress, Server, stop_instance
from testlane.services.cache import sweep_staging
from testlane.services.external import UrlEngine
from testlane.services.instance import Instance
from testlane.services.kinds import Engine
from testlane.services.ports import sweep_port_locks
from testlane.services.registry import ReapReport, Registry, reap_reason

__all__ = [
    "SERVICES_FILE_ENV",
    "ServiceStack",
    "attach",
    "load_services_file",
    "reap",
    "stop_any_instance",
]

log = logging.getLogger("testlane")

SERVICES_FILE_ENV = environment.SERVICES_FILE


@contextlib.contextmanager
def service_cause(name: str) -> Iterator[None]:
    """A testlane error raised while starting service ``name`` has that service as its root cause
    (see :mod:`testlane.core.errors`): every test that needed it failed for that one reason."""
    try:
        yield
    except TestlaneError as exc:
        exc.blame(f"service {name}")
        raise


def _blamed(name: str, step: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        with service_cause(name):
            step()

    return run


def attach(instance: Instance, *, owned: bool = False, registry: Registry | None = None) -> Server:
    """A handle on a recorded instance (not owned: ``stop()`` leaves it running)."""
    kind = kinds.find(instance.engine)
    if kind is None:
        raise ConfigError(f"unknown engine {instance.engine!r} in a services record")
    return kind.handle(instance, registry=registry, owned=owned)


def stop_any_instance(instance: Instance) -> None:
    """Stop an instance whatever its backend (the reaper's stop function)."""
    stop_instance(instance)


def reap(context: RunContext, *, kept: bool = False) -> ReapReport:
    """Stop instances whose owner is dead and remove abandoned run directories and the cache's
    staging directories of dead processes.

    Servers kept for failed tests' databases are stopped once their time is up, or now with ``kept``.
    """
    context.ensure_dirs()
    report = Registry(context).reap(stop_any_instance, kept=kept)
    sweep_port_locks(context.ports_dir)
    report.removed_dirs.extend(sweep_staging(context.cache_dir))
    for inst in report.stopped:
        log.info("reaped %s %s of run %s (%s)", inst.engine, redact_url(inst.url), inst.run_id, reap_reason(inst))
    return report


def load_services_file(path: str | os.PathLike[str]) -> dict[str, Instance]:
    data = json.loads(Path(path).read_text())
    return {item["name"]: Instance.from_dict(item) for item in data["services"]}


class ServiceStack(Closing):
    """The services of one run (see module docstring)."""

    def __init__(
        self,
        settings: Settings,
        context: RunContext | None = None,
        *,
        progress: Progress | None = None,
        detached: bool = False,
        die_with_parent: bool = True,
    ) -> None:
        self.settings = settings
        self.context = context or RunContext.from_settings(settings)
        self.progress = progress
        self.detached = detached
        self.die_with_parent = die_with_parent
        self.registry = Registry(self.context)
        self.servers: dict[str, Server] = {}
        self._pending: dict[str, Launch] = {}
        self._engines: dict[str, Engine] = {}
        self._deferred: list[Callable[[], None]] = []

    # -- engines ---------------------------------------------------------------------------
    def engine(self, service: str) -> Engine:
        """The engine for ``service`` on its backend (see :func:`choose_backend`)."""
        if service not in self._engines:
            kind = kinds.get(service)
            choice = choose_backend(service, self.settings)
            log.debug("%s: %s backend (%s)", service, choice.backend, choice.reason)
            engine: Engine
            if choice.backend == "url":
                engine = UrlEngine(service, self.settings, self.context, self.registry)
            elif choice.backend == "container":
                from testlane.services.container import ContainerEngine

                engine = ContainerEngine(service, self.settings, self.context, self.registry)
            else:
                engine = kind.process_engine(
                    self.settings,
                    self.context,
                    self.registry,
                    backend=choice.backend,
                    progress=self.progress,
                    bin_dir=choice.bin_dir,
                )
            self._engines[service] = engine
        return self._engines[service]

    @staticmethod
    def validate(names: Iterable[str]) -> list[str]:
        """``names`` as canonical services (``redis`` is ``valkey``...), without duplicates; raises
        :class:`ConfigError` for a name that is no service (:mod:`testlane.core.service_names`)."""
        return canonical_services(names, "the services asked for")

    # -- lifecycle --------------------------------------------------------------------------
    def start(
        self,
        names: Iterable[str] | None = None,
        *,
        reap_first: bool = True,
        data_sources: dict[str, Path] | None = None,
    ) -> dict[str, Server]:
        """Start ``names`` (default: the configured services) in parallel; return all servers.

        ``data_sources`` maps a service to a prepared data directory to start from (Postgres: a
        migrated snapshot instead of the empty cached cluster).
        """
        self.begin(names, reap_first=reap_first, data_sources=data_sources)
        self.finish()
        return dict(self.servers)

    def begin(
        self,
        names: Iterable[str] | None = None,
        *,
        reap_first: bool = True,
        data_sources: dict[str, Path] | None = None,
    ) -> list[str]:
        """Prepare and spawn ``names`` without waiting for them (``finish`` waits); returns the names."""
        wanted = self.validate(self.settings.services if names is None else names)
        wanted = [n for n in wanted if n not in self.servers and n not in self._pending]
        self.context.ensure_dirs()
        if reap_first:
            reap(self.context)
        launches: list[Launch] = []
        try:
            for name in wanted:
                with service_cause(name):
                    launches.append(
                        self.engine(name).launch(
                            name,
                            detached=self.detached,
                            die_with_parent=self.die_with_parent,
                            data_source=(data_sources or {}).get(name),
                        )
                    )
            self._run_parallel([_blamed(launch.instance.name, launch.prepare) for launch in launches])
            for launch in launches:
                with service_cause(launch.instance.name):
                    launch.spawn()
                self._pending[launch.instance.name] = launch
        except BaseException:
            for launch in launches:
                self._pending.pop(launch.instance.name, None)
                launch.abort()
            raise
        return wanted

    def finish(self, name: str | None = None) -> None:
        """Wait until the spawned servers (or just ``name``) answer; a failure cleans up that server."""
        for pending in [n for n in list(self._pending) if name is None or n == name]:
            launch = self._pending.pop(pending)
            try:
                with service_cause(pending):
                    self.servers[pending] = launch.wait()
            except BaseException:
                launch.abort()
                if name is None:  # starting the whole set: do not leave the others running half-awaited
                    for other in list(self._pending):
                        self._pending.pop(other).abort()
                raise

    @property
    def pending(self) -> list[str]:
        return list(self._pending)

    def defer(self, step: Callable[[], None]) -> None:
        """Leave ``step`` for after the run's tests (:meth:`run_deferred`): work a start left out of the tests'
        way (the databases layer: storing the snapshot of a template built on the run's own server)."""
        self._deferred.append(step)

    @property
    def deferred(self) -> int:
        """How many steps :meth:`defer` left that have not run."""
        return len(self._deferred)

    def run_deferred(self) -> None:
        """Run, in order, what :meth:`defer` left: by the process that started the services, once its tests are
        done and before :meth:`stop` (which forgets what was not run: an interrupted run leaves it to the next).
        Each step handles its own errors; an interruption stops here."""
        while self._deferred:
            self._deferred.pop(0)()

    @staticmethod
    def _run_parallel(steps: list[Callable[[], None]]) -> None:
        if len(steps) <= 1:
            for step in steps:
                step()
            return
        with ThreadPoolExecutor(max_workers=len(steps), thread_name_prefix="testlane-prepare") as pool:
            futures = [pool.submit(step) for step in steps]
            errors = [f.exception() for f in futures]
        for error in errors:
            if error is not None:
                raise error

    def stop(self) -> None:
        """Stop every server this stack owns and remove the run directory.

        A server asked to stay up (``request_keep``: databases of failed tests kept for inspection)
        is detached instead: it keeps running without an owner until its time is up.
        """
        self._deferred.clear()
        for pending in list(self._pending):
            self._pending.pop(pending).abort()
        servers, self.servers = list(self.servers.values()), {}
        self.kept: list[Server] = []
        for server in reversed(servers):
            keep = server.keep_requested() if server.owned else None
            if keep is not None:
                self._detach(server, keep)
                continue
            try:
                server.stop()
            except Exception as exc:  # keep stopping the others
                log.warning("could not stop %s cleanly: %s", server, exc)
        if not self.detached and self.context.owner_pid == os.getpid():
            remaining = bool(self.kept)
            for inst in self.registry.instances(self.context.run_id):
                if inst.owner_pid == os.getpid() and not inst.extra.get("kept_until"):
                    # e.g. started on demand by a pytest worker, which may have asked to keep it (a failed
                    # test's database): then it stays up like one of ours, not stopped behind the summary's back
                    server = attach(inst, registry=self.registry)
                    keep = server.keep_requested()
                    if keep is not None:
                        self._detach(server, keep)
                        remaining = True
                        continue
                    stop_any_instance(inst)
                    self.registry.remove(inst)
                else:
                    remaining = True
            if not remaining:
                shutil.rmtree(self.context.run_dir, ignore_errors=True)

    def _detach(self, server: Server, keep: KeepRequest) -> None:
        inst = server.instance
        inst.owner_pid = None
        inst.owner_create_time = None
        inst.extra["kept_until"] = float(keep.get("until", 0))
        inst.extra["kept_notes"] = keep.get("notes", [])
        self.registry.save(inst)
        self.kept.append(server)
        log.warning(
            "kept %s at %s for failed tests' databases until %s (testlane reap --kept stops it now)",
            inst.name,
            redact_url(inst.url),
            time.strftime("%H:%M:%S", time.localtime(inst.extra["kept_until"])),
        )

    def close(self) -> None:
        """The same as :meth:`stop` (so ``with stack:`` stops it)."""
        self.stop()

    # -- describing the run -----------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """``TESTLANE_*`` variables for the tests: URLs, run id, owner, services file."""
        services_file = str(self.services_file) if self.servers else None
        env = RunEnv(run_id=self.context.run_id, owner_pid=self.context.owner_pid, services_file=services_file)
        out = env.to_environ()
        for server in self.servers.values():
            out.update(server.env())
        return out

    @property
    def services_file(self) -> Path:
        return self.context.run_dir / "services.json"

    def write_services_file(self) -> Path:
        """Write ``services.json`` (0600: it holds the servers' passwords) in the run's private directory."""
        self.context.ensure_run_dir()
        payload = {
            "run_id": self.context.run_id,
            "services": [json.loads(server.instance.to_json()) for server in self.servers.values()],
        }
        return write_private_file(self.services_file, json.dumps(payload, indent=2))
