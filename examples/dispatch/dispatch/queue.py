"""Jobs on a NATS JetStream queue, pulled by competing workers that ack only after the job committed.

:func:`publish` puts a job on the stream (``Nats-Msg-Id`` = the job id, so a publisher that retries
does not enqueue it twice). Every :class:`JobWorker` pulls from one shared durable consumer
(``DURABLE``) with explicit acks: JetStream hands each message to one of the waiting pulls, and the
message stays *pending* on that worker until it acks it. A worker runs the job, records it done in
Postgres (:func:`complete`, one transaction) and only then acks. A worker that dies holding a job
never acks: after ``ack_wait`` JetStream redelivers the job to another worker, which completes it.

Delivery is at-least-once: a worker that is only *slow* (a long GC pause, a stopped VM) past
``ack_wait`` loses its job to another worker and finishes it too. :func:`complete` makes that
harmless: ``completed_jobs`` has the job id as primary key, so only the first finisher's transaction
records the job's effect (``job_effects``); the second does nothing and acks.

The seams this relies on are pinned in tests/integration/test_jetstream.py; the plausible ways to
get them wrong are in :mod:`dispatch.broken` (``job_worker`` fixture).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StreamConfig

STREAM = "JOBS"
DURABLE = "workers"
ACK_WAIT = 30.0  # seconds a worker may hold a job before JetStream hands it to another


@dataclass(frozen=True)
class QueuedJob:
    """A job as a worker received it; ``delivery`` counts from 1 (2 and more: redelivered)."""

    id: str
    payload: dict[str, Any]
    worker: str
    delivery: int = 1

    @property
    def redelivered(self) -> bool:
        return self.delivery > 1


Work = Callable[[QueuedJob], Awaitable[object]]


def subject_for(prefix: str, queue: str) -> str:
    """The subject of ``queue``'s jobs under ``prefix`` (``""``, or e.g. ``"t3."``)."""
    return f"{prefix}jobs.{queue}"


async def ensure_stream(js: Any, prefix: str = "", *, stream: str = STREAM) -> None:
    """Create the jobs stream (all queues' subjects under ``prefix``) unless it exists."""
    config = StreamConfig(name=stream, subjects=[f"{prefix}jobs.>"], retention=RetentionPolicy.LIMITS)
    await js.add_stream(config)


async def publish(js: Any, subject: str, job_id: str, payload: dict[str, Any] | None = None) -> int:
    """Put a job on the queue; its stream sequence. JetStream confirms the write before this returns."""
    body = json.dumps({"id": job_id, "payload": payload or {}}).encode()
    ack = await js.publish(subject, body, headers={"Nats-Msg-Id": job_id})
    return int(ack.seq)


# The job's effect, once per job: the first transaction to insert the job id records it; any later
# delivery (a redelivery after a stall) finds the row and does nothing.
COMPLETE_SQL = """
WITH done AS (
    INSERT INTO completed_jobs (id, worker) VALUES (%(id)s, %(worker)s) ON CONFLICT (id) DO NOTHING RETURNING id
)
INSERT INTO job_effects (job_id, worker) SELECT id, %(worker)s FROM done
"""


async def complete(db: Any, job: QueuedJob) -> bool:
    """Record ``job`` done (and its effect) unless it already is; True if this call did it."""
    async with db.transaction():
        cur = await db.execute(COMPLETE_SQL, {"id": job.id, "worker": job.worker})
        return bool(cur.rowcount == 1)


async def no_work(job: QueuedJob) -> None:
    return None


class JobWorker:
    """One worker on the shared durable consumer: pull a job, run ``work``, :func:`complete`, then ack.

    ``js``: the worker's own JetStream context; ``db``: its own async psycopg connection (autocommit;
    :func:`complete` opens the transaction); ``on_delivery`` is called with each job as received
    (the seam tests log deliveries with it).
    """

    def __init__(
        self,
        js: Any,
        db: Any,
        name: str,
        subject: str,
        *,
        work: Work = no_work,
        on_delivery: Callable[[QueuedJob], object] | None = None,
        stream: str = STREAM,
        durable: str = DURABLE,
        ack_wait: float = ACK_WAIT,
    ) -> None:
        self.js, self.db, self.name, self.subject = js, db, name, subject
        self.work = work
        self.on_delivery = on_delivery
        self.stream, self.durable, self.ack_wait = stream, durable, ack_wait
        self._sub: Any = None

    async def subscribe(self) -> None:
        """Bind to the durable pull consumer, creating it with explicit acks and ``ack_wait`` if needed."""
        if self._sub is None:
            self._sub = await self.js.pull_subscribe(
                self.subject, durable=self.consumer_name(), stream=self.stream, config=self.consumer_config()
            )

    async def process_once(self, timeout: float = 1.0) -> int:
        """Wait up to ``timeout`` s for a job and handle it; how many were handled (0 or 1)."""
        await self.subscribe()
        try:
            messages = await self._sub.fetch(1, timeout=timeout)
        except NatsTimeout:
            return 0
        for msg in messages:
            await self.handle(msg)
        return len(messages)

    async def run(self, stop: asyncio.Event, *, poll: float = 0.2) -> None:
        """Work until ``stop`` is set."""
        while not stop.is_set():
            await self.process_once(poll)

    # -- the steps (dispatch.broken overrides them one at a time) --------------------------------
    def consumer_name(self) -> str:
        return self.durable

    def consumer_config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self.consumer_name(),
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            deliver_policy=DeliverPolicy.ALL,
            filter_subject=self.subject,
        )

    def _job(self, msg: Any) -> QueuedJob:
        data = json.loads(msg.data)
        return QueuedJob(data["id"], data.get("payload", {}), self.name, int(msg.metadata.num_delivered))

    async def handle(self, msg: Any) -> None:
        job = self._job(msg)
        if self.on_delivery is not None:
            self.on_delivery(job)
        await self.work(job)  # an exception leaves the message unacked: redelivered after ack_wait
        await self._complete(job)
        await msg.ack_sync()  # after the commit, and confirmed by the server

    async def _complete(self, job: QueuedJob) -> None:
        await complete(self.db, job)
