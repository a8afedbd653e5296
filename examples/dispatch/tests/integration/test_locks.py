"""Seam: advisory-lock affinity and release, on real Postgres.

A fake lock manager is a dict: it cannot know that the lock belongs to a *session*, that only that
session can release it, or that the server releases it when the session dies.
"""

from __future__ import annotations

from typing import Any

import pytest

from testlane.seams import kill_connection, paused, terminate_backend

KEY = "queue:billing"


def test_a_held_key_is_refused_until_released(locks: Any) -> None:
    first = locks.try_acquire(KEY)
    assert first is not None
    assert locks.try_acquire(KEY) is None, "a second dispatcher got a lock that is held"
    other = locks.try_acquire("queue:shipping")
    assert other is not None, "locks on different keys are independent"
    other.release()
    first.release()
    third = locks.try_acquire(KEY)
    assert third is not None, "release() did not release the lock"
    third.release()


@pytest.mark.parametrize("death", ["terminate_backend", "kill_connection"])
def test_killing_the_holding_connection_releases_the_lock(locks: Any, pg_database: Any, death: str) -> None:
    holder = locks.try_acquire(KEY)
    assert holder is not None
    assert locks.try_acquire(KEY) is None
    if death == "terminate_backend":  # the server ends the session (an admin, a timeout, a failover)
        terminate_backend(holder.connection, via=pg_database)
    else:  # the client vanishes mid-session (its process died, the network dropped)
        kill_connection(holder.connection, via=pg_database)
    successor = locks.try_acquire(KEY)
    assert successor is not None, "the lock outlived the session that held it"
    successor.release()
    holder.release()  # a no-op: the lock went with its session


def test_a_stalled_holder_keeps_the_lock(locks: Any) -> None:
    holder = locks.try_acquire(KEY)
    assert holder is not None
    with paused(holder.connection):  # the holder's session freezes: a stall is not a death
        assert locks.try_acquire(KEY) is None, "a frozen holder lost its lock"
    holder.release()
    successor = locks.try_acquire(KEY)
    assert successor is not None
    successor.release()
