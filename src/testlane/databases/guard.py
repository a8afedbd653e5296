"""The guard: database helpers run only in the integration lane, only on testlane's servers.

A misconfigured suite must fail loudly instead of touching a developer's working database, so
every helper in :mod:`testlane.db` (and every database fixture) checks two things first, unless
the user explicitly allows otherwise:

1. **the lane**: the integration lane is on — ``TESTLANE_IT=1`` (set by ``testlane run`` and by
   ``pytest --it``), or the pytest plugin says the current test is an integration test;
2. **the server**: a server handle testlane started, or a URL that points at one (the registry
   knows every instance), or the configured existing server of the ``url`` backend.

Database names are checked by :func:`testlane.databases.naming.require_testlane_database`.
"""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, Any

from testlane.core.errors import LaneError, UnsafeDatabaseError

if TYPE_CHECKING:
    from testlane.core.config import Settings
    from testlane.core.runenv import RunEnv

__all__ = ["current_lane", "in_integration_lane", "require_integration_lane", "resolve_mariadb", "resolve_postgres"]

# Set by the pytest plugin around each test: "it" or "unit". None outside pytest.
current_lane: contextvars.ContextVar[str | None] = contextvars.ContextVar("testlane_lane", default=None)


def in_integration_lane(env: RunEnv) -> bool:
    """The lane the pytest plugin set for the current test; outside pytest, ``TESTLANE_IT`` in ``env``."""
    lane = current_lane.get()
    if lane is not None:
        return lane == "it"
    return env.integration_lane


def require_integration_lane(what: str, *, env: RunEnv, allow: bool = False) -> None:
    """Raise :class:`LaneError` unless the integration lane is on (or ``allow``). ``env``: the caller's run
    environment (:meth:`RunEnv.current` at an entry point)."""
    if allow or in_integration_lane(env):
        return
    lane = current_lane.get()
    where = "this test is in the unit lane" if lane == "unit" else "TESTLANE_IT is not set"
    raise LaneError(
        f"{what} needs a real database, but {where}.",
        hint="run the integration lane: `testlane run`, or `pytest --it` / TESTLANE_IT=1; mark the test "
        "`@pytest.mark.integration` or put it in tests/integration/ or a *_it.py file. Outside pytest, pass "
        "allow=True if you mean it.",
    )


def resolve_postgres(target: Any, *, settings: Settings, allow_unmanaged: bool = False) -> Any:
    """A :class:`PostgresServer` for ``target`` (a server handle or a URL of a testlane server).

    ``settings`` locate the registry (the caller's, not re-read here). A URL is accepted when it points at a
    Postgres instance in the registry — one testlane started, or
    the existing server of a run's ``url`` backend; anything else raises :class:`UnsafeDatabaseError`
    unless ``allow_unmanaged``.
    """
    return _resolve(
        "postgres",
        target,
        settings=settings,
        allow_unmanaged=allow_unmanaged,
        hint="use the `postgres` fixture or a URL from `testlane run`/`testlane services`; for an existing test "
        "server configure the url backend, or pass allow_unmanaged=True if you really mean it.",
    )


def resolve_mariadb(target: Any, *, settings: Settings, allow_unmanaged: bool = False) -> Any:
    """A :class:`MariaDbServer` for ``target`` (a server handle, or a URL of a server testlane knows).

    Accepted like :func:`resolve_postgres`, for MariaDB/MySQL URLs.
    """
    return _resolve(
        "mariadb",
        target,
        settings=settings,
        allow_unmanaged=allow_unmanaged,
        hint="use the `mariadb` fixture or a URL from `testlane run`/`testlane services`; for an existing test "
        'server configure mariadb.backend = "url" and mariadb.url, or pass allow_unmanaged=True if you really '
        "mean it.",
    )


_DISPLAY = {"postgres": "Postgres", "mariadb": "MariaDB"}


def _resolve(engine: str, target: Any, *, settings: Settings, allow_unmanaged: bool, hint: str) -> Any:
    from testlane.core.runtime import RunContext
    from testlane.services import kinds
    from testlane.services.external import instance_from_url, server_version
    from testlane.services.registry import Registry

    kind = kinds.get(engine)
    cls = kind.handle
    if isinstance(target, cls):
        return target
    if not isinstance(target, str):
        raise TypeError(f"expected a {cls.__name__} or a {kind.schemes[0]}:// URL, got {type(target).__name__}")
    from testlane.core.urls import ServiceUrl

    url = ServiceUrl.parse(target)
    host, port = url.host or "127.0.0.1", url.port or kind.default_port
    registry = Registry(RunContext.from_settings(settings))
    for inst in registry.instances():
        if inst.engine == engine and inst.port == port and inst.host in (host, "127.0.0.1", "localhost"):
            return cls(inst, owned=False)
    if allow_unmanaged:
        server = cls(instance_from_url(engine, target, run_id="external", name=engine), owned=False)
        server.instance.version = server_version(server)
        return server
    raise UnsafeDatabaseError(
        f"refusing to use {url.scheme}://{host}:{port}: it is not a {_DISPLAY[engine]} server testlane knows, "
        "and might be a developer's working database.",
        hint=hint,
    )
