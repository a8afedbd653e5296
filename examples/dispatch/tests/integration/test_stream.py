"""Seams: consumer-group exactly-once delivery, and redelivery of a job whose worker died.

A fake queue is a list: it cannot show that two workers of a group never both get an entry, that
an entry stays pending on a worker until acknowledged, or that a dead worker's entry can be
claimed by another once it has been idle long enough.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from dispatch.broken import variant_name
from dispatch.stream import GROUP, emit

from testlane.seams import assert_exactly_one, eventually, kill_process, race, seam

EXAMPLE = Path(__file__).resolve().parents[2]
IDLE_MS = 300  # how long an entry must sit unacknowledged before another worker may claim it


@seam(repeat=5)
def test_one_event_two_workers_of_a_group_handle_it_once(
    make_worker: Any, redis_client: Any, seam_iteration: Any
) -> None:
    stream = f"jobs:{seam_iteration.number}"
    handled: list[Any] = []
    workers = [make_worker(stream, f"w{i}", handled.append) for i in range(2)]
    workers[0].ensure_group()
    event_id = emit(redis_client, stream, job="job-1")
    result = race(2, lambda i: workers[i].process_once(block_ms=200))  # both read at once
    assert_exactly_one(result, what="handled the event")
    assert [d.id for d in handled] == [event_id]
    assert redis_client.xpending(stream, GROUP)["pending"] == 0, "the event was not acknowledged"
    assert [w.process_once(block_ms=10) for w in workers] == [0, 0]  # nothing more for anyone


def blocked_readers(client: Any, stream: str) -> int:
    return sum(1 for c in client.client_list() if c["name"].startswith(f"{stream}:") and "b" in c["flags"])


def test_an_event_emitted_while_both_workers_wait_is_handled_once(make_worker: Any, redis_client: Any) -> None:
    stream = "jobs:blocked"
    handled: list[Any] = []
    workers = [make_worker(stream, f"w{i}", handled.append) for i in range(2)]
    workers[0].ensure_group()

    def emit_once_both_wait() -> None:
        eventually(lambda: blocked_readers(redis_client, stream) == 2, timeout=10, what="both workers to block")
        emit(redis_client, stream, job="job-2")

    result = race(2, lambda i: workers[i].process_once(block_ms=1000), during=emit_once_both_wait)
    assert_exactly_one(result, what="handled the event")
    assert len(handled) == 1
    assert redis_client.xpending(stream, GROUP)["pending"] == 0, "the event was not acknowledged"


@pytest.fixture
def start_worker_process(redis_db: Any, worker_class: Any, tmp_path: Path) -> Any:
    """Start ``python -m dispatch.worker`` (same implementation as the test's); killed after the test."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(stream: str, name: str, *extra: str) -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"worker-{name}.log", "wb")  # noqa: SIM115 - the process writes it
        argv = [sys.executable, "-m", "dispatch.worker", "--stream", stream]
        argv += ["--name", name, "--variant", variant_name("worker_class", worker_class), *extra]
        # The URL (with the password) goes through the environment: a command line is visible in ps.
        env = {**os.environ, "REDIS_URL": redis_db.url}
        proc = subprocess.Popen(
            argv, cwd=EXAMPLE, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        kill_process(proc)


def test_a_job_held_by_a_dead_worker_is_reclaimed_and_completed_once(
    make_worker: Any, redis_client: Any, start_worker_process: Any
) -> None:
    stream = "jobs:stalled"
    completed: list[Any] = []
    survivor = make_worker(stream, "B", completed.append, claim_idle_ms=IDLE_MS)
    survivor.ensure_group()
    doomed = start_worker_process(stream, "A", "--hold")  # takes the job, never finishes it
    job_id = emit(redis_client, stream, job="job-3")

    started = eventually(lambda: redis_client.get(f"{stream}:started:{job_id}"), timeout=20, what="worker A to start")
    assert started == b"A"
    pending = redis_client.xpending_range(stream, GROUP, "-", "+", 10)
    assert [(p["message_id"].decode(), p["consumer"]) for p in pending] == [(job_id, b"A")], (
        "the job should be pending on worker A while A works on it"
    )
    kill_process(doomed)  # SIGKILL: A dies holding the job

    eventually(lambda: survivor.process_once(block_ms=50), timeout=5, what="worker B to reclaim the job")
    assert [(d.id, d.reclaimed) for d in completed] == [(job_id, True)]
    assert redis_client.xpending(stream, GROUP)["pending"] == 0, "the reclaimed job was not acknowledged"
    assert survivor.process_once(block_ms=10) == 0, "the job was delivered again"
    assert redis_client.lrange(f"{stream}:completed", 0, -1) == []  # A never completed it
