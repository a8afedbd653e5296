"""Where a pytest session's servers come from: the run's, or started on demand.

Under ``testlane run`` the services are already up and described by the
services file (``TESTLANE_SERVICES_FILE``); the session attaches to them.
Otherwise a service is started the first time a test asks for it.

Under pytest-xdist all workers share one server per service (a Postgres server
serves many databases, and per-test isolation happens inside it; one server per
worker would multiply start-up cost and memory for nothing). The controller
process gives every worker the same run id and names itself the owner
(``TESTLANE_RUN_ID``/``TESTLANE_OWNER_PID``, set before workers start); the
first worker that needs a service starts it under a file lock, the others find
it in the registry and attach; the controller stops it at the end of the session.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

from testlane.core.config import Settings
from testlane.core.errors import TestlaneError
from testlane.core.interrupts import last_interruption, phase
from testlane.core.runenv import RunEnv
from testlane.core.runtime import RunContext
from testlane.databases.provision import (
    begin_services,
    reap_detached_leftovers,
    reap_shared_leftovers,
    start_services,
    sweep_shared_run,
)
from testlane.services.base import Server
from testlane.services.process import pid_alive
from testlane.services.registry import Registry, write_run_owner
from testlane.services.stack import ServiceStack, attach, load_services_file

__all__ = ["ServiceProvider"]

log = logging.getLogger("testlane")


class ServiceProvider:
    """Hands out server handles for one pytest process (see module docstring)."""

    def __init__(self, settings: Settings, *, progress: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.context = RunContext.from_settings(settings)
        self.registry = Registry(self.context)
        self.progress = progress
        self._handles: dict[str, Server] = {}
        self._from_file: dict[str, Server] = {}
        services_file = RunEnv.current().services_file
        if services_file and Path(services_file).is_file():
            for name, inst in load_services_file(services_file).items():
                self._from_file[name] = attach(inst)
        self._stack: ServiceStack | None = None
        self._prestart_error: Exception | None = None
        self._errors: dict[str, TestlaneError] = {}
        # One lock per service: the session's first test and a thread readying services ahead
        # (:meth:`ready_ahead`) may ask for the same one; different services wait independently.
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._ahead: list[threading.Thread] = []

    @property
    def owns_run(self) -> bool:
        return self.context.owner_pid == os.getpid()

    def active(self) -> dict[str, Server]:
        """Every server this session knows without starting anything: the run's, and those started so far.

        For reporters (log excerpts of the servers a failing test used) and diagnostics.
        """
        known = dict(self._from_file)
        if self._stack is not None:
            known.update(self._stack.servers)
        known.update(self._handles)
        return known

    @property
    def prestart_error(self) -> Exception | None:
        """What :meth:`prestart` failed with (``get`` raises it for the tests that need a service), if it did."""
        return self._prestart_error

    def provided_by_run(self, name: str) -> bool:
        """True when ``testlane run`` (or detached services) already provide ``name``."""
        return name in self._from_file

    def prestart(self, names: list[str]) -> None:
        """Spawn services now without waiting (they boot while pytest collects); ``get`` waits.

        Only for a process that owns its run (not under xdist). A failure is kept and raised by
        ``get`` for the tests that need the service.
        """
        wanted = [n for n in names if n not in self._from_file]
        if not wanted or not self.owns_run:
            return
        try:
            stack = self._own_stack()
            with phase("starting the services"):
                # store_later: close() stores a snapshot the start left for after the tests
                begin_services(stack, wanted, progress=self.progress, store_later=True)
        except Exception as exc:  # reported by the tests that need the service, not as an INTERNALERROR
            self._prestart_error = exc

    def _own_stack(self) -> ServiceStack:
        if self._stack is None:
            self._stack = ServiceStack(
                self.settings,
                self.context,
                progress=self.progress,
                # A worker must not take the shared server down when it exits early, and a server
                # that may be kept for failed tests' databases must outlive this process.
                die_with_parent=self.owns_run and not self.settings.db.keep_failed,
            )
        return self._stack

    def ready_ahead(self, names: list[str]) -> None:
        """Wait for the prestarted ``names`` in a background thread (``testlane-ahead-services``), so that
        the first test that asks finds them ready: their readiness checks (and the client libraries those
        import, e.g. redis-py: about 0.2 s) overlap collection and the other services' start instead of
        following it. Errors are kept by :meth:`get` for the tests, as usual; :meth:`close` joins."""
        wanted = [n for n in names if n not in self._from_file]
        if not wanted or self._prestart_error is not None:
            return

        def ready() -> None:
            for name in wanted:
                try:
                    self.get(name)
                except BaseException as exc:  # kept by get() for the tests that need it
                    log.debug("readying %s ahead: %s", name, exc)

        thread = threading.Thread(target=ready, name="testlane-ahead-services", daemon=True)
        thread.start()
        self._ahead.append(thread)

    def get(self, name: str) -> Server:
        """The server for service ``name``, started now if nobody provides it (thread-safe)."""
        if name in self._handles:
            return self._handles[name]
        with self._locks_lock:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            return self._get_locked(name)

    def _get_locked(self, name: str) -> Server:
        if name in self._handles:
            return self._handles[name]
        if self._prestart_error is not None:
            raise self._prestart_error
        if name in self._errors:  # one attempt per service: every test that needs it fails the same way
            raise self._errors[name]
        try:
            return self._get(name)
        except TestlaneError as exc:
            self._errors[name] = exc.blame(f"service {name}")
            raise

    def _get(self, name: str) -> Server:
        stack = self._stack
        with phase("starting the services"):
            if stack is not None and (name in stack.pending or name in stack.servers):
                # (Postgres is waited for by the start itself when the template is built on it)
                stack.finish(name)
                reap_shared_leftovers(stack)
                self._handles[name] = stack.servers[name]
                return self._handles[name]
            if name in self._from_file:
                server = self._from_file[name]
                if self.owns_run:  # on a detached server: what killed sessions left (their owner is gone)
                    reap_detached_leftovers(server)
            else:
                server = self._start_or_attach(name)
        self._handles[name] = server
        return server

    def _start_or_attach(self, name: str) -> Server:
        self.context.ensure_dirs()
        run_dir = self.context.ensure_run_dir()
        write_run_owner(run_dir, self.context.owner_pid)
        lock = FileLock(str(run_dir / f".{name}.start.lock"), timeout=600)
        with lock:
            inst = self.registry.find(self.context.run_id, name)
            if inst is not None and inst.pid is not None and pid_alive(inst.pid, inst.pid_create_time):
                return attach(inst)
            stack = self._own_stack()
            start_services(stack, [name], progress=self.progress, reap_first=self.owns_run, store_later=True)
            return stack.servers[name]

    def close(self, *, keep_databases: bool = False) -> None:
        """Stop what this process owns (the run owner stops what its workers started, too).

        The run owner also drops, on existing servers, every database carrying the run's owner
        record — unless ``keep_databases`` (failed tests' databases kept for inspection).
        """
        for thread in self._ahead:
            thread.join()  # bounded by the servers' start timeouts; it must not outlive their stop
        self._ahead.clear()
        self._handles.clear()
        self._store_deferred()
        if self.owns_run:
            if not keep_databases:
                shared = [attach(inst) for inst in self.registry.instances(self.context.run_id) if inst.outlives_run]
                # and the detached servers (`testlane services start`) this session used: they outlive it too
                shared += [server for server in self._from_file.values() if server.instance.detached]
                sweep_shared_run(shared, self.context.run_id)
            stack = self._stack or ServiceStack(self.settings, self.context)
            stack.stop()
        elif self._stack is not None:
            self._stack.servers.clear()  # owned by the run owner, which stops it

    def _store_deferred(self) -> None:
        """What this process's start left for after the tests (a snapshot to store), unless the session was
        interrupted: then the next run does it. An interruption of the store itself ends it there (nothing half
        stored: see the snapshots module) and the clean-up goes on; the line saying so is printed at the end."""
        if self._stack is None or not self._stack.deferred or last_interruption() is not None:
            return
        try:
            self._stack.run_deferred()
        except BaseException:  # KeyboardInterrupt, or pytest.exit() from the SIGTERM handler
            if last_interruption() is None:
                raise
