"""The seam kit against real servers: races on real connections, lock gates, backends terminated
and connections cut mid-transaction, servers and sessions paused and resumed under a deadline."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import psycopg
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from testlane.core.errors import SeamError
from testlane.core.waiting import WaitTimeout
from testlane.seams import (
    assert_exactly_one,
    assert_no_errors,
    assert_winners,
    async_race,
    eventually,
    kill_connection,
    lock_gate,
    paused,
    race,
    terminate_backend,
)


@pytest.fixture
def jobs(pg_database: Any) -> Any:
    with pg_database.connect(autocommit=True) as conn:
        conn.execute("CREATE TABLE jobs (id text PRIMARY KEY)")
        conn.execute("INSERT INTO jobs VALUES ('job-1')")
    return pg_database


def connect(db: Any) -> Any:
    return lambda i: db.connect(autocommit=True)


def claim(conn: psycopg.Connection[Any]) -> Any:
    return conn.execute("DELETE FROM jobs WHERE id = 'job-1' RETURNING id").fetchone()


def check_then_claim(conn: psycopg.Connection[Any]) -> Any:
    row = conn.execute("SELECT id FROM jobs WHERE id = 'job-1'").fetchone()
    if row is not None:
        conn.execute("DELETE FROM jobs WHERE id = 'job-1'")
    return row


GATE = "SELECT 1 FROM jobs WHERE id = 'job-1' FOR UPDATE"


def test_a_gated_race_has_exactly_one_winner_for_an_atomic_claim(jobs: Any) -> None:
    with lock_gate(jobs, GATE) as gate:
        result = race(3, claim, setup=connect(jobs), during=lambda: gate.open(when_waiting=3), timeout=20)
    assert_no_errors(result)
    assert assert_exactly_one(result).value == ("job-1",)


def test_a_gated_race_makes_check_then_act_fail_every_time(jobs: Any) -> None:
    with lock_gate(jobs, GATE) as gate:
        result = race(2, check_then_claim, setup=connect(jobs), during=lambda: gate.open(when_waiting=2), timeout=20)
    assert_winners(result, 2)  # both read the row before either deleted it
    with pytest.raises(AssertionError, match=r"expected exactly 1 of 2 callers to win .* but 2 did"):
        assert_exactly_one(result)


def test_each_racer_has_its_own_session(pg_database: Any, postgres: Any) -> None:
    result = race(3, lambda conn: conn.info.backend_pid, setup=connect(pg_database), timeout=20)
    assert len(set(result.results)) == 3
    for source in (pg_database, pg_database.url, postgres, lambda: postgres.connect()):
        result = race(2, lambda conn: (conn.info.backend_pid, conn.autocommit), connect=source, timeout=20)
        assert_no_errors(result)
        assert len({pid for pid, _ in result.results}) == 2
        assert all(autocommit for _, autocommit in result.results)
    with pytest.raises(ValueError, match="not both"):
        race(2, lambda conn: None, setup=connect(pg_database), connect=pg_database)


def test_a_gate_nobody_waits_for_times_out_and_still_opens(jobs: Any) -> None:
    with lock_gate(jobs, GATE) as gate:
        with pytest.raises(WaitTimeout, match=r"2 backends to wait on the lock gate.*0 waited"):
            gate.open(when_waiting=2, timeout=0.3)
        assert gate.opened
        with jobs.connect(autocommit=True) as other:  # the row lock is gone
            other.execute("SET lock_timeout = '2s'")
            assert other.execute(GATE).fetchone() == (1,)


def test_async_race_on_async_connections(jobs: Any) -> None:
    async def main() -> Any:
        async def aclaim(conn: psycopg.AsyncConnection[Any]) -> Any:
            cur = await conn.execute("DELETE FROM jobs WHERE id = 'job-1' RETURNING id")
            return await cur.fetchone()

        with lock_gate(jobs, GATE) as gate:
            loop = asyncio.get_running_loop()
            return await async_race(
                2,
                aclaim,
                connect=jobs,
                during=lambda: loop.run_in_executor(None, lambda: gate.open(when_waiting=2)),
                timeout=20,
            )

    assert assert_exactly_one(asyncio.run(main())).value == ("job-1",)


def test_a_race_stuck_on_a_lock_times_out_and_its_query_is_cancelled(jobs: Any) -> None:
    with lock_gate(jobs, GATE), pytest.raises(WaitTimeout) as info:  # the gate stays shut during the race
        race(1, claim, setup=connect(jobs), timeout=0.5)
    assert "caller 0: still running fn at" in str(info.value)
    assert "in claim" in str(info.value)


# --------------------------------------------------------------------------- deaths


def holds_advisory_lock(db: Any, key: int) -> bool:
    with db.connect(autocommit=True) as probe:
        got = probe.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]
        if got:
            probe.execute("SELECT pg_advisory_unlock(%s)", (key,))
        return not got


def test_terminate_backend_releases_session_locks_and_breaks_the_connection(pg_database: Any) -> None:
    holder = pg_database.connect(autocommit=True)
    holder.execute("SELECT pg_advisory_lock(7)")
    assert holds_advisory_lock(pg_database, 7)
    pid = terminate_backend(holder, via=pg_database)
    assert pid == holder.info.backend_pid
    assert not holds_advisory_lock(pg_database, 7)  # no waiting needed: it returned after the exit
    with pytest.raises(psycopg.OperationalError):
        holder.execute("SELECT 1")
    holder.close()


def test_terminate_backend_by_pid_via_an_open_connection(pg_database: Any, postgres: Any) -> None:
    holder = pg_database.connect()
    holder.execute("SELECT pg_advisory_xact_lock(8)")  # a transaction lock, transaction left open
    with postgres.connect() as admin:
        terminate_backend(holder.info.backend_pid, via=admin)
        assert admin.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert not holds_advisory_lock(pg_database, 8)
    holder.close()


def test_terminate_backend_says_what_is_wrong(pg_database: Any) -> None:
    with pg_database.connect(autocommit=True) as conn:
        with pytest.raises(SeamError, match="through that same backend"):
            terminate_backend(conn, via=conn)
        with pytest.raises(SeamError, match="no backend with pid 1 "):
            terminate_backend(1, via=conn)


def test_kill_connection_mid_transaction_rolls_back_and_releases(jobs: Any) -> None:
    client = jobs.connect()
    client.execute("INSERT INTO jobs VALUES ('job-2')")
    client.execute("SELECT 1 FROM jobs WHERE id = 'job-1' FOR UPDATE")
    client.execute("SELECT pg_advisory_lock(9)")
    kill_connection(client, via=jobs)
    with jobs.connect(autocommit=True) as other:
        other.execute("SET lock_timeout = '2s'")
        assert other.execute(GATE).fetchone() == (1,)  # the row lock went with the session
        assert other.execute("SELECT array_agg(id) FROM jobs").fetchone() == (["job-1"],)  # rolled back
    assert not holds_advisory_lock(jobs, 9)
    with pytest.raises(psycopg.OperationalError):
        client.execute("SELECT 1")
    client.close()


def test_kill_connection_without_via_is_noticed_by_the_server_soon_after(pg_database: Any) -> None:
    client = pg_database.connect(autocommit=True)
    client.execute("SELECT pg_advisory_lock(10)")
    kill_connection(client)
    eventually(lambda: not holds_advisory_lock(pg_database, 10), timeout=10, what="the lock to be released")
    client.close()


# --------------------------------------------------------------------------- stalls


def run_in_thread(fn: Any) -> tuple[threading.Thread, threading.Event, list[Any]]:
    done = threading.Event()
    out: list[Any] = []

    def target() -> None:
        try:
            out.append(fn())
        except Exception as exc:
            out.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=target, name="seams-it-query")
    thread.start()
    return thread, done, out


def test_a_paused_backend_holds_its_locks_and_its_client_waits(jobs: Any) -> None:
    holder = jobs.connect()
    holder.execute("SELECT 1 FROM jobs WHERE id = 'job-1' FOR UPDATE")
    try:
        with paused(holder) as pause, jobs.connect(autocommit=True) as other:
            assert pause.pids == (holder.info.backend_pid,)
            thread, done, out = run_in_thread(lambda: holder.execute("SELECT 42").fetchone())
            other.execute("SET lock_timeout = '200ms'")
            with pytest.raises(psycopg.errors.LockNotAvailable):
                other.execute(GATE)  # the frozen session still holds the row
            assert other.execute("SELECT count(*) FROM jobs").fetchone() == (1,)  # everything else works
            assert not done.wait(0.3)  # and the frozen session does not answer
        assert done.wait(10)
        thread.join(5)
        assert out == [(42,)]
    finally:
        holder.close()


def test_a_paused_valkey_times_clients_out_and_answers_after_resume(valkey: Any) -> None:
    client = valkey.client(socket_timeout=0.3, retry=Retry(NoBackoff(), 0))  # redis-py retries 3 times by default
    try:
        with paused(valkey) as pause:
            assert valkey.pid in pause.pids
            with pytest.raises(redis.exceptions.TimeoutError):
                client.ping()
        assert eventually(client.ping, timeout=10, retry_on=(redis.exceptions.ConnectionError,))
    finally:
        client.close()


def test_a_paused_postgres_server_freezes_every_session(postgres: Any) -> None:
    with postgres.connect() as conn:
        with paused(postgres, max_seconds=20) as pause:
            assert postgres.pid in pause.pids and len(pause.pids) > 1  # postmaster and its children
            thread, done, out = run_in_thread(lambda: conn.execute("SELECT 1").fetchone())
            assert not done.wait(0.3)
        assert done.wait(10)
        thread.join(5)
        assert out == [(1,)]


def test_the_watchdog_resumes_a_server_a_client_waits_on_without_a_timeout(valkey: Any) -> None:
    client = valkey.client()  # no socket timeout: this call would hang forever
    try:
        with pytest.raises(SeamError, match="watchdog resumed it"), paused(valkey, max_seconds=0.5):
            assert client.ping()  # returns once the watchdog resumes the server
    finally:
        client.close()
