"""testlane.seams: pin the contracts that only exist in a real database or queue.

Some contracts cannot be tested with fakes: an advisory lock held by one connection, exactly one
winner of a claim race, ``ON CONFLICT`` under concurrency, a consumer group delivering a job once,
a job redelivered after its worker died. This kit gives such tests the tools they need:

* :mod:`~testlane.seams.race` — :func:`race` / :func:`async_race`: ``n`` callers, each with its own
  connection, released together; :class:`RaceResult` and assertions (:func:`assert_exactly_one`)
  whose message lists what every caller got;
* :mod:`~testlane.seams.gate` — :func:`lock_gate`: make racers meet on a lock inside Postgres, so a
  check-then-act bug shows every time rather than by luck;
* :mod:`~testlane.seams.kill` — deaths: :func:`terminate_backend`, :func:`kill_connection`,
  :func:`kill_process`, :func:`stop_thread`;
* :mod:`~testlane.seams.pause` — stalls: :func:`paused` (SIGSTOP/SIGCONT with a watchdog);
* :mod:`~testlane.seams.eventually` — :func:`eventually` / :func:`eventually_passes` instead of sleeps;
* :mod:`~testlane.seams.repeat` — ``@seam(repeat=N)``: repeat a race test, report the failing iteration;
* :mod:`~testlane.seams.queue` — :class:`Deliveries`: what each consumer of a queue received, and
  :func:`assert_delivered_once` / :func:`assert_redelivered` (competing consumers, redelivery).
* :mod:`~testlane.seams.jetstream` (NATS JetStream work queues, needs nats-py) and
  :mod:`~testlane.seams.rabbitmq` (needs pika), each with ``assert_exactly_once``,
  ``assert_redelivered_after_death`` and ``assert_slow_consumer_redelivered``: import them from there.

Every helper waits under a deadline; none can hang a test. See docs/seams.md, whose tutorial is
the dispatch example (examples/dispatch).
"""

from __future__ import annotations

from testlane.seams.eventually import eventually, eventually_passes
from testlane.seams.gate import LockGate, lock_gate
from testlane.seams.kill import kill_connection, kill_process, stop_thread, terminate_backend
from testlane.seams.pause import Pause, paused
from testlane.seams.queue import Deliveries, Delivery, assert_delivered_once, assert_redelivered
from testlane.seams.race import (
    RaceOutcome,
    RaceResult,
    assert_exactly_one,
    assert_no_errors,
    assert_winners,
    async_race,
    race,
)
from testlane.seams.repeat import SeamIteration, seam

__all__ = [
    "Deliveries",
    "Delivery",
    "LockGate",
    "Pause",
    "RaceOutcome",
    "RaceResult",
    "SeamIteration",
    "assert_delivered_once",
    "assert_exactly_one",
    "assert_no_errors",
    "assert_redelivered",
    "assert_winners",
    "async_race",
    "eventually",
    "eventually_passes",
    "kill_connection",
    "kill_process",
    "lock_gate",
    "paused",
    "race",
    "seam",
    "stop_thread",
    "terminate_backend",
]
