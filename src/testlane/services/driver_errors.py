"""Driver errors as testlane's errors, at one boundary: a table, as httpx maps httpcore's errors.

testlane's own calls into psycopg, redis-py and PyMySQL (creating a test's database, leasing a Redis
database, cloning a template) run inside :func:`driver_errors`: an error the driver raises there
becomes the :class:`~testlane.core.errors.TestlaneError` the table names, with one message (what
testlane was doing, what the server said) and a hint, and the plugin reports it without a traceback.
The driver's exception stays reachable as ``__cause__``.

Only testlane's own calls: an error the *user's* code raises (a test's SQL, a Redis command in the
application) is never translated; it surfaces as the driver's own exception, which the test may
expect (``pytest.raises(psycopg.errors.UniqueViolation)``). So the boundary wraps a fixture's set-up
and tear-down, never the ``yield`` that runs the test.

The table is keyed by the classes' import names and matched along the exception's MRO (the most
specific entry wins), so the boundary imports no driver: an error of a driver is only ever raised
where that driver is already loaded. ``tests/unit/test_driver_errors.py`` checks that every name
resolves and that every top-level error class of each driver has an entry of its own, so a driver
release that adds one fails the test instead of leaking a traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from testlane.core.errors import DatabaseError, ServiceError, TestlaneError

__all__ = ["DRIVER_ERRORS", "DriverErrorRule", "driver_errors", "lost_connection", "rule_for", "translate"]

_STOPPED = "the server may have stopped or restarted: `testlane services status` shows it, and its log says why"
_REFUSED = (
    "the server refused what testlane asked of it; if this is an existing server (the `url` backend), check "
    "that its user may create and drop databases"
)


@dataclass(frozen=True)
class DriverErrorRule:
    """What a driver error becomes: a testlane error class and the hint that goes with it."""

    error: type[TestlaneError]
    hint: str


# Driver error class (module.qualname, as the driver defines it) -> what testlane raises.
DRIVER_ERRORS: dict[str, DriverErrorRule] = {
    # psycopg 3: psycopg.Error and the DB-API classes under it (SQLSTATE classes subclass these).
    "psycopg.Error": DriverErrorRule(DatabaseError, _REFUSED),
    "psycopg.InterfaceError": DriverErrorRule(ServiceError, "testlane's connection was closed or broken; " + _STOPPED),
    "psycopg.DatabaseError": DriverErrorRule(DatabaseError, _REFUSED),
    "psycopg.OperationalError": DriverErrorRule(ServiceError, "the connection failed or was lost; " + _STOPPED),
    "psycopg.ProgrammingError": DriverErrorRule(DatabaseError, _REFUSED),
    "psycopg.IntegrityError": DriverErrorRule(DatabaseError, _REFUSED),
    "psycopg.DataError": DriverErrorRule(DatabaseError, _REFUSED),
    "psycopg.InternalError": DriverErrorRule(DatabaseError, _REFUSED),
    "psycopg.NotSupportedError": DriverErrorRule(
        DatabaseError, "the server's version does not support what testlane asked; `testlane doctor` shows it"
    ),
    "psycopg.errors.InsufficientPrivilege": DriverErrorRule(
        DatabaseError,
        "the user testlane connects as needs CREATEDB (and to own the template): "
        "`ALTER ROLE <user> CREATEDB`, or let testlane start its own server",
    ),
    # redis-py (Valkey): RedisError and the classes under it.
    "redis.exceptions.RedisError": DriverErrorRule(DatabaseError, _REFUSED),
    "redis.exceptions.ConnectionError": DriverErrorRule(
        ServiceError, "Valkey/Redis could not be reached or closed the connection; " + _STOPPED
    ),
    "redis.exceptions.AuthenticationError": DriverErrorRule(
        ServiceError, "the password (in the URL, or TESTLANE_VALKEY_PASSWORD) is wrong or missing"
    ),
    "redis.exceptions.TimeoutError": DriverErrorRule(
        ServiceError, "Valkey/Redis did not answer in time: is the machine overloaded, or the server paused?"
    ),
    "redis.exceptions.InvalidResponse": DriverErrorRule(
        ServiceError, "what answered is not speaking the Redis protocol: check the host and port"
    ),
    "redis.exceptions.ResponseError": DriverErrorRule(
        DatabaseError, "the server refused the command: an old version, or a renamed or disabled command?"
    ),
    "redis.exceptions.DataError": DriverErrorRule(DatabaseError, _REFUSED),
    "redis.exceptions.PubSubError": DriverErrorRule(DatabaseError, _REFUSED),
    "redis.exceptions.WatchError": DriverErrorRule(DatabaseError, _REFUSED),
    "redis.exceptions.LockError": DriverErrorRule(DatabaseError, _REFUSED),
    "redis.exceptions.ClusterError": DriverErrorRule(
        ServiceError, "testlane leases logical databases, which a Redis Cluster does not have: use a standalone server"
    ),
    # PyMySQL (MariaDB/MySQL): MySQLError and the DB-API classes under it.
    "pymysql.err.MySQLError": DriverErrorRule(DatabaseError, _REFUSED),
    "pymysql.err.Warning": DriverErrorRule(DatabaseError, _REFUSED),
    "pymysql.err.Error": DriverErrorRule(DatabaseError, _REFUSED),
    "pymysql.err.InterfaceError": DriverErrorRule(
        ServiceError, "testlane's connection was closed or broken; " + _STOPPED
    ),
    "pymysql.err.DatabaseError": DriverErrorRule(DatabaseError, _REFUSED),
    "pymysql.err.OperationalError": DriverErrorRule(
        ServiceError, "the connection failed, was lost or was refused (access denied?); " + _STOPPED
    ),
    "pymysql.err.ProgrammingError": DriverErrorRule(DatabaseError, _REFUSED),
    "pymysql.err.IntegrityError": DriverErrorRule(DatabaseError, _REFUSED),
    "pymysql.err.DataError": DriverErrorRule(DatabaseError, _REFUSED),
    "pymysql.err.InternalError": DriverErrorRule(DatabaseError, _REFUSED),
    "pymysql.err.NotSupportedError": DriverErrorRule(
        DatabaseError, "the server's version does not support what testlane asked; `testlane doctor` shows it"
    ),
}


def rule_for(exc: BaseException) -> DriverErrorRule | None:
    """The table's entry for ``exc``: the most specific class along its MRO (None: not a driver error)."""
    for cls in type(exc).__mro__:
        rule = DRIVER_ERRORS.get(f"{cls.__module__}.{cls.__qualname__}")
        if rule is not None:
            return rule
    return None


def lost_connection(exc: BaseException) -> bool:
    """Whether ``exc``, or an exception it was raised from or while handling, is a driver's "the connection
    failed or was lost" (the table's entries whose hint says the server may have stopped)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        rule = rule_for(current)
        if rule is not None and rule.hint.endswith(_STOPPED):
            return True
        current = current.__cause__ or current.__context__
    return False


def translate(exc: BaseException, doing: str) -> TestlaneError | None:
    """``exc`` as testlane's error, ``doing`` saying what testlane was doing (None: not a driver error)."""
    rule = rule_for(exc)
    if rule is None:
        return None
    said = (str(exc).strip().splitlines() or [""])[0] or "(no message)"
    return rule.error(f"{doing} failed: {said} ({type(exc).__name__})", hint=rule.hint)


@contextlib.contextmanager
def driver_errors(doing: str) -> Iterator[None]:
    """Run testlane's own driver calls: a driver error leaves as testlane's (see the module doc)."""
    try:
        yield
    except Exception as exc:
        mapped = translate(exc, doing)
        if mapped is None:
            raise
        raise mapped from exc
