"""Deliberately broken variants of every guarded piece — each one a real, plausible mistake.

They exist to show that the seam and query tests catch them: ``pytest --broken all`` runs every
test of a seam once per variant (``[real]`` must pass, each broken one must fail), and testlane's
own suite checks that it does (tests/integration/test_dispatch_example_it.py). The fakes of the
unit lane cannot tell any of them from the real thing.

=======================  =====================  ======================================================
seam (fixture)           variant                the mistake
=======================  =====================  ======================================================
``locks``                ``xact-lock``          a transaction-scoped lock on an autocommit connection:
                                                released as soon as it is taken
``locks``                ``release-elsewhere``  unlocks through another connection (as a pool hands
                                                out): the holding session keeps the lock
``locks``                ``lock-table``         a row in a locks table: outlives a holder that died
``claim``                ``check-then-delete``  SELECT, then DELETE: two claimers both see the row
``add_wait``             ``check-then-insert``  SELECT, then INSERT: the second insert hits the key
``worker_class``         ``no-group``           each worker XREADs the stream itself: all handle all
``worker_class``         ``ack-early``          acks on receipt: a worker that dies loses the job
``worker_class``         ``no-reclaim``         never claims stale entries: a dead worker's job stays
``worker_class``         ``no-ack``             never acks: entries stay pending, redelivered later
``job_worker``           ``ack-on-receipt``     JetStream: acks on receipt, then works: a dead worker's job
                                                is gone
``job_worker``           ``ack-none``           JetStream: ``AckPolicy.NONE``: delivered counts as done
``job_worker``           ``default-ack-wait``   JetStream: ``ack_wait`` left at 30 s: a dead or stalled
                                                worker's job waits half a minute
``job_worker``           ``own-consumer``       JetStream: a durable consumer per worker: every worker
                                                gets every job
``job_worker``           ``no-dedupe``          JetStream: completes without the ``completed_jobs`` key:
                                                a job redelivered after a stall has its effect twice
``queue_by_name``        ``case-sensitive``     ``name = %s``: "BILLING" misses "Billing"
``delete_schedule``      ``unscoped``           ``WHERE id = %s``: anyone deletes anyone's schedule
``windows_overlapping``  ``contained``          containment instead of overlap: misses straddlers
=======================  =====================  ======================================================
"""

from __future__ import annotations

import contextlib
from typing import Any

from dispatch import jobs, queries, queue, stream, wake_index
from dispatch.locks import AdvisoryLocks, LockHandle, lock_key

# --------------------------------------------------------------------------- locks


class XactLocks(AdvisoryLocks):
    """``pg_try_advisory_xact_lock`` in autocommit: the lock ends with the statement's transaction."""

    def try_acquire(self, name: str) -> LockHandle | None:
        key = lock_key(name)
        conn = self.connect()
        conn.autocommit = True
        if not conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (key,)).fetchone()[0]:
            conn.close()
            return None
        handle = LockHandle(name, key, conn)
        self._handles.append(handle)
        return handle


class _ElsewhereHandle(LockHandle):
    def __init__(self, name: str, key: int, connection: Any, locks: ReleaseElsewhereLocks) -> None:
        super().__init__(name, key, connection)
        self.locks = locks

    def release(self) -> None:
        conn, self.connection = self.connection, None
        if conn is None:
            return
        self.locks.pool.append(conn)  # "back to the pool": the session, and its lock, live on
        with self.locks.connect() as other:  # unlocking elsewhere returns false (and warns)
            other.execute("SELECT pg_advisory_unlock(%s)", (self.key,))


class ReleaseElsewhereLocks(AdvisoryLocks):
    """Acquires correctly, but releases through another pooled connection."""

    def __init__(self, connect: Any) -> None:
        super().__init__(connect)
        self.pool: list[Any] = []

    def try_acquire(self, name: str) -> LockHandle | None:
        handle = super().try_acquire(name)
        if handle is None:
            return None
        elsewhere = _ElsewhereHandle(handle.name, handle.key, handle.connection, self)
        self._handles[-1] = elsewhere
        return elsewhere

    def close(self) -> None:
        super().close()
        for conn in self.pool:
            conn.close()
        self.pool.clear()


class _TableHandle(LockHandle):
    def release(self) -> None:
        conn, self.connection = self.connection, None
        if conn is None:
            return
        with contextlib.suppress(Exception):
            conn.execute("DELETE FROM dispatch_locks WHERE name = %s", (self.name,))
        conn.close()


class TableLocks(AdvisoryLocks):
    """A committed row per lock: exclusive and releasable, but nothing removes it when its holder dies."""

    def try_acquire(self, name: str) -> LockHandle | None:
        conn = self.connect()
        conn.autocommit = True
        row = conn.execute(
            "INSERT INTO dispatch_locks (name, holder_pid) VALUES (%s, pg_backend_pid()) "
            "ON CONFLICT DO NOTHING RETURNING name",
            (name,),
        ).fetchone()
        if row is None:
            conn.close()
            return None
        handle = _TableHandle(name, lock_key(name), conn)
        self._handles.append(handle)
        return handle


# --------------------------------------------------------------------------- claims and inserts


def claim_check_then_delete(conn: Any, job_id: str) -> jobs.Job | None:
    """Looks first, deletes second: between the two, another claimer looks too."""
    row = conn.execute("SELECT id, queue, payload FROM pending_jobs WHERE id = %s", (job_id,)).fetchone()
    if row is None:
        return None
    conn.execute("DELETE FROM pending_jobs WHERE id = %s", (job_id,))
    return jobs.Job(*row)


def add_wait_check_then_insert(conn: Any, wait_id: str, ref: str) -> bool:
    """Inserts only if absent — and a concurrent insert of the same key fails on the primary key."""
    exists = conn.execute("SELECT 1 FROM wake_index WHERE wait_id = %s AND ref = %s", (wait_id, ref)).fetchone()
    if exists:
        return False
    conn.execute("INSERT INTO wake_index (wait_id, ref) VALUES (%s, %s)", (wait_id, ref))
    return True


# --------------------------------------------------------------------------- stream workers


class NoGroupConsumer(stream.Consumer):
    """Reads the stream with plain XREAD from its own cursor: every worker sees every entry."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.last_id = "0"

    def ensure_group(self) -> None:
        pass

    def _reclaim(self) -> list[stream.Delivery]:
        return []

    def _read(self, block_ms: int) -> list[stream.Delivery]:
        reply = self.client.xread({self.stream: self.last_id}, count=1, block=block_ms)
        deliveries = [stream._delivery(entry) for _, entries in reply or [] for entry in entries]
        if deliveries:
            self.last_id = deliveries[-1].id
        return deliveries

    def _ack(self, delivery: stream.Delivery) -> None:
        pass


class AckEarlyConsumer(stream.Consumer):
    """Acknowledges on receipt, then handles: a worker dying mid-job takes the job with it."""

    def _deliver(self, delivery: stream.Delivery) -> None:
        self._ack(delivery)
        self.handler(delivery)


class NoReclaimConsumer(stream.Consumer):
    """Reads new entries only: what a dead worker held stays pending forever."""

    def _reclaim(self) -> list[stream.Delivery]:
        return []


class NoAckConsumer(stream.Consumer):
    """Handles but never acknowledges: every entry stays pending, to be redelivered again."""

    def _ack(self, delivery: stream.Delivery) -> None:
        pass


# --------------------------------------------------------------------------- JetStream job workers


class AckOnReceiptWorker(queue.JobWorker):
    """Acknowledges the message as soon as it arrives, then works: a worker dying mid-job loses it."""

    async def handle(self, msg: Any) -> None:
        await msg.ack_sync()
        job = self._job(msg)
        if self.on_delivery is not None:
            self.on_delivery(job)
        await self.work(job)
        await self._complete(job)


class AckNoneWorker(queue.JobWorker):
    """A consumer with ``AckPolicy.NONE``: JetStream counts a job done the moment it is delivered."""

    def consumer_config(self) -> Any:
        config = super().consumer_config()
        config.ack_policy = queue.AckPolicy.NONE
        config.ack_wait = None
        return config

    async def handle(self, msg: Any) -> None:
        job = self._job(msg)
        if self.on_delivery is not None:
            self.on_delivery(job)
        await self.work(job)
        await self._complete(job)  # nothing to ack


class DefaultAckWaitWorker(queue.JobWorker):
    """Leaves ``ack_wait`` at JetStream's 30 s default, whatever the deployment chose."""

    def consumer_config(self) -> Any:
        config = super().consumer_config()
        config.ack_wait = None  # the server's default: 30 s
        return config


class OwnConsumerWorker(queue.JobWorker):
    """Names the durable consumer after the worker: each worker has a cursor of its own on the stream."""

    def consumer_name(self) -> str:
        return f"{self.durable}-{self.name}"


class NoDedupeWorker(queue.JobWorker):
    """Records the job's effect on every delivery: a redelivered job is done twice."""

    async def _complete(self, job: queue.QueuedJob) -> None:
        async with self.db.transaction():
            await self.db.execute(
                "INSERT INTO completed_jobs (id, worker) VALUES (%s, %s) ON CONFLICT DO NOTHING", (job.id, job.worker)
            )
            await self.db.execute("INSERT INTO job_effects (job_id, worker) VALUES (%s, %s)", (job.id, job.worker))


# --------------------------------------------------------------------------- queries


def queue_by_name_case_sensitive(conn: Any, name: str) -> queries.Queue | None:
    row = conn.execute("SELECT id, name, owner FROM queues WHERE name = %s", (name,)).fetchone()
    return None if row is None else queries.Queue(*row)


def delete_schedule_unscoped(conn: Any, schedule_id: int, owner: str) -> bool:
    return bool(conn.execute("DELETE FROM schedules WHERE id = %s", (schedule_id,)).rowcount == 1)


def windows_contained(conn: Any, queue_id: int, start: Any, end: Any, *, include_open: bool = True) -> list[int]:
    rows = conn.execute(
        "SELECT id FROM maintenance_windows WHERE queue_id = %s AND starts_at >= %s AND ends_at <= %s "
        "ORDER BY starts_at, id",
        (queue_id, start, end),
    ).fetchall()
    return [row[0] for row in rows]


# --------------------------------------------------------------------------- the registry

# fixture name -> variant name -> implementation ("real" first). tests/conftest.py serves them.
VARIANTS: dict[str, dict[str, Any]] = {
    "locks": {
        "real": AdvisoryLocks,
        "xact-lock": XactLocks,
        "release-elsewhere": ReleaseElsewhereLocks,
        "lock-table": TableLocks,
    },
    "claim": {"real": jobs.claim, "check-then-delete": claim_check_then_delete},
    "add_wait": {"real": wake_index.add_wait, "check-then-insert": add_wait_check_then_insert},
    "worker_class": {
        "real": stream.Consumer,
        "no-group": NoGroupConsumer,
        "ack-early": AckEarlyConsumer,
        "no-reclaim": NoReclaimConsumer,
        "no-ack": NoAckConsumer,
    },
    "job_worker": {
        "real": queue.JobWorker,
        "ack-on-receipt": AckOnReceiptWorker,
        "ack-none": AckNoneWorker,
        "default-ack-wait": DefaultAckWaitWorker,
        "own-consumer": OwnConsumerWorker,
        "no-dedupe": NoDedupeWorker,
    },
    "queue_by_name": {"real": queries.queue_by_name, "case-sensitive": queue_by_name_case_sensitive},
    "delete_schedule": {"real": queries.delete_schedule, "unscoped": delete_schedule_unscoped},
    "windows_overlapping": {"real": queries.windows_overlapping, "contained": windows_contained},
}


def variant_name(seam: str, implementation: Any) -> str:
    """The name under which ``implementation`` is registered for ``seam``."""
    return next(name for name, impl in VARIANTS[seam].items() if impl is implementation)
