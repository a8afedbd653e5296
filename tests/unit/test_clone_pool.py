"""The clone pool's threads over a fake engine: real threads, ordered by events, no server."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from testlane.core.errors import DatabaseError
from testlane.databases import pool as pool_module
from testlane.databases.pool import ClonePool, Lease
from tests.unit.fake_engine import TEMPLATE, FakeConnection, FakeEngine

TIMEOUT = 30  # seconds; only ever reached when the pool is broken


def make_pool(
    engine: FakeEngine, *, size: int = 2, workers: int = 2, drop_at_close: bool = True
) -> ClonePool[FakeConnection, FakeConnection]:
    return ClonePool(
        engine, TEMPLATE, run_id="0badf00d", worker="main", size=size, workers=workers, drop_at_close=drop_at_close
    )


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def started(engine: FakeEngine) -> Iterator[ClonePool[FakeConnection, FakeConnection]]:
    pool = make_pool(engine).start()
    try:
        yield pool
    finally:
        if engine.gate is not None:
            engine.gate.set()
        pool.close()


def assert_nothing_leaked(engine: FakeEngine, pool: ClonePool[FakeConnection, FakeConnection]) -> None:
    """Every database made was dropped exactly once or kept; every connection opened was closed."""
    assert engine.leftovers() == set(pool.kept)
    assert sorted(engine.made) == sorted(engine.dropped + pool.kept)
    assert pool.stats.dropped == len(engine.dropped)
    assert pool.stats.cloned + pool.stats.on_demand == len(engine.made)
    assert engine.open_connections() == []


def wait_for(pool: ClonePool[FakeConnection, FakeConnection], predicate: Callable[[], bool]) -> None:
    """Block until ``predicate()`` holds; the pool notifies its condition on every change of state."""
    with pool._cond:
        assert pool._cond.wait_for(predicate, timeout=TIMEOUT), "the pool never got there"


def test_threads_acquiring_and_releasing_at_once_never_share_a_database(engine: FakeEngine) -> None:
    pool = make_pool(engine, size=2, workers=2).start()
    threads, rounds = 6, 25
    barrier = threading.Barrier(threads)
    held: set[str] = set()
    held_lock = threading.Lock()
    errors: list[BaseException] = []

    def use_the_pool(index: int) -> None:
        try:
            barrier.wait(timeout=TIMEOUT)
            for turn in range(rounds):
                lease = pool.acquire(wait=1.0)
                with held_lock:
                    assert lease.name not in held, f"{lease.name} handed out twice"
                    held.add(lease.name)
                with lease.connection(lambda: pytest.fail("every lease comes with its connection")) as conn:
                    assert conn.database == lease.name and not conn.closed
                with held_lock:
                    held.discard(lease.name)
                pool.release(lease, keep=turn == rounds - 1 and index == 0)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    workers = [threading.Thread(target=use_the_pool, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=TIMEOUT)
    pool.close()
    assert errors == []
    assert pool.stats.handed_out == threads * rounds
    assert len(pool.kept) == 1
    assert pool.stats.reused_unchanged > 0  # released databases came back reset, not only fresh clones
    assert_nothing_leaked(engine, pool)


def test_a_failing_clone_reaches_the_caller_as_one_error(engine: FakeEngine) -> None:
    engine.fail_clones = -1
    engine.gate = threading.Event()
    pool = make_pool(engine, size=1, workers=1).start()
    raised: list[BaseException] = []

    def take() -> None:
        try:
            pool.acquire(wait=TIMEOUT)
        except BaseException as exc:  # checked below, in the test's thread
            raised.append(exc)

    try:
        assert engine.background_clone_started.wait(TIMEOUT)
        taker = threading.Thread(target=take)
        taker.start()
        wait_for(pool, lambda: pool.stats.waited == 1)  # the caller waits for the clone on its way...
        engine.gate.set()  # ...which fails: the caller stops waiting, clones itself, and fails the same way
        taker.join(TIMEOUT)
        assert [type(exc) for exc in raised] == [DatabaseError]
        assert "the fake said no" in str(raised[0])
        assert engine.clone_calls == 2  # the worker's clone, then the caller's own
        with pytest.raises(DatabaseError, match="the fake said no"):
            pool.acquire(wait=TIMEOUT)
        assert engine.clone_calls == 3  # the worker stopped cloning: the next caller tries at once
        assert pool.stats.waited == 1 and pool.stats.handed_out == 0
    finally:
        pool.close()
    assert_nothing_leaked(engine, pool)


def test_a_background_failure_does_not_fail_a_caller_whose_own_clone_works(engine: FakeEngine) -> None:
    engine.fail_clones = 1
    pool = make_pool(engine, size=1, workers=1).start()
    try:
        wait_for(pool, lambda: pool._error is not None)  # the worker's clone failed; it clones no more
        lease = pool.acquire(wait=TIMEOUT)
        assert lease.on_demand and pool.stats.on_demand == 1
        pool.release(lease)
    finally:
        pool.close()
    assert_nothing_leaked(engine, pool)


@pytest.mark.parametrize("how", ["none", "raise"])
def test_a_database_that_cannot_be_reset_is_dropped(engine: FakeEngine, how: str) -> None:
    engine.reset_fails = how
    pool = make_pool(engine, size=0, workers=1).start()
    try:
        lease = pool.acquire()
        assert lease.on_demand
        pool.release(lease)
        assert engine.dropped_one.wait(TIMEOUT)
        assert engine.dropped == [lease.name] and lease.name not in engine.databases
        assert (pool.stats.reused_unchanged, pool.stats.reused_truncated) == (0, 0)
    finally:
        pool.close()
    assert_nothing_leaked(engine, pool)


def test_a_reset_database_comes_back_with_its_connection(engine: FakeEngine) -> None:
    engine.truncate = True
    pool = make_pool(engine, size=0, workers=1).start()
    try:
        first = pool.acquire()
        conn = first.conn
        pool.release(first)
        again = pool.acquire(wait=TIMEOUT)  # waits for the reset on its way
        assert (again.name, again.conn, again.reused, again.truncated) == (first.name, conn, True, True)
        assert pool.stats.reused_truncated == 1 and pool.stats.on_demand == 1
        pool.release(again)
    finally:
        pool.close()
    assert_nothing_leaked(engine, pool)


def test_a_kept_database_outlives_the_pool(engine: FakeEngine) -> None:
    pool = make_pool(engine, size=1, workers=1).start()
    try:
        lease = pool.acquire(wait=TIMEOUT)
        pool.release(lease, keep=True)
        assert pool.kept == [lease.name]
        assert lease.conn is None  # its connection is closed: the database is left for inspection
    finally:
        pool.close()
    assert engine.leftovers() == {lease.name}
    assert_nothing_leaked(engine, pool)


def test_closing_while_a_clone_is_in_flight_drops_it_when_it_lands(engine: FakeEngine) -> None:
    engine.gate = threading.Event()
    pool = make_pool(engine, size=1, workers=1).start()
    assert engine.background_clone_started.wait(TIMEOUT)
    closer = threading.Thread(target=pool.close)
    closer.start()
    wait_for(pool, lambda: pool._stopping)
    engine.gate.set()  # the clone lands while close() waits for the worker
    closer.join(TIMEOUT)
    assert not closer.is_alive()
    assert pool.stats.cloned == 1 and len(engine.made) == 1
    assert_nothing_leaked(engine, pool)


def test_a_worker_that_outlives_close_drops_its_own_clone(engine: FakeEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_module, "JOIN_TIMEOUT", 0.0)  # close() does not wait for the worker at all
    engine.gate = threading.Event()
    pool = make_pool(engine, size=1, workers=1).start()
    assert engine.background_clone_started.wait(TIMEOUT)
    pool.close()
    assert engine.made == []  # still in flight
    engine.gate.set()
    pool._threads[0].join(TIMEOUT)
    assert not pool._threads[0].is_alive()
    assert len(engine.made) == 1
    assert_nothing_leaked(engine, pool)


def test_the_wait_for_a_clone_on_its_way_ends_at_the_deadline(engine: FakeEngine) -> None:
    engine.gate = threading.Event()
    pool = make_pool(engine, size=1, workers=1).start()
    try:
        assert engine.background_clone_started.wait(TIMEOUT)
        lease = pool.acquire(wait=0.05)  # the background clone is held: the caller clones its own
        assert lease.on_demand
        assert pool.stats.waited == 1 and pool.stats.wait_seconds >= 0.04
        pool.release(lease)
    finally:
        engine.gate.set()
        pool.close()
    assert_nothing_leaked(engine, pool)


def test_a_caller_waiting_gets_the_clone_that_lands(engine: FakeEngine) -> None:
    engine.gate = threading.Event()
    pool = make_pool(engine, size=1, workers=1).start()
    got: list[Lease[FakeConnection]] = []
    try:
        assert engine.background_clone_started.wait(TIMEOUT)
        taker = threading.Thread(target=lambda: got.append(pool.acquire(wait=TIMEOUT)))
        taker.start()
        wait_for(pool, lambda: pool.stats.waited == 1)
        engine.gate.set()
        taker.join(TIMEOUT)
        assert [lease.on_demand for lease in got] == [False]
        assert (pool.stats.on_demand, pool.stats.handed_out) == (0, 1)  # (the worker refills behind it)
        pool.release(got[0])
    finally:
        engine.gate.set()
        pool.close()
    assert_nothing_leaked(engine, pool)


def test_a_pool_never_started_clones_on_demand_and_drops_at_once(engine: FakeEngine) -> None:
    pool = make_pool(engine, size=4)
    lease = pool.acquire()
    assert lease.on_demand and engine.made == [lease.name]
    pool.release(lease)
    assert engine.dropped == [lease.name]  # no worker would: dropped in release()
    pool.close()
    assert_nothing_leaked(engine, pool)


def test_without_drop_at_close_used_databases_wait_for_the_backlog(engine: FakeEngine) -> None:
    # A server thrown away after the run takes its databases with it: the pool does not spend time dropping.
    pool = make_pool(engine, size=0, drop_at_close=False)
    lease = pool.acquire()
    pool.release(lease)
    pool.close()
    assert engine.dropped == [] and engine.leftovers() == {lease.name}
    assert engine.open_connections() == []


def test_the_lease_lends_its_connection_and_takes_it_back() -> None:
    conn = FakeConnection("tl_0badf00d_main_1")
    lease = Lease("tl_0badf00d_main_1", "fake://", TEMPLATE, conn)
    with lease.connection(lambda: pytest.fail("the lease has a connection")) as lent:
        assert lent is conn and lease.conn is None  # lent out: nobody else takes it meanwhile
    assert lease.conn is conn and not conn.closed
    with lease.connection(lambda: FakeConnection("own")) as lent:
        assert lent is conn
        lent.close()  # closed by the test: handed back all the same, the reset opens a new one
    fallback = FakeConnection("own")
    bare = Lease("tl_0badf00d_main_2", "fake://")
    with bare.connection(lambda: fallback) as lent:
        assert lent is fallback
    assert fallback.closed and bare.conn is None
