"""``python -m dispatch.queue_worker``: one JetStream job worker in a process of its own.

The redelivery seams need a worker that really dies (SIGKILL) or really stalls (SIGSTOP) while it
holds a job; a task or a thread can do neither. Each job the worker receives is logged in Postgres
(``job_attempts``: job, worker, delivery number) before it works on it, and marked finished once the
worker acked it. The work takes ``--work`` seconds, or with ``--hold`` "forever" — until the test kills
the process. The process exits by itself after ``--lifetime`` seconds, so it cannot outlive a broken test.

The NATS and Postgres URLs come from ``NATS_URL`` and ``DATABASE_URL`` in the environment, not from
the command line: they carry passwords, and every local user can read a process's command line.
Under testlane, ``NATS_URL`` is the ``[tool.testlane.env]`` mapping of ``{nats.url}``, which the
``jetstream`` fixture points at the test's own account for the test's duration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time

import nats
import psycopg

from dispatch.broken import VARIANTS
from dispatch.queue import ACK_WAIT, QueuedJob


async def work_loop(args: argparse.Namespace, nats_url: str, database_url: str) -> None:
    nc = await nats.connect(nats_url, allow_reconnect=False, name=f"dispatch-worker-{args.name}")
    db = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
    forever = asyncio.Event()
    taken: list[QueuedJob] = []

    async def work(job: QueuedJob) -> None:
        taken.append(job)
        await db.execute(
            "INSERT INTO job_attempts (job_id, worker, delivery) VALUES (%s, %s, %s)",
            (job.id, job.worker, job.delivery),
        )
        if args.hold:
            await asyncio.wait_for(forever.wait(), args.lifetime)
        await asyncio.sleep(args.work)  # the job itself

    try:
        worker = VARIANTS["job_worker"][args.variant](
            nc.jetstream(), db, args.name, args.subject, work=work, stream=args.stream, ack_wait=args.ack_wait
        )
        deadline = time.monotonic() + args.lifetime
        while time.monotonic() < deadline:
            if await worker.process_once(0.1):
                job = taken.pop()
                await db.execute(
                    "UPDATE job_attempts SET finished_at = clock_timestamp() "
                    "WHERE job_id = %s AND worker = %s AND delivery = %s",
                    (job.id, job.worker, job.delivery),
                )
    finally:
        await db.close()
        await nc.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dispatch.queue_worker")
    parser.add_argument("--subject", required=True)
    parser.add_argument("--stream", default="JOBS")
    parser.add_argument("--name", required=True)
    parser.add_argument("--variant", default="real", choices=sorted(VARIANTS["job_worker"]))
    parser.add_argument("--ack-wait", type=float, default=ACK_WAIT)
    parser.add_argument("--work", type=float, default=0.0, help="seconds each job takes")
    parser.add_argument("--hold", action="store_true", help="log each job, then never finish it")
    parser.add_argument("--lifetime", type=float, default=60.0)
    args = parser.parse_args(argv)
    urls = {}
    for name in ("NATS_URL", "DATABASE_URL"):
        if not os.environ.get(name):
            parser.error(f"{name} is not set (the worker reads its URLs from the environment)")
        urls[name] = os.environ[name]
    with contextlib.suppress(TimeoutError):  # --hold past --lifetime
        asyncio.run(work_loop(args, urls["NATS_URL"], urls["DATABASE_URL"]))


if __name__ == "__main__":
    main()
