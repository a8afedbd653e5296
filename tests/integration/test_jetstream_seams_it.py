"""The JetStream seams on a real server started by testlane's fixtures (``jetstream``: an account per
test): each contract holds for a correct consumer, and fails with a message listing what each consumer
received for a broken one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("nats")

from testlane.seams.jetstream import (
    ack,
    assert_exactly_once,
    assert_redelivered_after_death,
    assert_slow_consumer_redelivered,
    work_queue,
)

pytestmark = pytest.mark.timeout(60)

ACK_WAIT = 0.5


def run(jetstream: Any, scenario: Any) -> Any:
    async def main() -> Any:
        queue = await work_queue(jetstream.connect, ack_wait=ACK_WAIT)
        try:
            return await scenario(queue)
        finally:
            await queue.close()

    return asyncio.run(main())


def test_two_competing_consumers_handle_each_job_exactly_once(jetstream: Any) -> None:
    handled: list[str] = []

    async def handle(consumer: str, msg: Any) -> None:
        handled.append(msg.data.decode())
        await msg.ack_sync()

    jobs = [f"job-{i}" for i in range(20)]
    deliveries = run(jetstream, lambda q: assert_exactly_once(q, jobs, handle))
    assert sorted(handled) == sorted(jobs)
    assert len(deliveries.consumers()) >= 1


def test_a_consumer_that_never_acks_fails_exactly_once_naming_what_each_got(jetstream: Any) -> None:
    async def handle(consumer: str, msg: Any) -> None:
        if consumer == "b":
            return  # the bug: b never acks, so its messages come back after ack_wait
        await msg.ack_sync()

    jobs = [f"job-{i}" for i in range(6)]
    with pytest.raises(AssertionError) as info:
        run(jetstream, lambda q: assert_exactly_once(q, jobs, handle, timeout=3))
    message = str(info.value)
    assert "expected each of 6 messages to be delivered exactly once, but" in message
    assert "consumer a received" in message and "consumer b received" in message
    assert "(redelivered)" in message


def test_a_consumer_killed_holding_a_job_gets_it_redelivered_once(jetstream: Any) -> None:
    deliveries = run(jetstream, lambda q: assert_redelivered_after_death(q, "job-1"))
    (first, again) = deliveries.all
    assert (first.consumer, again.consumer, again.redelivered) == ("doomed", "survivor", True)
    assert again.at - first.at >= ACK_WAIT * 0.9


def test_a_consumer_that_acks_before_its_work_loses_the_job_when_killed(jetstream: Any) -> None:
    with pytest.raises(AssertionError) as info:
        run(jetstream, lambda q: assert_redelivered_after_death(q, "job-1", before_death=ack))
    message = str(info.value)
    assert "job-1 was delivered again 0 times, not 1" in message
    assert "consumer doomed received 1: job-1" in message
    assert "consumer survivor received 0: nothing" in message


def test_a_slow_consumer_loses_its_job_to_the_other_and_its_late_ack_changes_nothing(jetstream: Any) -> None:
    outcome = run(jetstream, lambda q: assert_slow_consumer_redelivered(q, "job-1"))
    assert [(d.consumer, d.redelivered) for d in outcome.deliveries.all] == [("slow", False), ("fast", True)]
    assert outcome.late_ack == "accepted"
    assert outcome.pending_after == (0, 0)


def test_a_slow_consumer_that_reports_progress_keeps_its_job(jetstream: Any) -> None:
    """The fix for a slow handler: ``msg.in_progress()`` while working; the seam then fails (no redelivery)."""

    async def scenario(queue: Any) -> Any:
        from testlane.seams.queue import Deliveries

        deliveries = Deliveries()
        slow = await queue.consumer("slow", deliveries)
        fast = await queue.consumer("fast", deliveries)
        await queue.publish(["job-1"])
        msg = await slow.take()
        for _ in range(4):
            await asyncio.sleep(ACK_WAIT / 2)  # the slow work, reporting progress as it goes
            await msg.in_progress()
            assert await fast.take(timeout=0.01) is None
        await msg.ack_sync()
        assert await queue.pending() == (0, 0)
        return deliveries

    deliveries = run(jetstream, scenario)
    assert [d.consumer for d in deliveries.all] == ["slow"]
