"""Seams: a JetStream work queue with competing workers — each job once, and redelivery after ``ack_wait``.

A fake queue is a list: it cannot show that two workers pulling from one durable consumer never
both get a job, that a job stays pending on a worker until it acks, that JetStream hands a dead
worker's job to another one after ``ack_wait`` — nor that a worker which is only *stalled* loses its
job the same way, so the job's effect must be recorded once however often it is delivered.

Each test has its own JetStream account (testlane's ``jetstream`` fixture): its stream and consumer
are invisible to every other test, and ``NATS_URL`` (``[tool.testlane.env]``) points at that account
for the test's duration — which is how the worker processes below find it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from dispatch.broken import variant_name
from dispatch.queue import STREAM, ensure_stream, publish, subject_for

from testlane.core.waiting import Deadline
from testlane.seams import Deliveries, assert_delivered_once, assert_redelivered, eventually, kill_process, paused
from testlane.seams.jetstream import assert_redelivered_after_death, work_queue

EXAMPLE = Path(__file__).resolve().parents[2]
ACK_WAIT = 1.0  # seconds a worker may hold a job unacknowledged (the tests' setting; production: 30 s)
REDELIVERY_DEADLINE = 5.0  # well past ACK_WAIT, well short of JetStream's 30 s default


@dataclass(frozen=True)
class JobQueue:
    subject: str
    stream: str


@pytest.fixture
async def queue(jetstream: Any) -> JobQueue:
    """The test's job subject and stream, the stream created (in the test's own account: names unchanged)."""
    stream = jetstream.stream(STREAM)
    nc = await jetstream.connect()
    try:
        await ensure_stream(nc.jetstream(), jetstream.subject_prefix, stream=stream)
    finally:
        await nc.close()
    return JobQueue(subject_for(jetstream.subject_prefix, "billing"), stream)


@pytest.fixture
async def js(jetstream: Any) -> Any:
    """The test's own JetStream context (the publisher's connection)."""
    nc = await jetstream.connect()
    yield nc.jetstream()
    await nc.close()


def recorder(deliveries: Deliveries) -> Any:
    return lambda job: deliveries.record(job.worker, job.id, redelivered=job.redelivered)


async def drain(*workers: Any) -> list[int]:
    """What each worker still gets in a short wait: after the tests' jobs are done, nothing."""
    return list(await asyncio.gather(*(w.process_once(0.3) for w in workers)))


async def work_until(workers: list[Any], deliveries: Deliveries, count: int, *, timeout: float = 10.0) -> None:
    """Run every worker until ``count`` deliveries are logged (``timeout`` in s)."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(w.run(stop, poll=0.1)) for w in workers]
    try:
        await deliveries.wait_for_async(count, timeout=timeout)
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def test_competing_workers_handle_each_job_once(
    make_job_worker: Any, js: Any, queue: JobQueue, pg_database: Any
) -> None:
    deliveries = Deliveries()
    workers = [await make_job_worker(name, queue, on_delivery=recorder(deliveries)) for name in ("a", "b")]
    for worker in workers:
        await worker.subscribe()
    jobs = [f"job-{i}" for i in range(20)]
    for job_id in jobs:
        await publish(js, queue.subject, job_id)
    await work_until(workers, deliveries, len(jobs))
    for _ in range(2 * len(jobs)):  # whatever else the workers still get (nothing, if each job went once)
        if await drain(*workers) == [0, 0]:
            break
    assert_delivered_once(deliveries, jobs)
    with pg_database.connect() as conn:
        assert conn.execute("SELECT count(*) FROM job_effects").fetchone()[0] == len(jobs)


async def test_a_job_published_while_both_workers_wait_goes_to_one(
    make_job_worker: Any, js: Any, queue: JobQueue
) -> None:
    deliveries = Deliveries()
    workers = [await make_job_worker(name, queue, on_delivery=recorder(deliveries)) for name in ("a", "b")]
    for worker in workers:
        await worker.subscribe()
    pulls = [asyncio.create_task(w.process_once(1.5)) for w in workers]  # both pull requests wait

    async def both_waiting() -> bool:
        names = {w.consumer_name() for w in workers}
        infos = [await js.consumer_info(workers[0].stream, name) for name in names]
        return sum(info.num_waiting for info in infos) >= 2

    deadline = Deadline.after(10)
    while not await both_waiting():
        assert not deadline.expired, "the two workers' pull requests never both waited on the consumer"
        await asyncio.sleep(0.01)  # polling under the deadline, not a readiness guess
    await publish(js, queue.subject, "job-1")
    handled = await asyncio.gather(*pulls)
    assert sorted(handled) == [0, 1], "expected one of the two waiting workers to get the job:\n" + deliveries.report()
    assert_delivered_once(deliveries, ["job-1"])


@pytest.fixture
def start_worker_process(job_worker: Any, pg_database: Any, jetstream: Any, tmp_path: Path) -> Any:
    """Start ``python -m dispatch.queue_worker`` (the test's implementation); killed after the test.

    It inherits ``NATS_URL``, which the ``jetstream`` fixture set to the test's account; the database
    URL is passed the same way, through the environment (a command line is visible in ``ps``).
    """
    procs: list[subprocess.Popen[bytes]] = []

    def start(queue: JobQueue, name: str, *extra: str) -> subprocess.Popen[bytes]:
        assert os.environ.get("NATS_URL") == jetstream.url, "NATS_URL should be the test's own account"
        log = open(tmp_path / f"worker-{name}.log", "wb")  # noqa: SIM115 - the process writes it
        argv = [sys.executable, "-m", "dispatch.queue_worker", "--subject", queue.subject]
        argv += ["--stream", queue.stream, "--name", name]
        argv += ["--variant", variant_name("job_worker", job_worker), "--ack-wait", str(ACK_WAIT), *extra]
        env = {**os.environ, "DATABASE_URL": pg_database.url}
        proc = subprocess.Popen(
            argv, cwd=EXAMPLE, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        kill_process(proc)


def attempts(conn: Any, job_id: str) -> list[tuple[str, int, bool]]:
    """(worker, delivery, finished) of each delivery a worker process logged for ``job_id``."""
    rows = conn.execute(
        "SELECT worker, delivery, finished_at IS NOT NULL FROM job_attempts WHERE job_id = %s ORDER BY at",
        (job_id,),
    ).fetchall()
    return [tuple(row) for row in rows]


def effects(conn: Any, job_id: str) -> list[str]:
    return [row[0] for row in conn.execute("SELECT worker FROM job_effects WHERE job_id = %s", (job_id,))]


async def redelivered_to(worker: Any, deliveries: Deliveries, *, after: int) -> None:
    """Let ``worker`` pull until the log has more than ``after`` deliveries (REDELIVERY_DEADLINE)."""
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop, poll=0.1))
    try:
        await deliveries.wait_for_async(after + 1, timeout=REDELIVERY_DEADLINE)
    finally:
        stop.set()
        await task


async def test_a_job_held_by_a_killed_worker_is_redelivered_once_and_completed_once(
    make_job_worker: Any, js: Any, queue: JobQueue, start_worker_process: Any, pg_database: Any
) -> None:
    deliveries = Deliveries()
    survivor = await make_job_worker("B", queue, on_delivery=recorder(deliveries), ack_wait=ACK_WAIT)
    await survivor.subscribe()
    doomed = start_worker_process(queue, "A", "--hold")  # takes the job, never finishes it
    await publish(js, queue.subject, "job-7")
    with pg_database.connect(autocommit=True) as conn:
        eventually(lambda: attempts(conn, "job-7"), timeout=20, what="worker A to take the job")
        deliveries.record("A", "job-7")
        kill_process(doomed)  # SIGKILL: A dies holding the job, unacknowledged

        await redelivered_to(survivor, deliveries, after=1)
        assert_redelivered(deliveries, "job-7", first="A", then="B")
        assert deliveries.of("B")[0].redelivered, "B got the job as a first delivery: not A's job redelivered"
        assert await drain(survivor) == [0], "the job was delivered a third time:\n" + deliveries.report()
        assert effects(conn, "job-7") == ["B"]  # A never completed it; B did, once


async def test_a_worker_stalled_past_ack_wait_loses_its_job_and_it_takes_effect_once(
    make_job_worker: Any, js: Any, queue: JobQueue, start_worker_process: Any, pg_database: Any
) -> None:
    deliveries = Deliveries()
    other = await make_job_worker("B", queue, on_delivery=recorder(deliveries), ack_wait=ACK_WAIT)
    await other.subscribe()
    slow = start_worker_process(queue, "A", "--work", str(ACK_WAIT / 2))  # in time, unless stalled
    await publish(js, queue.subject, "job-8")
    with pg_database.connect(autocommit=True) as conn:
        eventually(lambda: attempts(conn, "job-8"), timeout=20, what="worker A to take the job")
        deliveries.record("A", "job-8")
        with paused(slow, max_seconds=REDELIVERY_DEADLINE + 5):  # SIGSTOP: a GC pause, a frozen VM
            await redelivered_to(other, deliveries, after=1)
        # A resumes, finishes its (already redelivered) job and acks it late.
        eventually(lambda: attempts(conn, "job-8")[0][2], timeout=10, what="worker A to finish after resuming")
        assert_redelivered(deliveries, "job-8", first="A", then="B")
        assert deliveries.of("B")[0].redelivered, "B got the job as a first delivery: not A's job redelivered"
        assert await drain(other) == [0], "the job was delivered a third time:\n" + deliveries.report()
        assert effects(conn, "job-8") == ["B"], "the job took effect more than once (or not by its first finisher)"


class WorkerDied(Exception):
    """The worker's process ends here, mid-job (testlane.seams.jetstream closes its connection next)."""


async def test_the_job_worker_passes_the_redelivery_seam_of_testlane_seams_jetstream(
    job_worker: Any, jetstream: Any, pg_database: Any
) -> None:
    """The same contract through testlane's JetStream seam helper: it owns the stream, the durable consumer
    and the two consumers; the example supplies only how a worker handles a message (``JobWorker.handle``)."""
    queue = await work_queue(
        jetstream.connect, stream=jetstream.stream("SEAM"), subject=jetstream.subject("seam.jobs"), ack_wait=ACK_WAIT
    )
    db = await psycopg.AsyncConnection.connect(pg_database.url, autocommit=True)

    def worker(consumer: str, work: Any = None) -> Any:
        options = {"work": work} if work else {}
        return job_worker(queue.js, db, consumer, queue.subject, stream=queue.stream, **options)

    async def dies_mid_job(job: Any) -> None:
        raise WorkerDied

    async def before_death(consumer: str, msg: Any) -> None:
        with contextlib.suppress(WorkerDied):
            await worker(consumer, dies_mid_job).handle(msg)

    async def survivor(consumer: str, msg: Any) -> None:
        await worker(consumer).handle(msg)

    try:
        job = json.dumps({"id": "job-9", "payload": {}})
        await assert_redelivered_after_death(queue, job, before_death=before_death, survivor=survivor)
    finally:
        await queue.close()
        await db.close()
    with pg_database.connect() as conn:
        assert effects(conn, "job-9") == ["survivor"]
