"""The broker-neutral queue seams: the delivery log, its waits and its assertions' messages."""

from __future__ import annotations

import asyncio
import threading

import pytest

from testlane.core.waiting import WaitTimeout
from testlane.seams import Deliveries, assert_delivered_once, assert_redelivered


def test_each_consumer_is_listed_in_a_failed_exactly_once_check() -> None:
    log = Deliveries()
    log.record("a", b"job-1")
    log.record("a", "job-2")
    log.record("b", "job-2", redelivered=True)
    log.record("b", "job-3")
    with pytest.raises(AssertionError) as failed:
        assert_delivered_once(log, ["job-1", "job-2", "job-3"])
    message = str(failed.value)
    assert "job-2 was delivered 2 times" in message
    assert "consumer a received 2: job-1, job-2" in message
    assert "consumer b received 2: job-2 (redelivered), job-3" in message


def test_missing_and_unexpected_messages_are_named() -> None:
    log = Deliveries()
    log.record("a", "job-9")
    with pytest.raises(AssertionError, match=r"job-1 was delivered never; unexpected messages arrived: job-9"):
        assert_delivered_once(log, ["job-1"])


def test_exactly_once_passes_when_each_message_arrived_once() -> None:
    log = Deliveries()
    for i, consumer in enumerate("abab"):
        log.record(consumer, f"job-{i}")
    assert_delivered_once(log, [f"job-{i}" for i in range(4)])


def test_redelivery_to_the_survivor() -> None:
    log = Deliveries()
    log.record("doomed", "job-1")
    log.record("survivor", "job-1", redelivered=True)
    assert_redelivered(log, "job-1", first="doomed", then="survivor")
    with pytest.raises(AssertionError) as failed:
        assert_redelivered(log, "job-1", first="doomed", then="survivor", times=2)
    assert "delivered again 1 times, not 2" in str(failed.value)
    assert "consumer doomed received 1: job-1" in str(failed.value)


def test_a_consumer_that_received_nothing_is_still_listed() -> None:
    log = Deliveries()
    log.record("doomed", "job-1")
    with pytest.raises(AssertionError) as failed:
        assert_redelivered(log, "job-1", first="doomed", then="survivor")
    assert "consumer survivor received 0: nothing" in str(failed.value)


def test_wait_for_returns_when_another_thread_records() -> None:
    log = Deliveries()
    threading.Thread(target=lambda: [log.record("t", f"m{i}") for i in range(3)]).start()
    assert [d.body for d in log.wait_for(3, timeout=5)] == ["m0", "m1", "m2"]


def test_wait_for_times_out_with_what_arrived() -> None:
    log = Deliveries()
    log.record("a", "only")
    with pytest.raises(WaitTimeout, match=r"(?s)for 2 deliveries, 1 arrived:.*consumer a received 1: only"):
        log.wait_for(2, timeout=0.05)


def test_wait_for_async_wakes_on_records_from_tasks_and_threads() -> None:
    async def main() -> int:
        log = Deliveries()

        async def consumer() -> None:
            await asyncio.sleep(0)
            log.record("task", "a")

        task = asyncio.create_task(consumer())
        threading.Thread(target=lambda: log.record("thread", "b")).start()
        got = await log.wait_for_async(2, timeout=5)
        await task
        return len(got)

    assert asyncio.run(main()) == 2


def test_wait_for_async_times_out() -> None:
    async def main() -> None:
        await Deliveries().wait_for_async(1, timeout=0.05)

    with pytest.raises(WaitTimeout, match="0 arrived"):
        asyncio.run(main())


def test_the_rabbitmq_consumer_hands_its_handler_the_body_as_text() -> None:
    # What a user writes from the docs: a handler comparing to "job-3" must fire (no broker needed: the
    # consumer's delivery callback is driven directly, as pika would).
    from types import SimpleNamespace

    from testlane.seams.rabbitmq import Consumer

    fired: list[object] = []
    acked: list[int] = []

    def handler(body: str) -> None:
        if body == "job-3":
            fired.append(body)

    log = Deliveries()
    consumer = Consumer(object(), "q", "a", log, handler=handler)
    channel = SimpleNamespace(basic_ack=acked.append)
    for tag, body in enumerate([b"job-2", b"job-3"], start=1):
        consumer._on_message(channel, SimpleNamespace(delivery_tag=tag, redelivered=False), None, body)
    assert fired == ["job-3"]
    assert acked == [1, 2] and [d.body for d in log.all] == ["job-2", "job-3"]
