"""``[tool.testlane.env]``: the application's own variable names, mapped to service coordinates.

An existing application reads ``DATABASE_URL``, or ``POSTGRES_SERVER`` + ``POSTGRES_PORT`` + ...,
or ``REDIS_URL``. Each mapping is a template over the run's services::

    [tool.testlane.env]
    DATABASE_URL   = "{postgres.url}"
    ASYNC_DB       = "{postgres.url:asyncpg}"         # postgresql+asyncpg://...
    POSTGRES_SERVER = "{postgres.host}"
    POSTGRES_PORT  = "{postgres.port}"
    REDIS_URL      = "{valkey.url}"
    CACHE_URL      = "redis://{valkey.host}:{valkey.port}/3"
    EVENTS_PREFIX  = "{valkey.channel_prefix}"          # tl:<run id>:app: (pub/sub ignores databases)
    AWS_ENDPOINT_URL = "{s3.url}"                        # http://127.0.0.1:PORT (no credentials in it)
    S3_BUCKET      = "{s3.bucket}"                       # the run's bucket; a test's own under s3_bucket
    MQTT_TOPIC_PREFIX = "{mqtt.topic_prefix}"          # tl/<run id>/app/ (the run's own MQTT topics)

This module parses and validates templates (an unknown service, part or driver is a configuration
error, reported when the settings load); rendering them against running servers happens in
:mod:`testlane.services.env_mapping`. ``{{`` and ``}}`` are literal braces.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from testlane.core import service_names
from testlane.core.errors import ConfigError
from testlane.core.redact import REFERENCE
from testlane.core.service_names import canonical, known

__all__ = [
    "DRIVERS",
    "PARTS",
    "Reference",
    "declare",
    "forget",
    "parse_template",
    "parts_table_markdown",
    "validate_mapping",
]

# The built-in kinds' parts and drivers, here and not in their modules (testlane.services.kinds) because the
# mapping is validated when the settings load and core imports nothing above it; a kind registered later
# adds its own (:func:`declare`).
PARTS: dict[str, tuple[str, ...]] = {
    "postgres": ("url", "host", "port", "user", "password", "database"),
    "valkey": ("url", "host", "port", "password", "db", "channel_prefix"),
    "mariadb": ("url", "host", "port", "user", "password", "database"),
    "nats": ("url", "host", "port", "user", "password", "subject_prefix", "stream_prefix"),
    "s3": ("url", "host", "port", "access_key", "secret_key", "region", "bucket"),
    "mqtt": ("url", "host", "port", "user", "password", "topic_prefix"),
    "rabbitmq": ("url", "host", "port", "user", "password", "vhost", "management_url"),
}
DRIVERS: dict[str, Mapping[str, str]] = {
    "postgres": {
        "libpq": "postgresql",
        "psycopg": "postgresql+psycopg",
        "psycopg2": "postgresql+psycopg2",
        "asyncpg": "postgresql+asyncpg",
        "pg8000": "postgresql+pg8000",
    },
    "valkey": {"redis": "redis", "valkey": "valkey"},
    "mariadb": {
        "mysql": "mysql",
        "pymysql": "mysql+pymysql",
        "aiomysql": "mysql+aiomysql",
        "asyncmy": "mysql+asyncmy",
        "mariadb": "mariadb+mariadbconnector",
    },
    "nats": {"nats": "nats"},
    "s3": {"http": "http"},
    "mqtt": {"mqtt": "mqtt"},
    "rabbitmq": {"amqp": "amqp", "pyamqp": "pyamqp"},
}

_BUILT_IN = frozenset(PARTS)


def declare(service: str, parts: tuple[str, ...], drivers: Mapping[str, str]) -> None:
    """Make ``{service.part}`` references valid (a service kind registered after core loaded)."""
    PARTS.setdefault(service, parts)
    DRIVERS.setdefault(service, drivers)


def forget(service: str) -> None:
    """Undo :func:`declare` for a kind that is not built in."""
    if service not in _BUILT_IN:
        PARTS.pop(service, None)
        DRIVERS.pop(service, None)


def parts_table_markdown() -> str:
    """The parts table of docs/adopting.md (it embeds exactly this): every service's parts and ``url`` drivers,
    the first driver being what ``{service.url}`` gives."""
    rows = ["| service | parts | `url` drivers (the first is the default) |", "|---|---|---|"]
    for service in sorted(PARTS, key=lambda s: service_names.SERVICES.index(s) if s in service_names.SERVICES else 99):
        aliases = [a for a, s in service_names.ALIASES.items() if s == service]
        name = f"`{service}`" + (f" ({', '.join(f'`{a}`' for a in aliases)})" if aliases else "")
        parts = ", ".join(f"`{p}`" for p in PARTS[service])
        drivers = ", ".join(f"`{d}` (`{scheme}://`)" for d, scheme in DRIVERS.get(service, {}).items())
        rows.append(f"| {name} | {parts} | {drivers or '—'} |")
    return "\n".join(rows) + "\n"


_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
_REFERENCE = re.compile(rf"^{REFERENCE}$")  # one shape: the redaction shows a password given as a reference


@dataclass(frozen=True)
class Reference:
    """One ``{service.part[:driver]}`` in a template."""

    service: str
    part: str
    driver: str | None = None


def parse_template(variable: str, template: str) -> list[str | Reference]:
    """Split a template into literal text and references; raise ConfigError for a bad reference."""
    out: list[str | Reference] = []
    pos = 0
    for match in _TOKEN.finditer(template):
        out.append(_literal(variable, template, template[pos : match.start()]))
        pos = match.end()
        token = match.group(0)
        if token in ("{{", "}}"):
            out.append(token[0])
            continue
        out.append(_reference(variable, template, match.group(1).strip()))
    out.append(_literal(variable, template, template[pos:]))
    return [part for part in out if part != ""]


def _literal(variable: str, template: str, text: str) -> str:
    """Text between references; a lone brace in it is a reference left open (``{postgres.password@...``), which
    would reach the application as written."""
    brace = next((char for char in text if char in "{}"), None)
    if brace is not None:
        raise ConfigError(
            f"[tool.testlane.env] {variable} = {template!r}: a lone {brace!r} in {text!r}.",
            hint="close the reference ({postgres.password}), or write {{ and }} for literal braces.",
        )
    return text


def _reference(variable: str, template: str, text: str) -> Reference:
    where = f"[tool.testlane.env] {variable} = {template!r}"
    match = _REFERENCE.match(text)
    if not match:
        raise ConfigError(
            f"{where}: {{{text}}} is not a reference of the form {{service.part}} or {{service.url:driver}}.",
            hint="e.g. {postgres.url}, {postgres.host}, {postgres.url:asyncpg}, {valkey.url}; write {{ and }} "
            "for literal braces.",
        )
    service = canonical(match["service"])
    if service is None:
        raise ConfigError(f"{where}: unknown service {match['service']!r}.", hint=f"services are: {known()}.")
    part, driver = match["part"], match["driver"]
    if part not in PARTS[service]:
        raise ConfigError(
            f"{where}: {service} has no part {part!r}.",
            hint=f"{service} parts are: {', '.join(PARTS[service])}.",
        )
    if driver is not None:
        if part != "url":
            raise ConfigError(f"{where}: only url takes a driver (`{{{service}.url:{driver}}}`).")
        if driver not in DRIVERS[service]:
            raise ConfigError(
                f"{where}: unknown {service} driver {driver!r}.",
                hint=f"drivers are: {', '.join(DRIVERS[service])}.",
            )
    return Reference(service, part, driver)


def validate_mapping(mapping: Mapping[str, str]) -> dict[str, list[str | Reference]]:
    """Parse every template of ``[tool.testlane.env]`` (raises ConfigError on the first bad one)."""
    parsed = {}
    for variable, template in mapping.items():
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", variable):
            raise ConfigError(f"[tool.testlane.env]: {variable!r} is not a valid environment variable name.")
        parsed[variable] = parse_template(variable, str(template))
    return parsed


def referenced_services(mapping: Mapping[str, str]) -> set[str]:
    """The services a mapping refers to (so they can be started before it is rendered)."""
    return {
        part.service for parts in validate_mapping(mapping).values() for part in parts if isinstance(part, Reference)
    }
