"""Queue seams: a log of what each consumer received, and the delivery contracts brokers promise.

A broker's contracts are about *who got what*: two competing consumers share a queue and each job is
handled exactly once; a consumer that dies holding a message gets it redelivered to another one once;
a consumer paused past the ack deadline loses its message to another. Fakes cannot model any of it.
These helpers are broker-neutral: consumers record what they receive in a :class:`Deliveries` log
(from threads, processes' callbacks relayed by the test, or asyncio tasks), the test waits for the
log under a deadline, and the assertions fail with a message listing every consumer's deliveries::

    expected each of 3 messages to be delivered exactly once, but job-2 was delivered 2 times:
      consumer a received 2: job-1, job-2
      consumer b received 2: job-2 (redelivered), job-3

The broker-specific seams (a RabbitMQ consumer killed with its message unacked, a JetStream consumer
that misses its ``ack_wait``) are in :mod:`testlane.seams.rabbitmq` and :mod:`testlane.seams.jetstream`.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from testlane.core.waiting import Deadline, WaitTimeout, monotonic

__all__ = ["Deliveries", "Delivery", "assert_delivered_once", "assert_redelivered"]


@dataclass(frozen=True)
class Delivery:
    """One message as one consumer received it: ``at`` is seconds (monotonic) since the log started."""

    consumer: str
    body: str
    redelivered: bool = False
    at: float = 0.0

    def describe(self) -> str:
        return f"{self.body} (redelivered)" if self.redelivered else self.body


def _text(body: bytes | str) -> str:
    return body.decode("utf-8", "replace") if isinstance(body, bytes) else body


class Deliveries:
    """What consumers received, in order; safe to record from threads and from asyncio tasks.

    ``record`` is called by each consumer's handler; ``wait_for(n)`` (threads) or ``await
    wait_for_async(n)`` (asyncio) returns once ``n`` deliveries are in, under a deadline in seconds,
    and raises :class:`~testlane.core.waiting.WaitTimeout` listing what arrived when they are not.
    """

    def __init__(self) -> None:
        self._items: list[Delivery] = []
        self._changed = threading.Condition()
        self._started = monotonic()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    # -- recording ----------------------------------------------------------------------------
    def record(self, consumer: str, body: bytes | str, *, redelivered: bool = False) -> Delivery:
        """Log that ``consumer`` received ``body`` (bytes are decoded as UTF-8); returns the entry."""
        delivery = Delivery(consumer, _text(body), redelivered, monotonic() - self._started)
        with self._changed:
            self._items.append(delivery)
            self._changed.notify_all()
            waiters = list(self._waiters)
        for loop, event in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)
        return delivery

    # -- reading --------------------------------------------------------------------------------
    @property
    def all(self) -> list[Delivery]:
        with self._changed:
            return list(self._items)

    def __len__(self) -> int:
        with self._changed:
            return len(self._items)

    def of(self, consumer: str) -> list[Delivery]:
        """What ``consumer`` received, in order."""
        return [d for d in self.all if d.consumer == consumer]

    def consumers(self) -> list[str]:
        """The consumers that received anything, in order of their first delivery."""
        return list(dict.fromkeys(d.consumer for d in self.all))

    def bodies(self) -> list[str]:
        return [d.body for d in self.all]

    def report(self, consumers: Iterable[str] = ()) -> str:
        """One line per consumer (those named in ``consumers`` too, even when they received nothing)."""
        items = self.all
        names = list(dict.fromkeys([*consumers, *(d.consumer for d in items)]))
        if not names:
            return "  no consumer received anything"
        lines = []
        for name in names:
            got = [d.describe() for d in items if d.consumer == name]
            lines.append(f"  consumer {name} received {len(got)}: {', '.join(got) if got else 'nothing'}")
        return "\n".join(lines)

    # -- waiting --------------------------------------------------------------------------------
    def wait_for(self, count: int, *, timeout: float = 10.0) -> list[Delivery]:
        """Block until at least ``count`` deliveries are logged (``timeout`` in s); return them all."""
        deadline = Deadline.after(timeout)
        with self._changed:
            while len(self._items) < count:
                if deadline.remaining <= 0:
                    raise WaitTimeout(self._timeout_message(count, timeout))
                self._changed.wait(deadline.remaining)
            return list(self._items)

    async def wait_for_async(self, count: int, *, timeout: float = 10.0) -> list[Delivery]:
        """:meth:`wait_for` for a test whose consumers run on its own event loop."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        entry = (loop, event)
        with self._changed:
            self._waiters.append(entry)
        try:
            deadline = Deadline.after(timeout)
            while len(self) < count:
                if deadline.remaining <= 0:
                    raise WaitTimeout(self._timeout_message(count, timeout))
                event.clear()
                if len(self) >= count:
                    break
                try:
                    await asyncio.wait_for(event.wait(), deadline.remaining)
                except TimeoutError:
                    continue
            return self.all
        finally:
            with self._changed:
                self._waiters.remove(entry)

    def _timeout_message(self, count: int, timeout: float) -> str:
        have = len(self._items)
        return (
            f"waited {timeout:g} s for {count} deliveries, {have} arrived:\n"
            + self.report()
            + "\n  is every consumer subscribed to the queue the messages went to, and acking?"
        )


def assert_delivered_once(deliveries: Deliveries, expected: Iterable[bytes | str]) -> None:
    """Assert that each message in ``expected`` was received exactly once, by any consumer, and nothing
    else was; the message lists what each consumer received."""
    __tracebackhide__ = True
    wanted = [_text(body) for body in expected]
    counts = Counter(deliveries.bodies())
    problems = []
    for body in dict.fromkeys(wanted):
        if counts[body] != wanted.count(body):
            times = "never" if counts[body] == 0 else f"{counts[body]} times"
            problems.append(f"{body} was delivered {times}")
    extra = sorted(set(counts) - set(wanted))
    if extra:
        problems.append(f"unexpected messages arrived: {', '.join(extra)}")
    if problems:
        raise AssertionError(
            f"expected each of {len(wanted)} messages to be delivered exactly once, but "
            + "; ".join(problems)
            + ":\n"
            + deliveries.report()
        )


def assert_redelivered(
    deliveries: Deliveries, body: bytes | str, *, first: str, then: str | None = None, times: int = 1
) -> None:
    """Assert that ``body`` went to consumer ``first``, then was delivered again ``times`` times (to
    ``then``, when given: e.g. the consumer that survived) and no more; the message lists what each
    consumer received."""
    __tracebackhide__ = True
    text = _text(body)
    got = [d for d in deliveries.all if d.body == text]
    problems = []
    if not got:
        problems.append(f"{text} was never delivered")
    else:
        if got[0].consumer != first:
            problems.append(f"{text} went first to {got[0].consumer}, not {first}")
        again = got[1:]
        if len(again) != times:
            problems.append(f"{text} was delivered again {len(again)} times, not {times}")
        if then is not None and any(d.consumer != then for d in again):
            problems.append(f"{text} was delivered again to {', '.join(d.consumer for d in again)}, not only {then}")
    if problems:
        raise AssertionError(
            f"expected {text} to reach {first}, then to be redelivered {times} time(s)"
            + (f" to {then}" if then else "")
            + ", but "
            + "; ".join(problems)
            + ":\n"
            + deliveries.report([first] + ([then] if then else []))
        )
