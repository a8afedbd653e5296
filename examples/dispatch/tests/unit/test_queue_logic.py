"""The JetStream job worker's logic with an in-memory queue: work, commit, then ack — never ack first.

The fake is a list of messages and a log of calls. It cannot model a durable consumer shared by
competing workers, ``ack_wait`` or a redelivery — tests/integration/test_jetstream.py pins those on a
real server — but it checks in milliseconds what the worker does with each message it gets.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from dispatch.queue import ACK_WAIT, DURABLE, JobWorker, QueuedJob
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy


@dataclass
class FakeMessage:
    job_id: str
    log: list[tuple[str, str]]
    num_delivered: int = 1

    @property
    def data(self) -> bytes:
        return json.dumps({"id": self.job_id, "payload": {"n": 1}}).encode()

    @property
    def metadata(self) -> Any:
        return SimpleNamespace(num_delivered=self.num_delivered)

    async def ack_sync(self) -> None:
        self.log.append(("ack", self.job_id))


@dataclass
class FakeQueue:
    """An in-memory stand-in for JetStream and Postgres: queued messages, and a log of what happened."""

    messages: list[FakeMessage] = field(default_factory=list)
    log: list[tuple[str, str]] = field(default_factory=list)
    subscriptions: list[tuple[str, Any]] = field(default_factory=list)

    def put(self, job_id: str, *, num_delivered: int = 1) -> None:
        self.messages.append(FakeMessage(job_id, self.log, num_delivered))

    # -- the JetStream context --------------------------------------------------------------------
    async def pull_subscribe(self, subject: str, durable: str, stream: str, config: Any) -> FakeQueue:
        self.subscriptions.append((durable, config))
        return self

    async def fetch(self, batch: int, timeout: float) -> list[FakeMessage]:
        if not self.messages:
            raise NatsTimeout
        taken, self.messages = self.messages[:batch], self.messages[batch:]
        return taken

    # -- the Postgres connection ------------------------------------------------------------------
    @asynccontextmanager
    async def transaction(self) -> Any:
        yield

    async def execute(self, sql: str, params: dict[str, str]) -> Any:
        self.log.append(("complete", params["id"]))
        return SimpleNamespace(rowcount=1)


@pytest.fixture
def fake() -> Iterator[FakeQueue]:
    yield FakeQueue()


async def test_a_job_is_worked_then_committed_then_acked(fake: FakeQueue) -> None:
    fake.put("job-1")

    async def work(job: QueuedJob) -> None:
        fake.log.append(("work", job.id))

    worker = JobWorker(fake, fake, "a", "jobs.billing", work=work)
    assert await worker.process_once() == 1
    assert fake.log == [("work", "job-1"), ("complete", "job-1"), ("ack", "job-1")]


async def test_a_failing_job_is_neither_committed_nor_acked(fake: FakeQueue) -> None:
    fake.put("job-2")

    async def work(job: QueuedJob) -> None:
        raise RuntimeError("job failed")

    with pytest.raises(RuntimeError):
        await JobWorker(fake, fake, "a", "jobs.billing", work=work).process_once()
    assert fake.log == []  # unacked: JetStream redelivers it after ack_wait


async def test_the_worker_sees_the_delivery_count(fake: FakeQueue) -> None:
    fake.put("job-3", num_delivered=2)
    seen: list[QueuedJob] = []
    await JobWorker(fake, fake, "b", "jobs.billing", on_delivery=seen.append).process_once()
    assert seen == [QueuedJob("job-3", {"n": 1}, "b", delivery=2)]
    assert seen[0].redelivered


async def test_nothing_queued_is_zero_handled(fake: FakeQueue) -> None:
    assert await JobWorker(fake, fake, "a", "jobs.billing").process_once(0.01) == 0


async def test_every_worker_binds_to_one_durable_consumer_with_explicit_acks(fake: FakeQueue) -> None:
    for name in ("a", "b"):
        await JobWorker(fake, fake, name, "jobs.billing", ack_wait=5).subscribe()
    assert [durable for durable, _ in fake.subscriptions] == [DURABLE, DURABLE]
    config = fake.subscriptions[0][1]
    assert (config.ack_policy, config.ack_wait, config.filter_subject) == (AckPolicy.EXPLICIT, 5, "jobs.billing")
    assert ACK_WAIT == 30.0
