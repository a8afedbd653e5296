"""The stream worker's logic with a fake client: reclaim first, ack after handling, never before."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from dispatch.locks import lock_key
from dispatch.stream import Consumer, Delivery


class FakeStreamClient:
    """Records the calls a worker makes; serves canned replies. It cannot model a group."""

    def __init__(self, new: Sequence[Any] = (), stale: Sequence[Any] = ()) -> None:
        self.new, self.stale = list(new), list(stale)
        self.calls: list[tuple[Any, ...]] = []

    def xautoclaim(self, stream: str, group: str, name: str, **kwargs: Any) -> list[Any]:
        self.calls.append(("xautoclaim", name, kwargs["min_idle_time"]))
        stale, self.stale = self.stale, []
        return [b"0-0", stale, []]

    def xreadgroup(self, group: str, name: str, streams: dict[str, str], **kwargs: Any) -> list[Any]:
        self.calls.append(("xreadgroup", name))
        new, self.new = self.new, []
        return [[b"s", new]] if new else []

    def xack(self, stream: str, group: str, entry_id: str) -> int:
        self.calls.append(("xack", entry_id))
        return 1


def test_a_new_entry_is_handled_then_acknowledged() -> None:
    client, seen = FakeStreamClient(new=[(b"1-0", {b"job": b"a"})]), []
    worker = Consumer(client, "s", "w1", lambda d: seen.append((d, list(client.calls))), claim_idle_ms=500)
    assert worker.process_once() == 1
    delivery, calls_during_handling = seen[0]
    assert delivery == Delivery("1-0", {"job": "a"}, reclaimed=False)
    assert ("xack", "1-0") not in calls_during_handling  # not acknowledged before it was handled
    assert client.calls[-1] == ("xack", "1-0")


def test_stale_entries_are_reclaimed_before_new_ones_are_read() -> None:
    client, seen = FakeStreamClient(new=[(b"2-0", {})], stale=[(b"1-0", {b"job": b"b"})]), []
    worker = Consumer(client, "s", "w2", seen.append, claim_idle_ms=500)
    assert worker.process_once() == 1
    assert seen == [Delivery("1-0", {"job": "b"}, reclaimed=True)]
    assert client.calls[0] == ("xautoclaim", "w2", 500)
    assert ("xreadgroup", "w2") not in client.calls


def test_a_failing_handler_leaves_the_entry_unacknowledged() -> None:
    client = FakeStreamClient(new=[(b"3-0", {})])

    def handler(delivery: Delivery) -> None:
        raise RuntimeError("job failed")

    with pytest.raises(RuntimeError):
        Consumer(client, "s", "w3", handler).process_once()
    assert not [c for c in client.calls if c[0] == "xack"]


def test_lock_keys_are_stable_distinct_signed_64_bit() -> None:
    assert lock_key("queue:billing") == lock_key("queue:billing")
    assert lock_key("queue:billing") != lock_key("queue:shipping")
    assert all(-(2**63) <= lock_key(f"q{i}") < 2**63 for i in range(100))
