"""Driver errors become testlane's errors at one boundary (services.driver_errors): the table covers
every top-level error class of psycopg, redis-py and PyMySQL, real driver errors are translated with a
hint, and anything else (the caller's own errors) passes through untouched."""

from __future__ import annotations

import importlib
from pathlib import Path

import psycopg
import pymysql
import pytest
import redis

from testlane.core.errors import DatabaseError, ServiceError, TestlaneError
from testlane.services.driver_errors import DRIVER_ERRORS, driver_errors, rule_for, translate

# Each driver's error root, and how deep its top-level classes go: PEP 249's tree is
# Error > DatabaseError > OperationalError, ProgrammingError... (PyMySQL puts MySQLError above Error);
# redis-py's classes sit right under RedisError. Only classes of the root's own module count: psycopg's
# SQLSTATE classes (psycopg.errors.UndefinedTable...) are matched through their DB-API parent.
ROOTS = [(psycopg.Error, 2), (pymysql.err.MySQLError, 3), (redis.exceptions.RedisError, 1)]


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _top(root: type, depth: int) -> list[type]:
    found = [root]
    if depth:
        for sub in root.__subclasses__():
            if sub.__module__ == root.__module__:
                found += _top(sub, depth - 1)
    return found


@pytest.mark.parametrize(("root", "depth"), ROOTS, ids=lambda v: getattr(v, "__module__", str(v)))
def test_every_top_level_driver_error_has_its_own_entry(root: type, depth: int) -> None:
    missing = [_name(cls) for cls in _top(root, depth) if _name(cls) not in DRIVER_ERRORS]
    assert missing == [], "add these driver errors to DRIVER_ERRORS (services/driver_errors.py)"


def test_every_entry_names_a_real_driver_error_class() -> None:
    roots = tuple(root for root, _ in ROOTS)
    for name in DRIVER_ERRORS:
        module, _, attr = name.rpartition(".")
        cls = getattr(importlib.import_module(module), attr)
        assert _name(cls) == name, f"{name} is defined as {_name(cls)}: the table must use the defining name"
        assert issubclass(cls, roots), name
        assert issubclass(DRIVER_ERRORS[name].error, TestlaneError)
        assert DRIVER_ERRORS[name].hint


def test_real_connection_failures_become_service_errors_with_a_hint(tmp_path: Path) -> None:
    # Unix sockets where no server listens: real driver errors, and the unit lane allows local IPC.
    sock = str(tmp_path / "nobody.sock")
    attempts = [
        lambda: psycopg.connect(host=str(tmp_path), port=5432, user="u", password="s3cret", connect_timeout=2),
        lambda: redis.Redis(unix_socket_path=sock, password="s3cret", socket_connect_timeout=2).ping(),
        lambda: pymysql.connect(unix_socket=sock, user="u", password="s3cret", connect_timeout=2),
    ]
    for attempt in attempts:
        with pytest.raises(ServiceError) as info, driver_errors("creating the test's database"):
            attempt()
        error = info.value
        assert error.message.startswith("creating the test's database failed: ")
        assert error.hint and "testlane services status" in error.hint
        assert "s3cret" not in str(error)
        assert isinstance(error.__cause__, (psycopg.Error, redis.exceptions.RedisError, pymysql.err.MySQLError))


def test_the_most_specific_entry_wins() -> None:
    assert rule_for(psycopg.errors.UndefinedTable()) is DRIVER_ERRORS["psycopg.ProgrammingError"]
    assert rule_for(psycopg.errors.InsufficientPrivilege()) is DRIVER_ERRORS["psycopg.errors.InsufficientPrivilege"]
    assert rule_for(redis.exceptions.AuthenticationError()) is DRIVER_ERRORS["redis.exceptions.AuthenticationError"]
    mapped = translate(psycopg.errors.InsufficientPrivilege("permission denied to create database"), "cloning")
    assert isinstance(mapped, DatabaseError)
    assert str(mapped).startswith("cloning failed: permission denied to create database (InsufficientPrivilege)")
    assert "CREATEDB" in str(mapped)


def test_other_errors_pass_through_untouched() -> None:
    with pytest.raises(ValueError, match="the caller's own"), driver_errors("anything"):
        raise ValueError("the caller's own")
    assert translate(KeyError("x"), "anything") is None


def test_a_lost_connection_is_told_apart_from_a_tests_own_sql_error() -> None:
    """What the failure report asks before it checks whether the run's servers still run."""
    import psycopg
    import redis

    from testlane.services.driver_errors import lost_connection

    assert lost_connection(psycopg.errors.AdminShutdown("terminating connection"))
    assert lost_connection(redis.exceptions.ConnectionError("Connection closed by server."))
    assert not lost_connection(psycopg.errors.UniqueViolation("duplicate key"))
    assert not lost_connection(AssertionError("1 != 2"))
    try:  # the lost connection as the cause of the project's own error
        try:
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        except psycopg.OperationalError as exc:
            raise RuntimeError("could not save the order") from exc
    except RuntimeError as wrapped:
        assert lost_connection(wrapped)
