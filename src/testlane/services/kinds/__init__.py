"""The registered service kinds: one module per service (:mod:`.postgres`, :mod:`.valkey`, :mod:`.mariadb`...),
each a :class:`~testlane.services.kinds.kind.ServiceKind` that registers itself (:func:`register`) when its
module is imported.

Adding a service is one module plus its :func:`register` call: the stack starts and stops it, the
registry records and reaps it, the backends resolve for it, its ``TESTLANE_*`` variables and
``[tool.testlane.env]`` parts render, and ``testlane services``/``doctor`` list it
(``tests/unit/test_service_kinds.py`` shows it with a kind defined only in the tests).

A built-in kind's module (``testlane.services.kinds.<name>``, the names in
:data:`testlane.core.service_names.BUILT_IN`) is imported the first time the kind is asked for
(:func:`find`, :func:`get`), not with this package: a run imports the kinds it uses and not the others'
engines (NATS, MQTT, RabbitMQ, S3...). Settings are validated without them: the built-in names, aliases,
``[tool.testlane.env]`` parts and drivers are in :mod:`testlane.core` (issue 19).
"""

from __future__ import annotations

import importlib

from testlane.core import envmap, service_names
from testlane.core.errors import ConfigError
from testlane.services.kinds.kind import BackendChoice, ContainerSpec, DoctorCheck, Engine, Section, ServiceKind

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
    """The kind named ``name`` (canonical name), or None; a built-in kind's module is imported now if it
    was not yet (it registers its kind)."""
    kind = _KINDS.get(name)
    if kind is None and name in service_names.BUILT_IN:
        importlib.import_module(f"{__name__}.{name}")
        kind = _KINDS.get(name)
    return kind


def get(name: str) -> ServiceKind:
    """The kind named ``name``; raises :class:`ConfigError` naming the known ones."""
    kind = find(name)
    if kind is None:
        raise ConfigError(f"unknown service {name!r}.", hint=service_names.unknown_hint([name]))
    return kind


def registered() -> tuple[ServiceKind, ...]:
    """Every kind: the built-in ones first (their modules imported now), then the others in registration order."""
    built_in = [kind for kind in map(find, service_names.BUILT_IN) if kind is not None]
    return (*built_in, *(kind for name, kind in _KINDS.items() if name not in service_names.BUILT_IN))


def names() -> tuple[str, ...]:
    """Every kind's name, built-in ones first (none of their modules imported)."""
    return (*service_names.BUILT_IN, *(name for name in _KINDS if name not in service_names.BUILT_IN))
