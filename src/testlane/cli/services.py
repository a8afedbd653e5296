"""``testlane services start|stop|status|logs|env`` and ``testlane reap``.

Services started with ``testlane services start`` are *detached*: they have no
owner process, survive the command, and run until ``testlane services stop``.
They all belong to one detached run, so starting again only starts what is
missing. ``testlane run`` and pytest sessions have owners; ``reap`` cleans up
after owners that died without stopping their servers.
"""

from __future__ import annotations

import shlex
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from testlane.cli.common import CliState, console, pass_state, progress_printer
from testlane.core.config import Settings
from testlane.core.envmap import Reference, referenced_services, validate_mapping
from testlane.core.errors import ServiceError, UnreachableError
from testlane.core.redact import redact_url
from testlane.core.runenv import RunEnv
from testlane.core.runtime import RunContext
from testlane.core.service_names import canonical
from testlane.databases.appdb import mapped_environment
from testlane.databases.leftovers import Leftover, reap_leftovers
from testlane.databases.provision import start_services
from testlane.services import kinds
from testlane.services.backends import choose_backend
from testlane.services.external import instance_from_url
from testlane.services.instance import Instance
from testlane.services.process import log_tail, pid_alive
from testlane.services.registry import Registry, owner_alive, reap_reason
from testlane.services.stack import ServiceStack, attach, reap, stop_any_instance

__all__ = ["reap_command", "services_group"]


def _context(state: CliState) -> RunContext:
    return RunContext.from_settings(state.settings())


def _detached(registry: Registry) -> list[Instance]:
    """Services started with `testlane services start` (not servers kept for failed tests)."""
    return [inst for inst in registry.instances() if inst.detached and not inst.extra.get("kept_until")]


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


@click.group("services")
def services_group() -> None:
    """Start detached services for manual debugging, and inspect running ones."""


@services_group.command("start")
@click.argument("names", nargs=-1)
@pass_state
def start_command(state: CliState, names: tuple[str, ...]) -> None:
    """Start services (default: the configured ones) that keep running after this command."""
    settings = state.settings()
    base = _context(state)
    registry = Registry(base)
    base.ensure_dirs()
    reap(base)
    existing = _detached(registry)
    run_id = existing[0].run_id if existing else base.run_id
    context = RunContext(run_id, 0, base.data_root, base.state_dir, base.cache_dir)
    wanted = ServiceStack.validate(list(names) or [*settings.services, *referenced_services(settings.env)])
    already = {inst.name: inst for inst in existing if inst.name in wanted}
    stack = ServiceStack(settings, context, progress=progress_printer(state.quiet), detached=True)
    stack.servers.update({name: attach(inst) for name, inst in already.items()})
    start_services(
        stack, [n for n in wanted if n not in already], reap_first=False, progress=progress_printer(state.quiet)
    )
    stack.write_services_file()
    for name, server in stack.servers.items():
        note = " (already running)" if name in already else ""
        console.print(escape(f"{name}: {redact_url(server.url)}  pid {server.pid}, log {server.log_file}{note}"))
    console.print('[dim]Use them from a shell (with their passwords) with:[/dim] eval "$(testlane services env)"')


@services_group.command("stop")
@click.argument("names", nargs=-1)
@pass_state
def stop_command(state: CliState, names: tuple[str, ...]) -> None:
    """Stop detached services (all, or the NAMES given)."""
    registry = Registry(_context(state))
    names = tuple(canonical(name) or name for name in names)  # `redis` is valkey
    targets = [inst for inst in _detached(registry) if not names or inst.name in names]
    if not targets:
        console.print("no detached services are running")
        return
    for inst in targets:
        stop_any_instance(inst)
        registry.remove(inst)
        console.print(escape(f"stopped {inst.name} ({redact_url(inst.url)})"))
    remaining = _detached(registry)
    if not remaining:
        for run_id in {inst.run_id for inst in targets}:
            shutil.rmtree(registry.context.data_root / run_id, ignore_errors=True)
    else:
        stack = ServiceStack(state.settings(), RunContext(remaining[0].run_id, 0, *_dirs(registry)), detached=True)
        stack.servers.update({inst.name: attach(inst) for inst in remaining})
        stack.write_services_file()


def _dirs(registry: Registry) -> tuple[Path, Path, Path]:
    c = registry.context
    return c.data_root, c.state_dir, c.cache_dir


@services_group.command("status")
@pass_state
def status_command(state: CliState) -> None:
    """List every testlane server of this user: PID, port, age, owner, state."""
    registry = Registry(_context(state))
    instances = registry.instances()
    if not instances:
        console.print("no testlane servers are running")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("NAME", "ENGINE", "RUN", "PID", "PORT", "AGE", "OWNER", "STATE", "URL"):
        table.add_column(column)
    now = time.time()
    for inst in instances:
        alive = pid_alive(inst.pid, inst.pid_create_time) if inst.pid else inst.backend == "url"
        owner = "detached" if inst.detached else str(inst.owner_pid)
        if inst.extra.get("kept_until"):
            owner = "kept until " + time.strftime("%H:%M", time.localtime(float(inst.extra["kept_until"])))
        if not inst.detached and not owner_alive(inst):
            owner += " (dead: reap)"
        table.add_row(
            inst.name,
            f"{inst.engine} {inst.version} ({inst.backend})",
            inst.run_id,
            str(inst.pid or "-"),
            str(inst.port),
            _age(now - inst.started_at),
            owner,
            "running" if alive else "stopped",
            redact_url(inst.url),
        )
    console.print(table)


def _pick(registry: Registry, name: str, run_id: str | None) -> Instance:
    candidates = [inst for inst in registry.instances(run_id) if inst.name == name]
    if not candidates:
        raise ServiceError(
            f"no running service named {name!r}" + (f" in run {run_id}" if run_id else "") + ".",
            hint="`testlane services status` lists what is running.",
        )
    candidates.sort(key=lambda inst: (not inst.detached, -inst.started_at))
    return candidates[0]


@services_group.command("logs")
@click.argument("name")
@click.option("--run", "run_id", help="Run id, when several runs have a service of that name.")
@click.option("-n", "--lines", default=50, show_default=True, help="How many lines from the end.")
@pass_state
def logs_command(state: CliState, name: str, run_id: str | None, lines: int) -> None:
    """Print the end of a service's log (detached services first, then the newest run)."""
    inst = _pick(Registry(_context(state)), canonical(name) or name, run_id)
    click.echo(log_tail(inst.log_path, lines))


@services_group.command("env")
@pass_state
def env_command(state: CliState) -> None:
    """Print `export` lines for the detached services, to paste or eval in a shell."""
    registry = Registry(_context(state))
    detached = _detached(registry)
    if not detached:
        raise ServiceError("no detached services are running.", hint="start them with `testlane services start`.")
    env: dict[str, str] = {}
    for inst in detached:
        env.update(attach(inst).env())
    services_file = registry.context.data_root / detached[0].run_id / "services.json"
    if services_file.exists():
        env.update(RunEnv(services_file=str(services_file)).to_environ())
    settings = state.settings()
    servers = {inst.name: attach(inst) for inst in detached}
    env.update(mapped_environment(settings, servers, detached[0].run_id, only_available=True))
    for key, value in env.items():
        click.echo(f"export {key}={shlex.quote(value)}")
    click.echo("# add TESTLANE_IT=1 (or pytest --it) to run the integration lane against them")
    left_out = _left_out(settings.env, servers)
    if left_out:
        missing = sorted({service for services in left_out.values() for service in services})
        click.echo(
            f"# left out {', '.join(left_out)} ([tool.testlane.env]): their service is not running "
            f"(start it: `testlane services start {' '.join(missing)}`)",
            err=True,
        )


def _left_out(mapping: dict[str, str], running: Mapping[str, object]) -> dict[str, list[str]]:
    """The mapped variables that refer to services not running -> those services."""
    out: dict[str, list[str]] = {}
    for variable, parts in validate_mapping(mapping).items():
        missing = [p.service for p in parts if isinstance(p, Reference) and p.service not in running]
        if missing:
            out[variable] = sorted(set(missing))
    return out


def _reap_url_leftovers(settings: Settings, other_hosts_older_than: float | None) -> list[Leftover]:
    """Leftovers of dead runs on the configured existing servers that hold testlane's databases."""
    dropped: list[Leftover] = []
    for kind in kinds.registered():
        service = kind.name
        if not kind.hosts_databases:
            continue
        url = str(kind.section(settings).url)
        if not url or choose_backend(service, settings).backend != "url":
            continue  # no URL: no existing server (and `auto` need not look for binaries)
        server = kind.handle(instance_from_url(service, url, run_id="reaper", name=service))
        try:
            dropped += reap_leftovers(server, other_hosts_older_than=other_hosts_older_than)
        except Exception as exc:
            raise UnreachableError(
                f"could not reap leftovers on the existing server {redact_url(url)}: {exc}",
                hint=f"check {service}.url.",
            ) from None
    return dropped


def _reap_detached_leftovers(registry: Registry, other_hosts_older_than: float | None) -> list[Leftover]:
    """Leftovers of dead sessions on the running detached servers (``testlane services start``) that hold
    databases: a session killed before its end could not drop its clones there."""
    dropped: list[Leftover] = []
    for inst in _detached(registry):
        kind = kinds.find(inst.engine)
        if kind is None or not kind.hosts_databases or inst.pid is None:
            continue
        if not pid_alive(inst.pid, inst.pid_create_time):
            continue  # stopped: the reaper removes the server with its databases
        try:
            dropped += reap_leftovers(attach(inst), other_hosts_older_than=other_hosts_older_than)
        except Exception as exc:
            raise UnreachableError(
                f"could not reap leftovers on the detached {inst.engine} server (port {inst.port}): {exc}",
                hint="check it with `testlane services status`, or stop it with `testlane services stop`.",
            ) from None
    return dropped


@click.command("reap")
@click.option("--kept", is_flag=True, help="Also stop servers kept for failed tests' databases, now.")
@click.option(
    "--other-hosts-older-than",
    "other_hosts_hours",
    type=click.FloatRange(min=0),
    default=None,
    metavar="HOURS",
    help="On an existing server (url backend), also drop testlane databases that runs on OTHER hosts created "
    "more than HOURS ago (their owners cannot be checked from here; by default they are never dropped).",
)
@pass_state
def reap_command(state: CliState, kept: bool, other_hosts_hours: float | None) -> None:
    """Stop servers whose owning run is dead and remove their directories.

    On existing servers (url backend) drop only the databases that carry testlane's complete owner
    record and whose owner ran on this host and is gone.
    """
    report = reap(_context(state), kept=kept)
    from testlane.services.container import reap_containers

    settings = state.settings()
    for name in reap_containers(settings):
        console.print(f"removed container {name} (its owner is gone)")
    other = other_hosts_hours * 3600 if other_hosts_hours is not None else None
    dropped = _reap_url_leftovers(settings, other)
    for leftover in dropped:
        console.print(escape(f"dropped database {leftover.name} on the existing server ({leftover.reason})"))
    detached = _reap_detached_leftovers(Registry(_context(state)), other)
    for leftover in detached:
        console.print(escape(f"dropped database {leftover.name} on the detached server ({leftover.reason})"))
    dropped += detached
    for inst in report.stopped:
        console.print(f"reaped {inst.engine} of run {inst.run_id} (pid {inst.pid}, {reap_reason(inst)})")
    for path in report.removed_dirs:
        console.print(escape(f"removed {path}"))
    if not report and not dropped:
        console.print("nothing to reap")
