"""The seam kit's pure parts: race results and their messages, races of plain Python callers,
eventually's messages, repeat's reporting, and process kills/pauses on real child processes."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
from typing import Any

import psutil
import pytest

from testlane.core.errors import SeamError
from testlane.core.waiting import WaitTimeout
from testlane.seams import (
    RaceOutcome,
    RaceResult,
    SeamIteration,
    assert_exactly_one,
    assert_no_errors,
    assert_winners,
    async_race,
    eventually,
    eventually_passes,
    kill_process,
    paused,
    race,
    seam,
    stop_thread,
)

# --------------------------------------------------------------------------- results and assertions


def result_of(*outcomes: tuple[Any, BaseException | None]) -> RaceResult[Any]:
    return RaceResult(
        tuple(
            RaceOutcome(i, value, error, started=i * 0.0001, elapsed=0.01) for i, (value, error) in enumerate(outcomes)
        )
    )


def test_results_errors_and_winners_keep_caller_order() -> None:
    boom = ValueError("boom")
    result = result_of((("row",), None), (None, None), (None, boom), (0, None))
    assert result.results == [("row",), None, 0]
    assert result.errors == [boom]
    assert [o.index for o in result.winners()] == [0]
    assert [o.index for o in result.winners(lambda v: v is None)] == [1]
    assert result.spread == pytest.approx(0.0003)


def test_exactly_one_returns_the_winner() -> None:
    won = assert_exactly_one(result_of((None, None), (("job-1",), None)))
    assert won.index == 1
    assert won.value == ("job-1",)


def test_exactly_one_lists_what_every_caller_got() -> None:
    result = result_of((("job-1",), None), (("job-1",), None), (None, KeyError("gone")))
    with pytest.raises(AssertionError) as info:
        assert_exactly_one(result, what="got the row")
    message = str(info.value)
    assert message.startswith("expected exactly 1 of 3 callers to win (got the row), but 2 did, 1 raised")
    assert "caller 0: won   returned ('job-1',)" in message
    assert "caller 1: won   returned ('job-1',)" in message
    assert "caller 2: lost  raised KeyError: 'gone'" in message


def test_no_winner_is_a_failure_too_and_names_a_named_predicate() -> None:
    def got_a_row(value: object) -> bool:
        return value is not None

    with pytest.raises(AssertionError, match=r"callers to win \(satisfied got_a_row\), but 0 did"):
        assert_exactly_one(result_of((None, None), (None, None)), got_a_row)


def test_assert_winners_counts() -> None:
    result = result_of((True, None), (True, None), (False, None))
    assert len(assert_winners(result, 2)) == 2
    with pytest.raises(AssertionError, match="expected exactly 3 of 3"):
        assert_winners(result, 3)


def test_assert_no_errors_lists_outcomes_and_chains_the_first_error() -> None:
    boom = RuntimeError("duplicate key value violates unique constraint")
    with pytest.raises(AssertionError) as info:
        assert_no_errors(result_of((1, None), (None, boom)))
    assert "expected no caller to raise, but 1 of 2 did" in str(info.value)
    assert "raised RuntimeError: duplicate key value" in str(info.value)
    assert info.value.__cause__ is boom
    assert_no_errors(result_of((1, None)))


def test_long_values_are_shortened_to_one_line() -> None:
    outcome = RaceOutcome(0, "x" * 500)
    assert len(outcome.describe()) < 200
    assert outcome.describe().endswith("...")


# --------------------------------------------------------------------------- race with threads


def test_callers_really_overlap() -> None:
    # Each caller waits for all the others inside fn: this only finishes if all run at once.
    inner = threading.Barrier(4)
    result = race(4, lambda i: inner.wait(timeout=2) is not None and i, timeout=5)
    assert_no_errors(result)
    assert result.results == [0, 1, 2, 3]
    assert result.spread < 1.0


class Resource:
    def __init__(self, i: int, log: list[str]) -> None:
        self.i = i
        self.log = log
        log.append(f"open {i}")

    def close(self) -> None:
        self.log.append(f"close {self.i}")


def test_setup_gives_each_caller_its_own_resource_closed_after_fn_even_when_fn_raises() -> None:
    log: list[str] = []

    def fn(res: Resource) -> int:
        if res.i == 1:
            raise ValueError("caller 1 fails")
        return res.i * 10

    result = race(3, fn, setup=lambda i: Resource(i, log), timeout=5)
    assert sorted(log) == ["close 0", "close 1", "close 2", "open 0", "open 1", "open 2"]
    assert result.results == [0, 20]
    assert [type(e) for e in result.errors] == [ValueError]
    assert result.outcomes[1].describe() == "raised ValueError: caller 1 fails"


def test_a_failing_setup_means_the_race_did_not_start() -> None:
    log: list[str] = []
    ran: list[int] = []

    def setup(i: int) -> Resource:
        if i == 2:
            raise ConnectionError("connection refused")
        return Resource(i, log)

    with pytest.raises(SeamError, match="the race did not start: caller 2's setup raised ConnectionError"):
        race(3, ran.append, setup=setup, timeout=5)
    assert ran == []
    assert sorted(x for x in log if x.startswith("close")) == ["close 0", "close 1"]


def test_a_stuck_caller_times_out_saying_where_it_is() -> None:
    release = threading.Event()

    def stuck_waiting_for_a_lock(i: int) -> int:
        if i == 1:
            release.wait(5)
        return i

    try:
        with pytest.raises(WaitTimeout) as info:
            race(2, stuck_waiting_for_a_lock, timeout=0.3)
    finally:
        release.set()
    message = str(info.value)
    assert "the race did not finish within 0.3s" in message
    assert "caller 0: finished, returned 0" in message
    assert "caller 1: still running fn at" in message
    assert "in stuck_waiting_for_a_lock" in message


def test_during_runs_while_the_callers_run() -> None:
    started = threading.Event()
    go = threading.Event()

    def fn(i: int) -> bool:
        started.set()
        return go.wait(2)

    def during() -> None:
        assert started.wait(2)
        go.set()

    assert race(2, fn, during=during, timeout=5).results == [True, True]


def test_race_needs_a_caller() -> None:
    with pytest.raises(ValueError, match="at least one caller"):
        race(0, lambda i: i)


# --------------------------------------------------------------------------- async_race


def test_async_race_releases_tasks_together_and_closes_resources() -> None:
    log: list[str] = []

    class AsyncResource(Resource):
        async def aclose(self) -> None:
            self.log.append(f"aclose {self.i}")

    async def setup(i: int) -> AsyncResource:
        await asyncio.sleep(0.01 * i)  # staggered setups; the barrier lines them up
        return AsyncResource(i, log)

    async def main() -> RaceResult[int]:
        inner = asyncio.Barrier(3)

        async def fn(res: AsyncResource) -> int:
            await asyncio.wait_for(inner.wait(), 2)
            if res.i == 2:
                raise LookupError("no row")
            return res.i

        return await async_race(3, fn, setup=setup, timeout=5)

    result = asyncio.run(main())
    assert result.results == [0, 1]
    assert [type(e) for e in result.errors] == [LookupError]
    assert sorted(x for x in log if x.startswith("aclose")) == ["aclose 0", "aclose 1", "aclose 2"]


def test_async_race_times_out_saying_where_a_task_waits() -> None:
    async def main() -> None:
        async def slow(i: int) -> int:
            if i == 0:
                await asyncio.sleep(5)
            return i

        await async_race(2, slow, timeout=0.2)

    with pytest.raises(WaitTimeout, match=r"(?s)caller 0: still running fn at .*in slow.*caller 1: finished"):
        asyncio.run(main())


def test_async_race_setup_failure() -> None:
    async def setup(i: int) -> int:
        if i == 0:
            raise OSError("no route")
        return i

    async def fn(x: int) -> int:
        return x

    with pytest.raises(SeamError, match="caller 0's setup raised OSError: no route"):
        asyncio.run(async_race(2, fn, setup=setup, timeout=5))


# --------------------------------------------------------------------------- eventually


def test_eventually_returns_the_value_that_held() -> None:
    calls = iter([0, 0, 3])
    assert eventually(lambda: next(calls), timeout=2) == 3


def test_eventually_with_until_can_return_a_falsy_value() -> None:
    calls = iter([5, 2, 0])
    assert eventually(lambda: next(calls), timeout=2, until=lambda n: n == 0) == 0


def test_eventually_times_out_with_what_how_long_attempts_and_the_last_value() -> None:
    with pytest.raises(WaitTimeout) as info:
        eventually(lambda: 0, timeout=0.1, what="the job to be completed")
    lines = str(info.value).splitlines()
    assert lines[0].startswith("eventually: timed out after 0.1s (")
    assert lines[0].endswith("attempts) waiting for the job to be completed")
    assert lines[1] == "  last value: 0"


def test_eventually_names_a_lambda_by_its_source_and_reports_the_last_exception() -> None:
    def flaky() -> int:
        raise AssertionError("still 0 rows")

    with pytest.raises(WaitTimeout) as info:
        eventually(lambda: flaky(), timeout=0.05)
    message = str(info.value)
    assert "eventually(lambda: flaky(), timeout=0.05)" in message
    assert "last exception: AssertionError: still 0 rows" in message
    assert isinstance(info.value.last_error, AssertionError)


def test_eventually_does_not_swallow_unexpected_errors() -> None:
    with pytest.raises(ZeroDivisionError):
        eventually(lambda: 1 / 0, timeout=5)


def test_eventually_retries_the_exceptions_it_is_told_to() -> None:
    attempts = iter([ConnectionError("refused"), ConnectionError("refused"), "ok"])

    def probe() -> str:
        value = next(attempts)
        if isinstance(value, Exception):
            raise value
        return value

    assert eventually(probe, timeout=2, retry_on=(ConnectionError,)) == "ok"


def test_eventually_passes_reports_the_last_assertion() -> None:
    state = {"n": 0}

    def check() -> None:
        state["n"] += 1
        assert state["n"] >= 3, f"only {state['n']}"

    eventually_passes(check, timeout=2)

    def never() -> None:
        raise AssertionError("handler ran 0 times, expected 1")

    with pytest.raises(WaitTimeout, match=r"(?s)waiting for .*never.*last exception: AssertionError: handler ran 0"):
        eventually_passes(never, timeout=0.05)


# --------------------------------------------------------------------------- repeat


def test_seam_repeats_the_body_and_passes_the_iteration() -> None:
    seen: list[str] = []

    @seam(repeat=3)
    def body(seam_iteration: SeamIteration) -> None:
        seen.append(str(seam_iteration))

    body(seam_iteration=SeamIteration())
    assert seen == ["1/3", "2/3", "3/3"]
    assert [m.name for m in body.pytestmark] == ["seam"]  # type: ignore[attr-defined]


def test_seam_reports_the_failing_iteration_and_stops_there() -> None:
    runs: list[int] = []

    @seam(repeat=10)
    def body(seam_iteration: SeamIteration) -> None:
        runs.append(seam_iteration.number)
        assert seam_iteration.number != 4, "two winners"

    with pytest.raises(AssertionError, match="two winners") as info:
        body(seam_iteration=SeamIteration())
    assert runs == [1, 2, 3, 4]
    assert info.value.__notes__ == ["seam: iteration 4 of 10 failed (iterations 1-3 passed)"]


def test_seam_does_not_call_a_skip_a_failure() -> None:
    @seam(repeat=3)
    def body() -> None:
        pytest.skip("not today")

    with pytest.raises(pytest.skip.Exception) as info:
        body()
    assert not getattr(info.value, "__notes__", None)


def test_seam_repeats_async_bodies() -> None:
    runs: list[int] = []

    @seam(repeat=3)
    async def body(seam_iteration: SeamIteration) -> None:
        runs.append(seam_iteration.number)
        if seam_iteration.number == 2:
            raise KeyError("lost")

    with pytest.raises(KeyError) as info:
        asyncio.run(body(seam_iteration=SeamIteration()))
    assert runs == [1, 2]
    assert info.value.__notes__ == ["seam: iteration 2 of 3 failed (iteration 1 passed)"]


def test_fresh_mode_only_marks_the_test() -> None:
    def body() -> None:
        pass

    assert seam(repeat=5, fresh=True)(body) is body
    assert body.pytestmark[0].kwargs == {"repeat": 5, "fresh": True}  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="at least 1"):
        seam(repeat=0)


# --------------------------------------------------------------------------- processes and threads


@pytest.fixture
def sleeper() -> Any:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)


def test_kill_process_kills_and_reaps(sleeper: subprocess.Popen[bytes]) -> None:
    assert kill_process(sleeper) == -signal.SIGKILL
    assert sleeper.poll() == -signal.SIGKILL
    assert kill_process(sleeper) == -signal.SIGKILL  # already gone: not an error


def test_kill_process_by_pid_and_other_signals(sleeper: subprocess.Popen[bytes]) -> None:
    assert kill_process(sleeper.pid, sig=signal.SIGTERM, group=True) == -signal.SIGTERM  # reaped through psutil


def test_kill_process_refuses_this_process_and_its_group() -> None:
    import os

    with pytest.raises(SeamError, match="refuses"):
        kill_process(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])  # our process group
    try:
        with pytest.raises(SeamError, match="test run's own process group"):
            kill_process(child, group=True)
    finally:
        child.kill()
        child.wait(5)


def test_paused_stops_and_resumes_a_process(sleeper: subprocess.Popen[bytes]) -> None:
    proc = psutil.Process(sleeper.pid)
    with paused(sleeper) as pause:
        assert proc.status() == psutil.STATUS_STOPPED
        assert pause.pids == (sleeper.pid,)
    assert proc.status() != psutil.STATUS_STOPPED


def test_paused_resumes_even_when_the_block_fails(sleeper: subprocess.Popen[bytes]) -> None:
    with pytest.raises(RuntimeError, match="inside"), paused(sleeper.pid):
        raise RuntimeError("inside")
    assert psutil.Process(sleeper.pid).status() != psutil.STATUS_STOPPED


def test_the_watchdog_resumes_a_forgotten_pause_and_the_block_fails(sleeper: subprocess.Popen[bytes]) -> None:
    message = "stayed paused longer than max_seconds=0.2; the watchdog resumed it"
    with pytest.raises(SeamError, match=message), paused(sleeper, max_seconds=0.2) as pause:
        eventually(lambda: pause.resumed_by_watchdog, timeout=3)
    assert psutil.Process(sleeper.pid).status() != psutil.STATUS_STOPPED


def test_paused_refuses_what_it_cannot_pause() -> None:
    import os

    with pytest.raises(SeamError, match="refusing"), paused(os.getpid()):
        pass
    with pytest.raises(SeamError, match="cannot pause"), paused(object()):
        pass

    class ContainerServer:  # a server handle without a local process
        instance = type("Instance", (), {"name": "postgres", "backend": "container"})()
        url = "postgresql://postgres@127.0.0.1:5432/postgres"
        pid = None

    expected = r"not a process on this machine \(container backend\)"
    with pytest.raises(SeamError, match=expected) as info, paused(ContainerServer()):
        pass
    assert "podman pause" in str(info.value)


def test_stop_thread_stops_a_cooperative_worker_and_names_a_stuck_one() -> None:
    stop = threading.Event()
    worker = threading.Thread(target=lambda: stop.wait(5), name="good-worker")
    worker.start()
    stop_thread(worker, stop, timeout=2)
    assert not worker.is_alive()

    never = threading.Event()

    def stubborn_worker() -> None:
        never.wait(5)  # ignores its stop event

    stuck = threading.Thread(target=stubborn_worker, name="stuck-worker")
    stuck.start()
    try:
        with pytest.raises(WaitTimeout, match=r"thread 'stuck-worker' did not stop .* in stubborn_worker"):
            stop_thread(stuck, threading.Event(), timeout=0.1)
    finally:
        never.set()
        stuck.join(2)
