"""Rendering ``[tool.testlane.env]`` against running servers (templates parsed in :mod:`testlane.core.envmap`).

Which database the application gets:

* Postgres and MariaDB: the run's *application database* (``databases`` argument; testlane creates it
  migrated and seeded, see :mod:`testlane.databases.appdb`), else the server's default database;
* Valkey: the server's last logical database, reserved for the application (per-test leases never
  hand it out); on an existing server, the database in its URL. Its ``channel_prefix`` is the run's
  (``tl:<run id>:app:``): pub/sub channels are server-wide, so a run's application does not hear
  another run's on a shared server, nor a test's (whose leases have prefixes of their own).
"""

from __future__ import annotations

from collections.abc import Mapping

from testlane.core.envmap import DRIVERS, Reference, validate_mapping
from testlane.core.errors import ConfigError
from testlane.services.base import Server

__all__ = ["app_channel_prefix", "app_redis_db", "render_mapping"]


def app_redis_db(server: Server) -> int:
    """The logical database an application's mapped Redis URL uses (see module docstring)."""
    inst = server.instance
    if inst.backend == "url":
        return int(inst.database or 0)
    return int(inst.extra.get("databases", 16)) - 1


def app_channel_prefix(server: Server) -> str:
    """The pub/sub channel prefix of the run's application (one per run, like its logical database)."""
    return f"tl:{server.instance.run_id}:app:"


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
    if ref.service == "valkey":
        if ref.part == "channel_prefix":
            return app_channel_prefix(server)
        db = str(app_redis_db(server))
        if ref.part == "db":
            return db
        return inst.url_for(db, scheme=DRIVERS["valkey"][ref.driver or "redis"])
    database = databases.get(ref.service) or inst.database or ""
    if ref.part == "database":
        return database
    default = "libpq" if ref.service == "postgres" else "mysql"
    return inst.url_for(database, scheme=DRIVERS[ref.service][ref.driver or default])


def render_mapping(
    mapping: Mapping[str, str],
    servers: Mapping[str, Server],
    *,
    databases: Mapping[str, str] | None = None,
    only_available: bool = False,
) -> dict[str, str]:
    """The environment variables of ``mapping`` for ``servers``.

    A variable referring to a service that is not running is a configuration error, unless
    ``only_available`` (then it is left out: used while building a template, when only Postgres runs).
    """
    out: dict[str, str] = {}
    for variable, parts in validate_mapping(mapping).items():
        missing = [p.service for p in parts if isinstance(p, Reference) and p.service not in servers]
        if missing:
            if only_available:
                continue
            raise ConfigError(
                f"[tool.testlane.env] {variable} refers to {missing[0]}, which this run does not start.",
                hint=f"add {missing[0]!r} to `services` in [tool.testlane], or remove the mapping.",
            )
        out[variable] = "".join(
            p if isinstance(p, str) else _value(p, servers[p.service], databases or {}) for p in parts
        )
    return out
