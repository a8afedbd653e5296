"""The dispatcher's logic with fakes: fast, no services — and blind to every seam (see tests/integration)."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from dispatch.dispatcher import Dispatcher
from dispatch.jobs import Job


class FakeHandle:
    def __init__(self, locks: FakeLocks, name: str) -> None:
        self.locks, self.name = locks, name

    def release(self) -> None:
        self.locks.held.discard(self.name)


class FakeLocks:
    """A set of held names: exactly what a fake can model of a lock — and no more."""

    def __init__(self) -> None:
        self.held: set[str] = set()

    def try_acquire(self, name: str) -> FakeHandle | None:
        if name in self.held:
            return None
        self.held.add(name)
        return FakeHandle(self, name)


class FakeStore:
    def __init__(self, jobs: dict[str, str], claimed_elsewhere: Iterable[str] = ()) -> None:
        self.jobs = dict(jobs)  # id -> queue
        self.claimed_elsewhere = set(claimed_elsewhere)

    def due(self, queue: str) -> list[str]:
        return sorted(job_id for job_id, q in self.jobs.items() if q == queue)

    def claim(self, job_id: str) -> Job | None:
        queue = self.jobs.pop(job_id, None)
        if queue is None or job_id in self.claimed_elsewhere:
            return None
        return Job(job_id, queue)


def test_the_lock_holder_claims_and_emits_the_due_jobs_of_its_queue() -> None:
    locks, emitted = FakeLocks(), []
    store = FakeStore({"a": "billing", "b": "billing", "c": "shipping"})
    assert Dispatcher(locks, store, emitted.append).dispatch("billing") == ["a", "b"]
    assert [job.id for job in emitted] == ["a", "b"]
    assert locks.held == set()  # released after the round


def test_a_queue_another_dispatcher_holds_is_skipped() -> None:
    locks, emitted = FakeLocks(), []
    locks.held.add("queue:billing")
    assert Dispatcher(locks, FakeStore({"a": "billing"}), emitted.append).dispatch("billing") == []
    assert emitted == []


def test_jobs_claimed_elsewhere_are_not_emitted() -> None:
    emitted: list[Job] = []
    store = FakeStore({"a": "billing", "b": "billing"}, claimed_elsewhere={"a"})
    assert Dispatcher(FakeLocks(), store, emitted.append).dispatch("billing") == ["b"]


def test_the_lock_is_released_when_emitting_fails() -> None:
    locks = FakeLocks()

    def emit(job: Job) -> None:
        raise ConnectionError("stream unavailable")

    with pytest.raises(ConnectionError):
        Dispatcher(locks, FakeStore({"a": "billing"}), emit).dispatch("billing")
    assert locks.held == set()
