"""Rendering ``[tool.testlane.env]`` against running servers (templates parsed in :mod:`testlane.core.envmap`).

``host``, ``port``, ``user`` and ``password`` are the instance's; every other part is the kind's
(:meth:`~testlane.services.kinds.kind.ServiceKind.env_value`). Which database the application gets:
the run's *application database* when there is one (``databases`` argument; testlane creates it
migrated and seeded, see :mod:`testlane.databases.appdb`), else the server's default database; Valkey
has its own rule (:mod:`testlane.services.kinds.valkey`).
"""

from __future__ import annotations

from collections.abc import Mapping

from testlane.core.envmap import Reference, validate_mapping
from testlane.core.errors import ConfigError
from testlane.services import kinds
from testlane.services.base import Server
from testlane.services.kinds.valkey import app_channel_prefix, app_redis_db

__all__ = ["app_channel_prefix", "app_redis_db", "render_mapping", "variables_of"]


def _value(ref: Reference, server: Server, databases: Mapping[str, str]) -> str:
    inst = server.instance
    if ref.part == "host":
        return inst.host
    if ref.part == "port":
        return str(inst.port)
    if ref.part == "user":
        return inst.user or ""
    if ref.part == "password":
        return inst.password or ""
    return kinds.get(ref.service).env_value(ref.part, ref.driver, server, databases.get(ref.service, ""))


def render_mapping(
    mapping: Mapping[str, str],
    servers: Mapping[str, Server],
    *,
    databases: Mapping[str, str] | None = None,
    only_available: bool = False,
    overrides: Mapping[tuple[str, str], str] | None = None,
    only: str | None = None,
) -> dict[str, str]:
    """The environment variables of ``mapping`` for ``servers``.

    A variable referring to a service that is not running is a configuration error, unless
    ``only_available`` (then it is left out: used while building a template, when only Postgres runs).
    ``overrides`` replaces parts (``{("rabbitmq", "url"): <a test's vhost URL>}``: a per-test lease's
    coordinates); ``only`` keeps just the variables that refer to that service (see :func:`variables_of`).
    """
    out: dict[str, str] = {}
    overrides = overrides or {}
    for variable, parts in validate_mapping(mapping).items():
        if only is not None and not any(isinstance(p, Reference) and p.service == only for p in parts):
            continue
        missing = [p.service for p in parts if isinstance(p, Reference) and p.service not in servers]
        if missing:
            if only_available:
                continue
            raise ConfigError(
                f"[tool.testlane.env] {variable} refers to {missing[0]}, which this run does not start.",
                hint=f"add {missing[0]!r} to `services` in [tool.testlane], or remove the mapping.",
            )
        out[variable] = "".join(
            p
            if isinstance(p, str)
            else overrides[(p.service, p.part)]
            if (p.service, p.part) in overrides
            else _value(p, servers[p.service], databases or {})
            for p in parts
        )
    return out


def variables_of(mapping: Mapping[str, str], service: str) -> list[str]:
    """The variables of ``mapping`` whose templates refer to ``service`` (canonical name)."""
    return [
        variable
        for variable, parts in validate_mapping(mapping).items()
        if any(isinstance(p, Reference) and p.service == service for p in parts)
    ]
