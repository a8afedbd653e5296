"""JetStream queue seams: the delivery contracts of a durable pull consumer, pinned on a real server.

A work queue here is a stream and one durable pull consumer with explicit acks (:func:`work_queue`);
each consumer (a worker: its own connection, as separate processes would have) fetches from that
durable and records what it receives in a :class:`~testlane.seams.queue.Deliveries` log (a delivery
whose ``num_delivered`` is above 1 is marked ``redelivered``).

The handler is the code under test: ``async def handler(consumer: str, msg: nats.aio.msg.Msg) -> None``
(:data:`Handler`), called with the consumer's name (``"a"``, ``"b"``...) and nats-py's message, whose
body ``msg.data`` is **bytes** (``msg.data.decode()`` is the text the ``bodies`` arguments, the log and
failure messages use). It does the work and acks (``await msg.ack_sync()``); a message it does not ack
comes back after ``ack_wait``. :func:`ack` is the plain handler.

Three contracts, one helper each; every failure lists what each consumer received:

* :func:`assert_exactly_once`: two (or more) competing consumers on one durable consumer; every
  message is handled exactly once and every one is acked in the end.
* :func:`assert_redelivered_after_death`: a consumer takes a message and dies (its connection
  closed) without acking; after ``ack_wait`` the message goes to the survivor, exactly once. A
  consumer that acks *before* its work loses the message when it dies: the assertion says so.
* :func:`assert_slow_consumer_redelivered`: a consumer paused past ``ack_wait`` loses its message to the other one
  (which handles it too: the work runs twice unless the handler is idempotent); its late ack is
  answered without an error and changes nothing (measured on nats-server 2.9.10 and 2.15.1). The
  fix is ``await msg.in_progress()`` (extends the deadline) while working, or a longer ``ack_wait``.

``ack_wait`` has no minimum on the server; use at least 0.5 s so a busy machine does not redeliver a
message that is being handled normally. Example (a test in the integration lane, fixture ``jetstream``;
docs/seams.md has more)::

    import asyncio

    from testlane.seams.jetstream import assert_exactly_once, work_queue


    def test_jobs_are_handled_once(jetstream):
        handled = []

        async def handle_job(consumer: str, msg) -> None:  # the code under test
            handled.append(msg.data.decode())  # msg.data is bytes
            await msg.ack_sync()  # after the work

        async def main():
            queue = await work_queue(jetstream.connect, ack_wait=0.5)
            try:
                await assert_exactly_once(queue, [f"job-{i}" for i in range(10)], handle_job)
            finally:
                await queue.close()

        asyncio.run(main())
        assert sorted(handled) == sorted(f"job-{i}" for i in range(10))
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from testlane.core.waiting import Deadline, monotonic
from testlane.seams.queue import Deliveries, assert_delivered_once, assert_redelivered

if TYPE_CHECKING:
    import nats.aio.client
    import nats.aio.msg
    import nats.js.client

__all__ = [
    "Handler",
    "PullConsumer",
    "SlowConsumer",
    "WorkQueue",
    "ack",
    "assert_exactly_once",
    "assert_redelivered_after_death",
    "assert_slow_consumer_redelivered",
    "work_queue",
]

Handler = Callable[[str, "nats.aio.msg.Msg"], Awaitable[None]]
"""``async def handler(consumer: str, msg: nats.aio.msg.Msg) -> None``: the consumer's name and the message
(body ``msg.data``, bytes); it works and acks (``await msg.ack_sync()``)."""
Connect = Callable[[], Awaitable["nats.aio.client.Client"]]


async def ack(consumer: str, msg: nats.aio.msg.Msg) -> None:
    """The plain handler: acknowledge (and wait for the server to have it)."""
    await msg.ack_sync()


def _text(body: bytes | str) -> str:
    return body.decode("utf-8", "replace") if isinstance(body, bytes) else body


@dataclass
class PullConsumer:
    """One worker on the queue's durable consumer: its own connection and pull subscription."""

    name: str
    client: nats.aio.client.Client
    sub: Any  # nats.js.JetStreamContext.PullSubscription
    deliveries: Deliveries

    async def take(self, timeout: float = 1.0) -> nats.aio.msg.Msg | None:
        """Fetch one message (recorded in the log), or None when none came within ``timeout`` s."""
        import nats.errors

        try:
            msgs = await self.sub.fetch(1, timeout=timeout)
        except (TimeoutError, nats.errors.TimeoutError):
            return None
        msg: nats.aio.msg.Msg = msgs[0]
        self.deliveries.record(self.name, msg.data, redelivered=msg.metadata.num_delivered > 1)
        return msg

    async def work(self, handler: Handler, stop: asyncio.Event) -> None:
        """Take and handle messages until ``stop`` is set."""
        while not stop.is_set():
            msg = await self.take(timeout=0.2)
            if msg is not None:
                await handler(self.name, msg)

    async def die(self) -> None:
        """The worker's process dies: its connection goes away, whatever it held unacked."""
        with contextlib.suppress(Exception):
            await self.client.close()


@dataclass
class WorkQueue:
    """A stream and one durable pull consumer (explicit acks, ``ack_wait`` seconds)."""

    connect: Connect
    client: nats.aio.client.Client
    stream: str
    subject: str
    durable: str
    ack_wait: float
    consumers: list[PullConsumer] = field(default_factory=list)

    @property
    def js(self) -> nats.js.client.JetStreamContext:
        return self.client.jetstream()

    async def publish(self, bodies: Iterable[bytes | str]) -> None:
        """Publish each body (acknowledged by the stream) in order."""
        for body in bodies:
            await self.js.publish(self.subject, body.encode() if isinstance(body, str) else body)

    async def consumer(self, name: str, deliveries: Deliveries) -> PullConsumer:
        """A new worker ``name`` on its own connection, recording into ``deliveries``."""
        client = await self.connect()
        sub = await client.jetstream().pull_subscribe_bind(self.durable, stream=self.stream)
        worker = PullConsumer(name, client, sub, deliveries)
        self.consumers.append(worker)
        return worker

    async def pending(self) -> tuple[int, int]:
        """(messages not delivered yet, delivered but not acked) on the durable consumer."""
        info = await self.js.consumer_info(self.stream, self.durable)
        return int(info.num_pending or 0), int(info.num_ack_pending or 0)

    async def close(self) -> None:
        """Close every worker's connection and the queue's own (the stream stays: the lease cleans it)."""
        for worker in self.consumers:
            await worker.die()
        with contextlib.suppress(Exception):
            await self.client.close()


async def work_queue(
    connect: Connect,
    *,
    stream: str = "JOBS",
    subject: str = "jobs.new",
    durable: str = "workers",
    ack_wait: float = 1.0,
) -> WorkQueue:
    """Create the stream (capturing ``subject``) and its durable pull consumer; ``connect`` makes a
    connected nats-py client (``jetstream.connect``, ``nats.connect``): every worker gets its own."""
    from nats.js.api import AckPolicy, ConsumerConfig

    client = await connect()
    try:
        js = client.jetstream()
        await js.add_stream(name=stream, subjects=[subject])
        await js.add_consumer(
            stream, ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT, ack_wait=ack_wait)
        )
    except BaseException:
        await client.close()
        raise
    return WorkQueue(connect, client, stream, subject, durable, ack_wait)


async def _poll(deadline: Deadline, done: Callable[[], Awaitable[bool]]) -> bool:
    """Ask ``done()`` every 20 ms until it is true (True) or the deadline passed (False)."""
    while True:
        if await done():
            return True
        if deadline.remaining <= 0:
            return False
        await asyncio.sleep(min(0.02, deadline.remaining))


async def _stop(stop: asyncio.Event, tasks: Sequence[asyncio.Task[None]]) -> None:
    stop.set()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    for result in done:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            raise result


def _unsettled(queue: WorkQueue, pending: tuple[int, int], timeout: float, deliveries: Deliveries) -> AssertionError:
    waiting, unacked = pending
    return AssertionError(
        f"after {timeout:g} s, {unacked} message(s) were still unacknowledged and {waiting} not delivered on "
        f"{queue.stream}/{queue.durable} (ack_wait {queue.ack_wait:g} s): does every consumer ack?\n"
        + deliveries.report(worker.name for worker in queue.consumers)
    )


async def assert_exactly_once(
    queue: WorkQueue,
    bodies: Iterable[bytes | str],
    handler: Handler = ack,
    *,
    consumers: Sequence[str] = ("a", "b"),
    timeout: float = 10.0,
) -> Deliveries:
    """Publish ``bodies``, let ``consumers`` compete for them on the durable consumer with ``handler``
    until every message is acked, and assert each was handled exactly once (see module docstring).
    Returns the log; raises AssertionError listing what each consumer received."""
    __tracebackhide__ = True
    expected = [_text(body) for body in bodies]
    deliveries = Deliveries()
    workers = [await queue.consumer(name, deliveries) for name in consumers]
    await queue.publish(expected)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(worker.work(handler, stop)) for worker in workers]
    deadline = Deadline.after(timeout)
    pending = (0, 0)

    async def settled() -> bool:
        nonlocal pending
        pending = await queue.pending()
        return len(deliveries) >= len(expected) and pending == (0, 0)

    try:
        done = await _poll(deadline, settled)
    finally:
        await _stop(stop, tasks)
    assert_delivered_once(deliveries, expected)
    if not done:
        raise _unsettled(queue, pending, timeout, deliveries)
    return deliveries


async def assert_redelivered_after_death(
    queue: WorkQueue,
    body: bytes | str,
    *,
    before_death: Handler | None = None,
    survivor: Handler = ack,
    timeout: float = 10.0,
) -> Deliveries:
    """Consumer ``doomed`` takes ``body`` and dies without acking (after ``before_death(consumer, msg)``,
    the part of the handler that ran: a broken one acks there); consumer ``survivor`` works on. Asserts
    the message went to ``doomed``, then once to ``survivor`` after ``ack_wait``, and no more."""
    __tracebackhide__ = True
    text = _text(body)
    deliveries = Deliveries()
    doomed = await queue.consumer("doomed", deliveries)
    await queue.publish([text])
    msg = await doomed.take(timeout=min(timeout, 5.0))
    if msg is None:
        raise AssertionError(
            f"consumer doomed received nothing within {min(timeout, 5.0):g} s:\n" + deliveries.report()
        )
    if before_death is not None:
        await before_death("doomed", msg)
    await doomed.die()
    died = monotonic()
    rescuer = await queue.consumer("survivor", deliveries)
    stop = asyncio.Event()
    task = asyncio.create_task(rescuer.work(survivor, stop))
    deadline = Deadline.after(timeout)

    async def settled() -> bool:
        # Redelivered and acked, or nothing pending long after the deadline would have passed.
        if await queue.pending() != (0, 0):
            return False
        again = sum(1 for d in deliveries.all if d.body == text) - 1
        return again >= 1 or monotonic() - died > 2 * queue.ack_wait + 0.5

    try:
        done = await _poll(deadline, settled)
    finally:
        await _stop(stop, [task])
    assert_redelivered(deliveries, text, first="doomed", then="survivor", times=1)
    if not done:
        raise _unsettled(queue, await queue.pending(), timeout, deliveries)
    return deliveries


@dataclass(frozen=True)
class SlowConsumer:
    """What :func:`assert_slow_consumer_redelivered` observed: the log, and what the slow consumer's late ack did."""

    deliveries: Deliveries
    late_ack: str  # "accepted" (the server answered, without an error) or the error it raised
    pending_after: tuple[int, int]  # (not delivered, unacked) once the late ack was in

    def describe(self) -> str:
        return (
            f"the slow consumer's late ack: {self.late_ack}; afterwards {self.pending_after[1]} unacked, "
            f"{self.pending_after[0]} undelivered\n" + self.deliveries.report(["slow", "fast"])
        )


async def assert_slow_consumer_redelivered(
    queue: WorkQueue,
    body: bytes | str,
    *,
    pause: float | None = None,
    fast: Handler = ack,
    timeout: float = 10.0,
) -> SlowConsumer:
    """Consumer ``slow`` takes ``body`` and pauses ``pause`` seconds (default: twice ``ack_wait``) while
    consumer ``fast`` works; then ``slow`` acks late. Asserts the message went to ``slow``, then once to
    ``fast``, and no more (the late ack brings no third delivery). Returns what was seen, with what
    the late ack did (see module docstring)."""
    __tracebackhide__ = True
    text = _text(body)
    pause = 2 * queue.ack_wait if pause is None else pause
    deliveries = Deliveries()
    slow = await queue.consumer("slow", deliveries)
    other = await queue.consumer("fast", deliveries)
    await queue.publish([text])
    msg = await slow.take(timeout=min(timeout, 5.0))
    if msg is None:
        raise AssertionError(f"consumer slow received nothing within {min(timeout, 5.0):g} s")
    stop = asyncio.Event()
    task = asyncio.create_task(other.work(fast, stop))
    try:
        await asyncio.sleep(pause)  # the slow consumer's work: the seam itself, not a wait for readiness
    finally:
        await _stop(stop, [task])
    try:
        await msg.ack_sync(timeout=2)
        late = "accepted"
    except Exception as exc:
        late = f"{type(exc).__name__}: {exc}"
    pending = await queue.pending()
    outcome = SlowConsumer(deliveries, late, pending)
    assert_redelivered(deliveries, text, first="slow", then="fast", times=1)
    if pending != (0, 0):
        raise AssertionError(f"{text} is still pending after the slow consumer's late ack: " + outcome.describe())
    return outcome
