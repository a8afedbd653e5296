"""The ``container`` backend: any engine in a container, through the podman or docker CLI.

Vanilla ``run`` (no compose): a unique name ``testlane-<engine>-<run id>``, labels naming the owner
run (host, PID and start time of the owning process), data on a ``--tmpfs``, the server's port
published on ``127.0.0.1`` at a reserved free port, ready when a real query answers (the container's
log tail goes into the error otherwise). Stopping is ``rm -f``. Containers whose owner run is dead are
reaped by label, so even one whose registry record is gone is found.

Every container requires a random password per instance. It reaches the container as an
environment variable named on the command line without its value (``-e NAME``: the CLI takes the
value from its own environment), so ``ps`` never shows it: Postgres's image reads
``POSTGRES_PASSWORD`` (and then requires it on TCP), MariaDB's ``MARIADB_ROOT_PASSWORD``; Valkey's
server reads its ``requirepass`` from standard input (``-``), fed by a here-document from
``TESTLANE_VALKEY_PASSWORD``.

Images follow the official images' conventions (``postgres``, ``valkey/valkey``, ``mariadb``);
``scripts/build-local-images.sh`` builds a compatible Postgres image from Debian packages for machines
that cannot reach a registry.

Podman on locked-down hosts needs adjustments, detected here (and shown by ``testlane doctor``):
``--cgroup-manager=cgroupfs`` when systemd is not PID 1, and ``--ulimit`` values within the host's
hard limits (podman's defaults can exceed them). ``container.runtime``/``cgroup_manager`` override.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import resource
import shutil
import socket
import subprocess
from dataclasses import dataclass
from typing import Any

from testlane.core.config import Settings
from testlane.core.errors import ServiceError, ServiceStartError
from testlane.core.runtime import RunContext
from testlane.core.waiting import WaitTimeout
from testlane.services import kinds
from testlane.services.backends import container_cli
from testlane.services.base import Server
from testlane.services.credentials import new_password
from testlane.services.external import KindEngine, KindLaunch
from testlane.services.instance import Instance
from testlane.services.kinds import ContainerSpec
from testlane.services.ports import reserve_port
from testlane.services.process import pid_alive
from testlane.services.registry import Registry

__all__ = ["ContainerEngine", "ContainerRuntime", "reap_containers", "remove_container"]

log = logging.getLogger("testlane")

LABEL = "testlane.run"


@dataclass(frozen=True)
class ContainerRuntime:
    """The CLI and the flags this host needs to run containers."""

    cli: str
    global_args: tuple[str, ...]
    run_args: tuple[str, ...]
    notes: tuple[str, ...]

    @property
    def is_podman(self) -> bool:
        return os.path.basename(self.cli).startswith("podman")

    def command(self, *args: str) -> list[str]:
        return [self.cli, *self.global_args, *args]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*args), capture_output=True, text=True, check=False, timeout=timeout)

    def describe(self) -> str:
        return " ".join([os.path.basename(self.cli), *self.global_args, "run", *self.run_args])


def _systemd_is_init() -> bool:
    try:
        with open("/proc/1/comm") as fh:
            return fh.read().strip() == "systemd"
    except OSError:
        return False


@functools.lru_cache(maxsize=4)
def _detect(cli: str, runtime: str, cgroup_manager: str, extra: tuple[str, ...]) -> ContainerRuntime:
    global_args: list[str] = []
    run_args: list[str] = []
    notes: list[str] = []
    if os.path.basename(cli).startswith("podman"):
        if runtime:
            global_args += ["--runtime", runtime]
        if cgroup_manager:
            global_args += ["--cgroup-manager", cgroup_manager]
        elif not _systemd_is_init():
            global_args += ["--cgroup-manager", "cgroupfs"]
            notes.append("systemd is not PID 1: --cgroup-manager=cgroupfs")
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
        if nofile != resource.RLIM_INFINITY and nofile < 1048576:
            run_args += ["--ulimit", f"nofile={nofile}:{nofile}"]
            notes.append(f"hard nofile limit {nofile}: --ulimit nofile={nofile}:{nofile}")
        if nproc != resource.RLIM_INFINITY:
            soft, hard = min(4096, nproc // 2), min(8192, nproc - 1)
            run_args += ["--ulimit", f"nproc={soft}:{hard}"]
            notes.append(f"hard nproc limit {nproc}: --ulimit nproc={soft}:{hard}")
    run_args += list(extra)
    return ContainerRuntime(cli, tuple(global_args), tuple(run_args), tuple(notes))


def detect_runtime(settings: Settings) -> ContainerRuntime:
    cli = container_cli(settings)
    if cli is None:
        raise ServiceError(
            "the container backend needs podman or docker, and neither is installed.",
            hint="install podman (apt-get install -y podman runc), or choose another backend.",
        )
    c = settings.container
    return _detect(cli, c.runtime, c.cgroup_manager, tuple(c.run_args))


def _owner_label(instance: Instance) -> str:
    return f"{socket.gethostname()}:{instance.owner_pid}:{instance.owner_create_time}"


class ContainerLaunch(KindLaunch):
    """``run -d`` a container and wait until its server answers a real query."""

    def __init__(
        self, *, runtime: ContainerRuntime, spec: ContainerSpec, image: str, command: list[str], **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.runtime = runtime
        self.spec = spec
        self.image = image
        self.command_args = command

    def prepare(self) -> None:
        self.registry.save(self.instance)

    def argv(self, port: int) -> list[str]:
        inst = self.instance
        args = [
            "run",
            "-d",
            "--name",
            inst.container or "",
            "--label",
            f"{LABEL}={inst.run_id}",
            "--label",
            f"testlane.owner={_owner_label(inst)}",
            "--label",
            f"testlane.engine={inst.engine}",
            "--tmpfs",
            self.spec.data,
            "-p",
            f"127.0.0.1:{port}:{self.spec.port}",
        ]
        for inner in self.spec.extra_ports:
            args += ["-p", f"127.0.0.1:{inst.extra[f'port_{inner}']}:{inner}"]
        for key, value in self.spec.env.items():
            args += ["-e", f"{key}={value}"]
        if self.spec.password_env:
            args += ["-e", self.spec.password_env]  # the value comes from the CLI's environment
        return self.runtime.command(*args, *self.runtime.run_args, self.image, *self.command_args)

    def spawn(self) -> None:
        self._reservation = reserve_port(
            self.context.ports_dir, fixed=self.fixed_port, setting=f"{self.instance.engine}.port"
        )
        self.instance.port = self._reservation.port
        extra = [reserve_port(self.context.ports_dir) for _ in self.spec.extra_ports]
        for inner, reservation in zip(self.spec.extra_ports, extra, strict=True):
            self.instance.extra[f"port_{inner}"] = reservation.port
            reservation.release()  # held only until the CLI publishes it, a moment later
        argv = self.argv(self.instance.port)
        log.debug("starting %s: %s", self.instance.name, " ".join(argv))
        env = None
        if self.spec.password_env and self.instance.password:
            env = {**os.environ, self.spec.password_env: self.instance.password}
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300, env=env)
        if proc.returncode != 0:
            self._release_port()
            detail = proc.stderr.strip() or proc.stdout.strip()
            missing_image = "image not known" in detail or "manifest unknown" in detail or "pull access" in detail
            raise ServiceStartError(
                f"{os.path.basename(self.runtime.cli)} could not start a {self.instance.engine} container from "
                f"{self.image}: {detail.splitlines()[-1] if detail else proc.returncode}",
                hint=(
                    "pull or build the image (without registry access: scripts/build-local-images.sh), or set "
                    f"{self.instance.engine}.image"
                    if missing_image
                    else "`testlane doctor` checks the container runtime and the flags this host needs."
                ),
            )
        self.instance.extra["container_id"] = proc.stdout.strip()
        self.registry.save(self.instance)

    def _logs(self) -> str:
        proc = self.runtime.run("logs", "--tail", "25", self.instance.container or "", timeout=30)
        return (proc.stdout + proc.stderr).strip()

    def wait(self) -> Server:
        server = self.make_server(None)
        try:
            self.await_query(
                server,
                timeout=self.start_timeout,
                what=f"{self.instance.engine} in container {self.instance.container} on port "
                f"{self.instance.port} to accept a query",
                ping_timeout=1.0,
                max_interval=0.25,
            )
        except WaitTimeout as exc:
            tail = self._logs()
            self.abort()
            raise ServiceStartError(
                f"{self.instance.engine} (container) did not start: {exc}",
                hint=f"the image is {self.image}.",
                log_tail=tail,
            ) from None
        finally:
            self._release_port()
        self.registry.save(self.instance)
        return server

    def abort(self) -> None:
        self._release_port()
        remove_container(self.instance, runtime=self.runtime)
        self.registry.remove(self.instance)


class ContainerEngine(KindEngine):
    """Launches one service in a container."""

    def __init__(self, engine: str, settings: Settings, context: RunContext, registry: Registry) -> None:
        super().__init__(engine, settings, context, registry)
        self.runtime = detect_runtime(settings)

    def _launch(self, name: str, owner_pid: int | None, owner_create_time: float | None) -> ContainerLaunch:
        kind = kinds.get(self.engine_name)
        spec = kind.container_spec(self.settings)
        if spec is None:
            raise ServiceError(f"{self.engine_name} cannot run in a container.", hint="choose another backend.")
        suffix = "" if name == self.engine_name else f"-{name}"
        instance = Instance(
            run_id=self.context.run_id,
            name=name,
            engine=self.engine_name,
            backend="container",
            user=spec.user,
            password=new_password() if spec.password_env else None,
            database=spec.database,
            owner_pid=owner_pid,
            owner_create_time=owner_create_time,
            container=f"testlane-{self.engine_name}-{self.context.run_id}{suffix}",
            extra={**spec.extra, "cli": self.runtime.cli, "global_args": list(self.runtime.global_args)},
        )
        return ContainerLaunch(
            runtime=self.runtime,
            spec=spec,
            image=kind.image(self.settings),
            command=list(spec.command),
            context=self.context,
            registry=self.registry,
            instance=instance,
            user=None,
            start_timeout=max(self.settings.start_timeout, 60.0),
            fixed_port=int(kind.section(self.settings).port),
        )


def remove_container(instance: Instance, *, runtime: ContainerRuntime | None = None) -> None:
    """``rm -f`` the instance's container (at once: its data is thrown away)."""
    if not instance.container:
        return
    cli = runtime.cli if runtime else str(instance.extra.get("cli") or shutil.which("podman") or "podman")
    global_args = list(runtime.global_args) if runtime else list(instance.extra.get("global_args", []))
    subprocess.run(
        [cli, *global_args, "rm", "-f", "-t", "0", instance.container],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def reap_containers(settings: Settings) -> list[str]:
    """Remove testlane containers on this host whose owner process is dead; return their names."""
    try:
        runtime = detect_runtime(settings)
    except ServiceError:
        return []
    proc = runtime.run("ps", "-a", "--filter", f"label={LABEL}", "--format", "json", timeout=60)
    if proc.returncode != 0 or not proc.stdout.strip():
        return []
    try:
        listed = json.loads(proc.stdout)
    except ValueError:
        return []
    host = socket.gethostname()
    removed = []
    for entry in listed if isinstance(listed, list) else []:
        labels = entry.get("Labels") or {}
        owner = str(labels.get("testlane.owner", ""))
        names = entry.get("Names") or []
        name = names[0] if isinstance(names, list) and names else str(names)
        owner_host, _, rest = owner.partition(":")
        pid_text, _, ctime_text = rest.partition(":")
        if owner_host != host or not pid_text.isdigit():
            continue  # another host's, or detached: not ours to judge
        ctime = float(ctime_text) if ctime_text not in ("", "None") else None
        if pid_alive(int(pid_text), ctime):
            continue
        runtime.run("rm", "-f", "-t", "0", name, timeout=120)
        removed.append(name)
    return removed
