"""The service interface: a server handle, and the launch procedure process engines share.

A :class:`Server` is a handle on one :class:`Instance`: its URL, log file, status,
a real-query readiness check, and ``stop()``. Handles are context managers, clean
even when start fails. A handle either *owns* its server (it started it, or its
process owns the run) and stops it, or is *attached* (a pytest worker using the
run's server) and leaves it alone.

Starting a server process goes through :func:`launch`, in three steps so that
several services start in parallel while every process is spawned from the
caller's thread (Linux ties the parent-death signal to the spawning thread):

1. ``prepare`` (any thread): directories, data copy, registry record;
2. ``spawn`` (calling thread): a reserved port, the process;
3. ``wait`` (calling thread): a real query succeeds, or the process died (its log
   tail goes into the error), or the deadline passed. A port lost to another
   program between reservation and bind is retried with a new port.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Protocol, TypedDict, cast

from testlane.core.closing import Closing
from testlane.core.errors import ServiceStartError
from testlane.core.private import write_private_file
from testlane.core.redact import redact_url
from testlane.core.runtime import RunContext
from testlane.core.waiting import WaitTimeout, wait_until
from testlane.services.instance import Instance
from testlane.services.ports import PortReservation, reserve_port
from testlane.services.privileges import ServiceUser
from testlane.services.process import ProcessRef, log_tail, pid_alive, spawn, terminate
from testlane.services.registry import Registry, write_run_owner

__all__ = ["KEEP_MARKER", "Engine", "KeepRequest", "Launch", "Server", "stop_instance"]

log = logging.getLogger("testlane")

Progress = Callable[[str], None]

KEEP_MARKER = "keep.json"


class KeepRequest(TypedDict, total=False):
    """What ``keep.json`` says: keep the server until ``until`` (epoch seconds), for the reasons in ``notes``."""

    until: float
    notes: list[str]


BIND_FAILURE_MARKERS = ("Address already in use", "could not bind", "Could not create server TCP listening")


class Server(Closing, ABC):
    """A handle on one running server (see module docstring)."""

    engine: ClassVar[str]
    stop_signal: ClassVar[int] = 15  # SIGTERM; engines override

    def __init__(
        self,
        instance: Instance,
        *,
        registry: Registry | None = None,
        popen: subprocess.Popen[bytes] | None = None,
        owned: bool = True,
    ) -> None:
        self.instance = instance
        self.registry = registry
        self._popen = popen
        self.owned = owned
        self._stopped = False

    # -- description ---------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.instance.name

    @property
    def url(self) -> str:
        return self.instance.url

    @property
    def host(self) -> str:
        return self.instance.host

    @property
    def port(self) -> int:
        return self.instance.port

    @property
    def version(self) -> str:
        return self.instance.version

    @property
    def log_file(self) -> Path | None:
        return self.instance.log_path

    @property
    def pid(self) -> int | None:
        return self.instance.pid

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.log_file, lines)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {redact_url(self.url)} run={self.instance.run_id} pid={self.pid}>"

    # -- behaviour -------------------------------------------------------------------
    @abstractmethod
    def ping(self, timeout: float = 2.0) -> None:
        """Run one real query against the server; raise if it fails."""

    @abstractmethod
    def env(self) -> dict[str, str]:
        """Environment variables that describe this server to tests."""

    def ready(self) -> bool:
        """True when the server answers a real query now."""
        try:
            self.ping(timeout=1.0)
        except Exception:
            return False
        return True

    def gone(self) -> bool:
        """True when this server is known to be down: stopped, or its process has exited (a per-test lease's
        release skips it rather than wait out network timeouts). False when it cannot tell (no process)."""
        pid = self.instance.pid
        return self._stopped or (pid is not None and not pid_alive(pid, self.instance.pid_create_time))

    def status(self) -> str:
        """``running``, ``stopped`` or ``unresponsive`` (process alive, no answer)."""
        if self._stopped:
            return "stopped"
        if self.instance.pid is not None and not pid_alive(self.instance.pid, self.instance.pid_create_time):
            return "stopped"
        return "running" if self.ready() else "unresponsive"

    def request_keep(self, seconds: float, note: str) -> None:
        """Ask the owner to keep this server running after the run, for ``seconds`` (failed tests' data).

        The owner's ``ServiceStack.stop()`` then detaches the server instead of stopping it; the
        reaper stops it once the time is up (``testlane reap --kept`` at once).
        """
        if not self.instance.instance_dir:
            return
        marker = Path(self.instance.instance_dir) / KEEP_MARKER
        notes = []
        if marker.exists():
            with contextlib.suppress(ValueError, OSError):
                notes = json.loads(marker.read_text()).get("notes", [])
        notes.append(note)
        write_private_file(marker, json.dumps({"until": time.time() + seconds, "notes": notes}))

    def keep_requested(self) -> KeepRequest | None:
        if not self.instance.instance_dir:
            return None
        marker = Path(self.instance.instance_dir) / KEEP_MARKER
        try:
            return cast(KeepRequest, dict(json.loads(marker.read_text())))
        except (OSError, ValueError):
            return None

    def halt(self, *, clean: bool = True, timeout: float = 30.0) -> None:
        """Stop the server process but keep its directory (e.g. to snapshot its data).

        ``clean`` asks for an orderly shutdown (SIGINT: Postgres checkpoints and exits), so the
        data directory is consistent. ``stop()`` later removes the directory.
        """
        if self.instance.pid is not None:
            terminate(
                self._popen or self.instance.pid,
                create_time=self.instance.pid_create_time,
                first_signal=2 if clean else self.stop_signal,
                grace=timeout,
                group=True,
            )

    def stop(self) -> None:
        """Stop the server and remove its directory and record (only if this handle owns it)."""
        if self._stopped or not self.owned:
            return
        self._stopped = True
        stop_instance(self.instance, popen=self._popen, stop_signal=self.stop_signal)
        if self.registry is not None:
            self.registry.remove(self.instance)

    def close(self) -> None:
        """The same as :meth:`stop` (so ``with server:`` stops it)."""
        self.stop()


def _kill_by_dir(instance_dir: str) -> None:
    """Last resort when a record has no PID: kill processes whose command line names the dir."""
    import psutil

    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if any(instance_dir in part for part in cmdline) and proc.pid != os.getpid():
            with contextlib.suppress(psutil.Error, OSError):
                leads_group = os.getpgid(proc.pid) == proc.pid
                terminate(proc.pid, create_time=proc.create_time(), first_signal=9, grace=5, group=leads_group)


def stop_instance(
    instance: Instance,
    *,
    popen: subprocess.Popen[bytes] | None = None,
    stop_signal: int | None = None,
    timeout: float = 10.0,
) -> None:
    """Stop an instance and remove what it left (used by handles and the reaper).

    An existing server (``url`` backend) is never stopped; a container is removed; a process is
    stopped and its directory removed.
    """
    if instance.backend == "url":
        return
    if instance.backend == "container":
        from testlane.services.container import remove_container

        remove_container(instance)
        return
    if stop_signal is None:
        # kinds import this module: imported here, when a record is stopped
        from testlane.services import kinds

        kind = kinds.find(instance.engine)
        stop_signal = kind.handle.stop_signal if kind is not None else Server.stop_signal
    if instance.pid is not None:
        target = popen or instance.pid
        terminate(target, create_time=instance.pid_create_time, first_signal=stop_signal, grace=timeout, group=True)
    elif instance.instance_dir:
        _kill_by_dir(instance.instance_dir)
    if instance.instance_dir:
        # Only the instance's own directory: the run directory belongs to the run's owner (and the
        # reaper), and may hold other servers and locks of the same run.
        shutil.rmtree(instance.instance_dir, ignore_errors=True)


class Launch(ABC):
    """One server process being started: prepare → spawn → wait (see module docstring).

    Subclasses (engines) provide ``argv(port)``, ``make_server(...)`` and optionally
    ``prepare_data()``; this class owns directories, the registry record, port
    reservation, readiness and cleanup on failure.
    """

    max_bind_retries = 3
    # What the server's log says when its port was taken between our reservation and its bind (a retry on
    # new ports follows); a kind whose server words it differently adds its own.
    bind_failure_markers: ClassVar[tuple[str, ...]] = BIND_FAILURE_MARKERS

    def __init__(
        self,
        *,
        context: RunContext,
        registry: Registry,
        instance: Instance,
        user: ServiceUser | None,
        start_timeout: float,
        fixed_port: int = 0,
        die_with_parent: bool = True,
        env: dict[str, str] | None = None,
    ) -> None:
        self.context = context
        self.registry = registry
        self.instance = instance
        self.user = user
        self.start_timeout = start_timeout
        self.fixed_port = fixed_port
        self.die_with_parent = die_with_parent
        self.env = env
        self.instance_dir = context.instance_dir(instance.name)
        self._popen: subprocess.Popen[bytes] | None = None
        self._reservation: PortReservation | None = None
        self._attempt = 0

    # -- for engines -------------------------------------------------------------------
    @abstractmethod
    def argv(self, port: int) -> list[str]:
        """The server's command line for ``port``."""

    @abstractmethod
    def make_server(self, popen: subprocess.Popen[bytes]) -> Server:
        """A handle on the instance (``self.instance``) once it is ready."""

    def prepare_data(self) -> None:
        """Fill ``self.instance_dir`` (e.g. copy a cached cluster). Runs in any thread."""

    def check_ready(self, server: Server) -> bool:
        """One readiness attempt: True, or raises until the server answers. Engines may do their
        first-start work here (Postgres sets the run's password over its private socket)."""
        server.ping(timeout=1.0)
        return True

    # -- the procedure -------------------------------------------------------------------
    def prepare(self) -> None:
        inst = self.instance
        inst.instance_dir = str(self.instance_dir)
        inst.log_file = str(self.instance_dir / "server.log")
        self.registry.save(inst)  # recorded before anything exists, so a crash leaves a trace
        # Private to us; as root, the service user may pass through to its own instance directory.
        run_dir = self.context.ensure_run_dir(group=self.user.gid if self.user is not None else None)
        write_run_owner(run_dir, inst.owner_pid)
        self.instance_dir.mkdir(mode=0o700)
        if self.user is not None:
            os.chown(self.instance_dir, self.user.uid, self.user.gid)
        Path(inst.log_file).touch()
        self.prepare_data()

    def spawn(self) -> None:
        self._attempt += 1
        self._reservation = reserve_port(
            self.context.ports_dir, fixed=self.fixed_port, setting=f"{self.instance.engine}.port"
        )
        self.instance.port = self._reservation.port
        argv = self.argv(self.instance.port)
        log.debug("starting %s: %s", self.instance.name, " ".join(argv))
        self._popen = spawn(
            argv,
            log_file=Path(self.instance.log_file or os.devnull),
            env=self.env,
            cwd=self.instance_dir,
            user=self.user.uid if self.user else None,
            group=self.user.gid if self.user else None,
            die_with_parent=self.die_with_parent,
        )
        ref = ProcessRef.of(self._popen.pid)
        self.instance.pid = self._popen.pid
        self.instance.pid_create_time = ref.create_time if ref else None
        self.registry.save(self.instance)

    def _died(self) -> str | None:
        assert self._popen is not None
        code = self._popen.poll()
        return None if code is None else f"the server process exited with code {code}"

    def wait(self) -> Server:
        assert self._popen is not None
        probe = self.make_server(self._popen)
        try:
            wait_until(
                lambda: self.check_ready(probe),
                timeout=self.start_timeout,
                what=f"{self.instance.name} on port {self.instance.port} to accept a query",
                interval=0.005,
                max_interval=0.025,
                transient=(Exception,),
                abort=self._died,
            )
        except WaitTimeout as exc:
            tail = log_tail(self.instance.log_path, 25)
            if (
                self._popen.poll() is not None
                and any(m in tail for m in self.bind_failure_markers)
                and (not self.fixed_port and self._attempt <= self.max_bind_retries)
            ):
                log.debug("port %s was taken before %s bound it; retrying", self.instance.port, self.instance.name)
                self._release_port()
                self.spawn()
                return self.wait()
            self._kill()
            raise ServiceStartError(
                f"{self.instance.engine} ({self.instance.backend}) did not start: {exc}",
                # The log goes with the instance's directory (abort() removes it): quote it, never name it.
                hint=("its log's last lines are above" if tail.strip() else "it wrote nothing to its log")
                + "; `testlane doctor` checks binaries, permissions and tmpfs.",
                log_tail=tail,
            ) from None
        finally:
            self._release_port()
        return probe

    def _release_port(self) -> None:
        if self._reservation is not None:
            self._reservation.release()
            self._reservation = None

    def _kill(self) -> None:
        if self._popen is not None and self._popen.poll() is None:
            terminate(self._popen, first_signal=9, grace=5, group=True)

    def abort(self) -> None:
        """Undo everything after a failure: process, port, directory, record."""
        self._release_port()
        self._kill()
        stop_instance(self.instance, popen=self._popen, stop_signal=9, timeout=5)
        self.registry.remove(self.instance)

    def run(self) -> Server:
        """prepare → spawn → wait in the calling thread; cleans up on any failure."""
        try:
            self.prepare()
            self.spawn()
            return self.wait()
        except BaseException:
            self.abort()
            raise


class Engine(Protocol):
    """Starts servers of one service on one backend (a process engine, a container, an existing server)."""

    @abstractmethod
    def launch(
        self,
        name: str,
        *,
        detached: bool = False,
        die_with_parent: bool = True,
        data_source: Path | None = None,
    ) -> Launch:
        """A launch of a new instance named ``name`` (call ``.run()``, or prepare/spawn/wait yourself)."""
