"""The registered service kinds: one module per service (:mod:`.postgres`, :mod:`.valkey`, :mod:`.mariadb`),
each a :class:`~testlane.services.kinds.kind.ServiceKind`, registered here.

Adding a service is one module plus its :func:`register` call: the stack starts and stops it, the
registry records and reaps it, the backends resolve for it, its ``TESTLANE_*`` variables and
``[tool.testlane.env]`` parts render, and ``testlane services``/``doctor`` list it
(``tests/unit/test_service_kinds.py`` shows it with a kind defined only in the tests).
"""

from __future__ import annotations

from testlane.core import envmap, service_names
from testlane.core.errors import ConfigError
from testlane.services.kinds.kind import BackendChoice, ContainerSpec, DoctorCheck, Engine, Section, ServiceKind
from testlane.services.kinds.mariadb import MariaDbKind
from testlane.services.kinds.mqtt import MqttKind
from testlane.services.kinds.nats import NatsKind
from testlane.services.kinds.postgres import PostgresKind
from testlane.services.kinds.rabbitmq import RabbitMqKind
from testlane.services.kinds.s3 import S3Kind
from testlane.services.kinds.valkey import ValkeyKind

__all__ = [
    "BackendChoice",
    "ContainerSpec",
    "DoctorCheck",
    "Engine",
    "Section",
    "ServiceKind",
    "find",
    "get",
    "names",
    "register",
    "registered",
    "unregister",
]

_KINDS: dict[str, ServiceKind] = {}


def register(kind: ServiceKind) -> ServiceKind:
    """Make ``kind`` known to testlane (its name, aliases and env parts too); returns it."""
    _KINDS[kind.name] = kind
    service_names.declare(kind.name, kind.all_aliases())
    envmap.declare(kind.name, kind.parts(), kind.drivers())
    return kind


def unregister(name: str) -> None:
    """Forget the kind ``name`` (a test's own kind, after the test)."""
    _KINDS.pop(name, None)
    service_names.forget(name)
    envmap.forget(name)


def find(name: str) -> ServiceKind | None:
    """The kind named ``name`` (canonical name), or None."""
    return _KINDS.get(name)


def get(name: str) -> ServiceKind:
    """The kind named ``name``; raises :class:`ConfigError` naming the known ones."""
    kind = _KINDS.get(name)
    if kind is None:
        raise ConfigError(f"unknown service {name!r}.", hint=f"services can be: {service_names.known()}.")
    return kind


def registered() -> tuple[ServiceKind, ...]:
    """Every registered kind, built-in ones first, in registration order."""
    return tuple(_KINDS.values())


def names() -> tuple[str, ...]:
    return tuple(_KINDS)


for _kind in (PostgresKind(), ValkeyKind(), MariaDbKind(), NatsKind(), RabbitMqKind(), MqttKind(), S3Kind()):
    register(_kind)
