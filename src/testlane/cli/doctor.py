"""``testlane doctor``: what testlane found on this machine, and how to fix what is wrong.

Each check prints ``ok``, ``warn`` or ``FAIL`` with what it saw; every warn and
FAIL comes with a fix. The exit code is 1 when any check failed. Only the services the project uses
(``services``, and what ``[tool.testlane.env]`` refers to) warn or fail: another service's problem (an
extra not installed) is an ``info`` line, with what would fix it.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import click
from rich.markup import escape

from testlane.cli.common import CliState, console, pass_state
from testlane.core.config import Settings
from testlane.core.errors import TestlaneError
from testlane.core.runtime import RunContext, is_root, is_writable_tmpfs
from testlane.services.privileges import lookup_user
from testlane.services.registry import Registry, owner_alive

if TYPE_CHECKING:
    from testlane.services.kinds import ServiceKind

__all__ = ["Check", "doctor_command", "run_checks"]


@dataclass
class Check:
    """One line of the doctor's report."""

    status: str  # "ok" | "warn" | "fail" | "info" (a problem of a service this project does not use)
    topic: str
    detail: str
    fix: str = ""


def _check(topic: str, fn: Callable[[], Check]) -> Check:
    try:
        return fn()
    except TestlaneError as exc:
        return Check("fail", topic, exc.message, exc.hint or "")
    except Exception as exc:  # a doctor must report, not crash
        return Check("fail", topic, f"{type(exc).__name__}: {exc}")


def _python() -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    from importlib.metadata import version as dist_version

    return Check("ok", "python", f"Python {version} at {sys.executable}; testlane {dist_version('testlane')}")


def _user(settings: Settings) -> Check:
    if not is_root():
        return Check("ok", "user", f"running as uid {os.getuid()}: servers run as this user")
    found = lookup_user(settings.service_user)
    if found is not None:
        return Check("ok", "user", f"running as root: servers run as {found.name!r} (uid {found.uid}), which exists")
    can_create = bool(shutil.which("useradd") or shutil.which("adduser"))
    if can_create:
        return Check(
            "ok",
            "user",
            f"running as root: servers will run as {settings.service_user!r}, created on first start",
        )
    return Check(
        "warn",
        "user",
        f"running as root, user {settings.service_user!r} does not exist and cannot be created; "
        "servers will run as 'nobody'",
        f"create it: useradd --system {settings.service_user}",
    )


def _data_dir(context: RunContext) -> Check:
    root = context.data_root
    base = root.parent
    usage = shutil.disk_usage(base if base.exists() else "/")
    free = f"{usage.free / 2**30:.1f} GiB free"
    if is_writable_tmpfs(base) or is_writable_tmpfs(root):
        return Check("ok", "data dir", f"{root} on tmpfs ({free})")
    return Check(
        "warn",
        "data dir",
        f"{root} is not on tmpfs ({free}); database clones cost 30-470 ms of disk time instead of ~10 ms",
        "set data_dir (TESTLANE_DATA_DIR) to a tmpfs such as /dev/shm, or mount one",
    )


def _cache(context: RunContext) -> Check:
    from testlane.services.cache import list_entries

    cache = context.cache_dir
    if not cache.exists():
        return Check("ok", "cache", f"{cache} (empty: the first start initializes a cluster, ~0.5 s)")
    if not os.access(cache, os.W_OK):
        return Check("fail", "cache", f"{cache} is not writable", "set cache_dir (TESTLANE_CACHE_DIR)")
    entries = list_entries(cache, sizes=False)  # the entries `testlane cache list` shows (lock files aside)
    current = [e for e in entries if not e.stale]
    clusters = sorted(e.key for e in current if e.kind == "postgres")
    snapshots = sum(1 for e in current if e.kind == "snapshot")
    detail = f"{cache}: clusters {', '.join(clusters) or 'none yet'}; {snapshots} migrated snapshot(s)"
    stale = len(entries) - len(current)
    if stale:
        detail += f"; {stale} stale entr{'y' if stale == 1 else 'ies'} (`testlane cache prune --stale` frees them)"
    return Check("ok", "cache", detail)


def _needed(settings: Settings) -> set[str]:
    """The services this project uses: its ``services`` (what ``testlane run`` starts) and what its
    ``[tool.testlane.env]`` refers to."""
    from testlane.core.envmap import referenced_services

    return set(settings.services) | referenced_services(settings.env)


def _as_information(check: Check, settings: Settings) -> Check:
    """A warning or failure about a service the project does not use, as a plain information line."""
    if check.status not in ("warn", "fail"):
        return check
    used = ", ".join(settings.services) or "none"
    detail = f"{check.detail} (not used by this project: services = {used}"
    detail += f"; to use it: {check.fix})" if check.fix else ")"
    return Check("info", check.topic, detail)


def _kinds(settings: Settings) -> list[Check]:
    """Each service kind's own checks (binaries, versions, Postgres's extensions), in registration order.
    Only the services the project uses warn or fail; the others' problems are information."""
    from testlane.services import kinds

    needed = _needed(settings)
    checks: list[Check] = []
    for kind in kinds.registered():
        try:
            found = [Check(*check) for check in kind.doctor_checks(settings)]
        except Exception as exc:
            found = [Check("fail", kind.name, f"{type(exc).__name__}: {exc}")]
        checks += found if kind.name in needed else [_as_information(check, settings) for check in found]
    return checks


def _containers(settings: Settings) -> list[Check]:
    from testlane.services.container import detect_runtime

    try:
        runtime = detect_runtime(settings)
    except TestlaneError as exc:
        return [
            Check(
                "ok",
                "containers",
                "no podman or docker (the container backend is unavailable)",
                exc.hint or "" if "container" in (settings.backend, settings.postgres.backend) else "",
            )
        ]
    probe = runtime.run("info", timeout=60)
    if probe.returncode != 0:
        return [
            Check(
                "warn",
                "containers",
                f"{runtime.cli} is installed but `info` fails: "
                f"{(probe.stderr or probe.stdout).strip().splitlines()[-1:] or ''}",
                "check the container engine's installation",
            )
        ]
    notes = "; ".join(runtime.notes) or "no host-specific flags needed"
    return [Check("ok", "containers", f"{runtime.describe()} ({notes})")]


def _backends(settings: Settings) -> list[Check]:
    from testlane.services import kinds
    from testlane.services.backends import choose_backend

    checks = []
    needed = _needed(settings)
    for kind in kinds.registered():
        service = kind.name
        try:
            choice = choose_backend(service, settings)
        except TestlaneError as exc:
            check = Check("fail", f"{service} backend", exc.message, exc.hint or "")
            checks.append(check if service in needed else _as_information(check, settings))
            continue
        detail = f"{choice.backend} ({choice.reason})"
        status, fix = "ok", ""
        if choice.backend == "url":
            reach = _reachable(kind, settings)
            detail += reach
            if "NOT reachable" in reach:
                status, fix = "fail", f"start that server or correct {service}.url"
        checks.append(Check(status, f"{service} backend", detail, fix))
    return checks


def _reachable(kind: ServiceKind, settings: Settings) -> str:
    from testlane.services.external import instance_from_url

    url = str(kind.section(settings).url)
    try:
        instance = instance_from_url(kind.name, url, run_id="doctor", name=kind.name)
        kind.handle(instance, owned=False).ping(timeout=3.0)
    except Exception as exc:
        return f"; NOT reachable: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
    return "; reachable"


def _registry(context: RunContext) -> Check:
    instances = Registry(context).instances()
    orphans = [inst for inst in instances if not owner_alive(inst)]
    if orphans:
        return Check(
            "warn",
            "servers",
            f"{len(instances)} recorded, {len(orphans)} whose owner is dead",
            "run `testlane reap` (every start also reaps them)",
        )
    return Check("ok", "servers", f"{len(instances)} testlane server(s) running for this user")


def run_checks(settings: Settings) -> list[Check]:
    context = RunContext.from_settings(settings)
    checks = [
        _check("python", _python),
        _check(
            "config",
            lambda: Check("ok", "config", str(settings.config_file or "no pyproject.toml found: defaults")),
        ),
        _check("user", lambda: _user(settings)),
        _check("data dir", lambda: _data_dir(context)),
        _check("cache", lambda: _cache(context)),
    ]
    for group in (_kinds, _containers, _backends):
        try:
            checks.extend(group(settings))
        except Exception as exc:
            checks.append(Check("fail", group.__name__.strip("_"), f"{type(exc).__name__}: {exc}"))
    checks.append(_check("servers", lambda: _registry(context)))
    return checks


STYLE = {"ok": "[green]ok[/green]  ", "warn": "[yellow]warn[/yellow]", "fail": "[red]FAIL[/red]", "info": "info"}


@click.command("doctor")
@pass_state
def doctor_command(state: CliState) -> None:
    """Check binaries, versions, root handling, tmpfs and the cache; say how to fix problems."""
    checks = run_checks(state.settings())
    width = max(len(c.topic) for c in checks)
    for check in checks:
        console.print(f"{STYLE[check.status]} {check.topic.ljust(width)}  {escape(check.detail)}")
        if check.fix:
            console.print(f"      {' ' * width}  [dim]fix:[/dim] {escape(check.fix)}")
    if any(c.status == "fail" for c in checks):
        raise SystemExit(1)
