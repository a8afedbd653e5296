"""The services testlane runs, and the other names people call them by.

One table, used wherever a service is named by a user: the ``services`` setting (and ``--services``),
``testlane services start NAME``, and ``[tool.testlane.env]`` references (``{redis.url}``). A user
who writes ``redis`` gets Valkey (the fixtures are ``redis_url``, ``redis_client``: Valkey speaks the
Redis protocol), ``postgresql`` gets ``postgres``, ``mysql`` gets ``mariadb``; every message names the
canonical service.
"""

from __future__ import annotations

from collections.abc import Iterable

from testlane.core.errors import ConfigError

__all__ = [
    "ALIASES",
    "BUILT_IN",
    "SERVICES",
    "canonical",
    "canonical_services",
    "declare",
    "forget",
    "known",
    "unknown_hint",
]

# The built-in kinds' names, here and not in their modules (testlane.services.kinds) because settings are
# validated when they load and core imports nothing above it; a kind registered later adds its own
# (:func:`declare`, called by testlane.services.kinds.register). A built-in kind's module is
# ``testlane.services.kinds.<name>``, imported when the kind is first asked for.
BUILT_IN: tuple[str, ...] = ("postgres", "valkey", "mariadb", "nats", "rabbitmq", "mqtt", "s3")
SERVICES: tuple[str, ...] = BUILT_IN
ALIASES = {"postgresql": "postgres", "redis": "valkey", "mysql": "mariadb", "mosquitto": "mqtt"}


def declare(name: str, aliases: Iterable[str] = ()) -> None:
    """Make ``name`` (and its ``aliases``) a service name (a service kind registered after core loaded)."""
    global SERVICES
    if name not in SERVICES:
        SERVICES = (*SERVICES, name)
    for alias in aliases:
        ALIASES.setdefault(alias, name)


def forget(name: str) -> None:
    """Undo :func:`declare` for a kind that is not built in."""
    global SERVICES
    if name in BUILT_IN:
        return
    SERVICES = tuple(s for s in SERVICES if s != name)
    for alias in [a for a, s in ALIASES.items() if s == name]:
        del ALIASES[alias]


def canonical(name: str) -> str | None:
    """``name``'s service (``"redis"`` -> ``"valkey"``), or None when it names none."""
    name = name.strip().lower()
    return name if name in SERVICES else ALIASES.get(name)


def known() -> str:
    """The names a user may write, for messages: ``postgres, valkey, mariadb (aliases: ...)``."""
    aliases = ", ".join(f"{alias} = {service}" for alias, service in ALIASES.items())
    return f"{', '.join(SERVICES)} (aliases: {aliases})"


def unknown_hint(names: Iterable[str]) -> str:
    """The hint for unknown service ``names``: the service each probably means (difflib), then every name."""
    import difflib

    written = [*SERVICES, *ALIASES]
    meant = []
    for name in names:
        close = difflib.get_close_matches(name.strip().lower(), written, n=1, cutoff=0.6)
        if close:
            service = canonical(close[0])
            meant.append(f"{service}" + (f" ({close[0]})" if close[0] != service else "") + f" for {name.strip()!r}")
    said = f"did you mean {', '.join(meant)}? " if meant else ""
    return f"{said}services can be: {known()}."


def canonical_services(names: Iterable[str], where: str = "setting `services`") -> list[str]:
    """``names`` as canonical services, in order, without duplicates (blank entries dropped).

    Raises :class:`ConfigError` naming every unknown name and what ``where`` accepts."""
    out: list[str] = []
    unknown: list[str] = []
    for raw in names:
        if not raw.strip():
            continue
        service = canonical(raw)
        if service is None:
            unknown.append(raw.strip())
        elif service not in out:
            out.append(service)
    if unknown:
        raise ConfigError(
            f"unknown service(s) in {where}: {', '.join(unknown)}.",
            hint=unknown_hint(unknown),
        )
    return out
