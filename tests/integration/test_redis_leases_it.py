"""Redis/Valkey leases take only databases that are empty or testlane's own, on a real server.

The server here is one testlane starts (few logical databases, so they run out); the same code runs
against existing servers (see test_backends_it for this machine's Redis, with decoys).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from testlane.core.config import load_settings
from testlane.core.errors import ServiceError
from testlane.core.runtime import RunContext
from testlane.databases.redis_isolation import lease_database
from testlane.services.stack import ServiceStack


@pytest.fixture
def valkey_server(data_dir: Path) -> Iterator[tuple[redis.Redis, str, int]]:
    settings = load_settings(environ={}, overrides={"data_dir": str(data_dir), "valkey.databases": "5"})
    with ServiceStack(settings, RunContext.from_settings(settings, owner=os.getpid())) as stack:
        stack.start(["valkey"])
        server = stack.servers["valkey"]
        coordinator = redis.Redis(host=server.host, port=server.port, password=server.instance.password, db=0)
        try:
            yield coordinator, server.host, server.port
        finally:
            coordinator.close()


def _password(coordinator: redis.Redis) -> str | None:
    """The run's Valkey password (every server testlane starts has one)."""
    password = coordinator.connection_pool.connection_kwargs.get("password")
    return str(password) if password is not None else None


def _client(server: tuple[redis.Redis, str, int], db: int) -> redis.Redis:
    coordinator, host, port = server
    return redis.Redis(host=host, port=port, password=_password(coordinator), db=db)


def test_a_database_with_data_is_never_leased_nor_flushed(valkey_server: tuple[redis.Redis, str, int]) -> None:
    coordinator, host, port = valkey_server
    # 5 databases: 0 coordinates, 4 is the application's; 1..3 may be leased. Someone's data in 1 and 3.
    for db in (1, 3):
        _client(valkey_server, db).set(f"someone-{db}", "precious")
    lease = lease_database(coordinator, host, port, password=_password(coordinator), owner="t1")
    assert lease.db == 2
    assert lease.client().dbsize() == 0  # the test sees an empty database: the lease record is in 0
    lease.client().set("k", 1)
    with pytest.raises(ServiceError) as info:
        lease_database(coordinator, host, port, password=_password(coordinator), owner="t2")
    message = str(info.value)
    assert f"no free logical database on the Redis server at {host}:{port}" in message
    assert "2 contain data that is not testlane's and 1 are leased by running tests" in message
    assert "empty the databases you do not need" in message
    assert lease.release() is True
    assert lease.client().dbsize() == 0
    assert [_client(valkey_server, db).get(f"someone-{db}") for db in (1, 3)] == [b"precious", b"precious"]
    assert coordinator.keys("testlane:lease:*") == []


def test_an_expired_lease_is_reclaimed_and_its_old_holder_flushes_nothing(
    valkey_server: tuple[redis.Redis, str, int],
) -> None:
    coordinator, host, port = valkey_server
    for db in (1, 3):
        _client(valkey_server, db).set("someone", "precious")
    dead = lease_database(coordinator, host, port, password=_password(coordinator), owner="crashed")
    dead.client().set("left-behind", 1)
    # Its holder died an hour ago: the record says the lease expired at the epoch.
    record = coordinator.get(f"testlane:lease:{dead.db}")
    assert record is not None
    coordinator.set(f"testlane:lease:{dead.db}", b"testlane:v1 1 " + record.split(b" ", 2)[2])
    fresh = lease_database(coordinator, host, port, password=_password(coordinator), owner="next")
    assert fresh.db == dead.db and fresh.client().dbsize() == 0  # the dead holder's keys were flushed
    fresh.client().set("mine", 1)
    assert dead.release() is False  # not its lease any more: nothing flushed
    assert fresh.client().get("mine") == b"1"
    assert fresh.release() is True
    assert [_client(valkey_server, db).get("someone") for db in (1, 3)] == [b"precious", b"precious"]


def test_a_lease_record_that_is_not_testlanes_is_left_alone(valkey_server: tuple[redis.Redis, str, int]) -> None:
    coordinator, host, port = valkey_server
    coordinator.set("testlane:lease:1", "someone else's value")  # not a lease record: busy, never taken
    coordinator.hset("testlane:lease:2", "a", "b")  # not even a string
    lease = lease_database(coordinator, host, port)
    assert lease.db == 3
    lease.release()
    assert coordinator.get("testlane:lease:1") == b"someone else's value"
    assert coordinator.hgetall("testlane:lease:2") == {b"a": b"b"}


def test_a_server_that_refuses_scripts_is_one_clear_error(valkey_server: tuple[redis.Redis, str, int]) -> None:
    coordinator, host, port = valkey_server
    coordinator.acl_setuser(
        "noscripts", enabled=True, passwords=["+pw"], categories=["+@all"], commands=["-eval", "-evalsha"], keys=["*"]
    )
    limited = redis.Redis(host=host, port=port, username="noscripts", password="pw", db=0)
    try:
        with pytest.raises(ServiceError) as info:
            lease_database(limited, host, port)
    finally:
        limited.close()
    assert f"could not lease a logical database on the Redis server at {host}:{port}" in str(info.value)
    assert "EVAL/EVALSHA" in str(info.value)
    assert "pw" not in str(info.value)


def test_each_lease_has_its_own_channel_prefix_even_on_the_same_database(
    valkey_server: tuple[redis.Redis, str, int],
) -> None:
    """Issue 15, seen 6: pub/sub ignores logical databases, so a lease carries a channel namespace; the next
    lease of the same database gets another (a subscriber the previous test left open hears nothing)."""
    coordinator, host, port = valkey_server
    first = lease_database(coordinator, host, port, password=_password(coordinator), owner="t1")
    second = lease_database(coordinator, host, port, password=_password(coordinator), owner="t2")
    assert first.channel_prefix.startswith(f"tl:{first.db}:") and first.channel_prefix.endswith(":")
    assert first.channel("events") == first.channel_prefix + "events"
    assert first.channel_prefix != second.channel_prefix
    db, prefix = first.db, first.channel_prefix
    first.release()
    again = [lease_database(coordinator, host, port, password=_password(coordinator), owner="t3") for _ in (1, 2)]
    [same] = [lease for lease in again if lease.db == db]
    assert same.channel_prefix != prefix
    for lease in (second, *again):
        lease.release()


def test_an_acl_user_per_namespace_would_refuse_narrower_patterns(valkey_server: tuple[redis.Redis, str, int]) -> None:
    """Why the namespace is not enforced with ACLs (docs/isolation.md): a user allowed `&<prefix>*` may not
    PSUBSCRIBE a narrower pattern inside it — the server compares patterns literally."""
    coordinator, host, port = valkey_server
    lease = lease_database(coordinator, host, port, password=_password(coordinator), owner="acl")
    prefix = lease.channel_prefix
    coordinator.execute_command("ACL", "SETUSER", "tl_acl", "on", ">pw", "~*", f"&{prefix}*", "+@all")
    user = redis.Redis(host=host, port=port, username="tl_acl", password="pw", db=lease.db)
    try:
        assert user.publish(prefix + "events", "x") == 0
        with pytest.raises(redis.exceptions.NoPermissionError):
            user.publish("events", "x")  # outside the namespace: an error, not cross-talk
        pubsub = user.pubsub()
        pubsub.psubscribe(prefix + "*")
        assert pubsub.get_message(timeout=5)["type"] == "psubscribe"
        narrower = user.pubsub()
        with pytest.raises(redis.exceptions.NoPermissionError):
            narrower.psubscribe(prefix + "ev*")
            narrower.get_message(timeout=5)
        pubsub.close()
        narrower.close()
    finally:
        user.close()
        coordinator.execute_command("ACL", "DELUSER", "tl_acl")
        lease.release()
