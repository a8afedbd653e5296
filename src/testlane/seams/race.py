"""Races: ``n`` callers released together, each with its own connection, every outcome kept.

A race test asks "what happens when these calls really overlap?" — two workers claiming one row,
two inserts of one key, two consumers reading one stream. :func:`race` runs ``fn`` in ``n``
threads; each thread first runs its own ``setup(i)`` (typically: open its own connection;
``connect=pg_database`` does exactly that), then
all of them wait at a :class:`threading.Barrier` and are released at once, so connecting does not
stagger the start. :func:`async_race` does the same with tasks and an :class:`asyncio.Barrier`.

Every caller's return value or exception is kept in a :class:`RaceResult`; assertions such as
:func:`assert_exactly_one` fail with a message listing what each caller got::

    expected exactly 1 of 2 callers to win (returned a truthy value), but 2 did (released within 0.2 ms):
      caller 0: won   returned Job(id='job-1')  in 0.012s
      caller 1: won   returned Job(id='job-1')  in 0.013s

Resources made by ``setup`` are closed in their caller's thread as soon as ``fn`` returns
(``close()``, else the context manager's exit): a psycopg connection rolls back what ``fn`` left
open, so its locks go and the other callers can finish. Everything runs under one deadline
(``timeout``): a caller still running then is cancelled where that is possible (psycopg's
``cancel_safe``) and the race raises :class:`~testlane.core.waiting.WaitTimeout` saying where each
unfinished caller is stuck. Python threads cannot be killed; racer threads are daemons, so a caller
stuck for good cannot keep the interpreter alive.

A barrier releases callers together, but the operating system still decides who runs first. To
make an interleaving certain rather than likely, make the callers meet *inside the server*: hold
the lock they need in a :func:`~testlane.seams.gate.lock_gate` and open it once all of them wait
(``during=lambda: gate.open(when_waiting=n)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from testlane.core.errors import SeamError
from testlane.core.waiting import Deadline, WaitTimeout, monotonic
from testlane.seams._where import task_location, thread_location

if TYPE_CHECKING:
    import psycopg
    from psycopg.rows import TupleRow

    from testlane.seams._pg import AsyncPgSource, PgSource

__all__ = [
    "RaceOutcome",
    "RaceResult",
    "assert_exactly_one",
    "assert_no_errors",
    "assert_winners",
    "async_race",
    "race",
]

T = TypeVar("T")
R = TypeVar("R")

CANCEL_GRACE = 2.0  # seconds a cancelled caller gets to finish before the race gives up on it


@dataclass(frozen=True)
class RaceOutcome(Generic[T]):
    """What one caller of a race got: the ``value`` it returned or the ``error`` it raised.

    ``started`` is when it was released, in seconds after the first caller was; ``elapsed`` is how
    long its ``fn`` ran.
    """

    index: int
    value: T | None = None
    error: BaseException | None = None
    started: float = 0.0
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the caller returned (did not raise)."""
        return self.error is None

    def describe(self) -> str:
        """``returned <repr>`` or ``raised <Type>: <message>``, shortened to one line."""
        if self.error is not None:
            return f"raised {type(self.error).__name__}: {_one_line(str(self.error))}"
        return f"returned {_one_line(repr(self.value))}"


@dataclass(frozen=True)
class RaceResult(Generic[T]):
    """Every caller's :class:`RaceOutcome`, in caller order."""

    outcomes: tuple[RaceOutcome[T], ...]

    @property
    def results(self) -> list[T]:
        """The values of the callers that returned, in caller order."""
        return [o.value for o in self.outcomes if o.error is None]  # type: ignore[misc]

    @property
    def errors(self) -> list[BaseException]:
        """The exceptions of the callers that raised, in caller order."""
        return [o.error for o in self.outcomes if o.error is not None]

    @property
    def spread(self) -> float:
        """Seconds between the first and the last caller's release: how together they started."""
        starts = [o.started for o in self.outcomes]
        return max(starts) - min(starts) if starts else 0.0

    def winners(self, predicate: Callable[[T], object] | None = None) -> list[RaceOutcome[T]]:
        """Callers that returned a value satisfying ``predicate`` (default: a truthy value)."""
        return [o for o in self.outcomes if o.error is None and _wins(o.value, predicate)]

    def describe(self, predicate: Callable[[T], object] | None = None) -> str:
        """One line per caller: won/lost, what it returned or raised, how long it took."""
        lines = []
        for o in self.outcomes:
            mark = "won " if o.error is None and _wins(o.value, predicate) else "lost"
            lines.append(f"  caller {o.index}: {mark}  {o.describe()}  in {o.elapsed:.3f}s")
        return "\n".join(lines)


def _wins(value: Any, predicate: Callable[[Any], object] | None) -> bool:
    return bool(predicate(value) if predicate is not None else value)


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _predicate_text(predicate: Callable[..., object] | None, what: str | None) -> str:
    if what:
        return what
    if predicate is None:
        return "returned a truthy value"
    name = getattr(predicate, "__name__", "")
    return f"satisfied {name}" if name and name != "<lambda>" else "satisfied the predicate"


# --------------------------------------------------------------------------- assertions


def assert_winners(
    result: RaceResult[T],
    count: int,
    predicate: Callable[[T], object] | None = None,
    *,
    what: str | None = None,
) -> list[RaceOutcome[T]]:
    """Assert that exactly ``count`` callers won; return them.

    A caller wins when it returned and ``predicate(value)`` is truthy (default: the value itself
    is truthy — a row, ``True``, a non-zero count). ``what`` names the winning condition in the
    message, e.g. ``what="got the row"``. A caller that raised never wins, and its exception is
    listed.
    """
    __tracebackhide__ = True
    won = result.winners(predicate)
    if len(won) != count:
        raised = len(result.errors)
        extra = f", {raised} raised" if raised else ""
        raise AssertionError(
            f"expected exactly {count} of {len(result.outcomes)} callers to win "
            f"({_predicate_text(predicate, what)}), but {len(won)} did{extra} "
            f"(released within {result.spread * 1000:.1f} ms):\n{result.describe(predicate)}"
        )
    return won


def assert_exactly_one(
    result: RaceResult[T],
    predicate: Callable[[T], object] | None = None,
    *,
    what: str | None = None,
) -> RaceOutcome[T]:
    """Assert that exactly one caller won (see :func:`assert_winners`); return its outcome."""
    __tracebackhide__ = True
    return assert_winners(result, 1, predicate, what=what)[0]


def assert_no_errors(result: RaceResult[T]) -> None:
    """Assert that no caller raised; the message lists every caller's outcome."""
    __tracebackhide__ = True
    if result.errors:
        raise AssertionError(
            f"expected no caller to raise, but {len(result.errors)} of {len(result.outcomes)} did:\n{result.describe()}"
        ) from result.errors[0]


# --------------------------------------------------------------------------- shared plumbing


@dataclass
class _Slot:
    """One caller's state while the race runs (written by its own thread or task only)."""

    phase: str = "in setup"  # -> "waiting at the barrier" -> "running fn" -> "finished"
    resource: Any = None
    has_resource: bool = False
    setup_error: BaseException | None = None
    released: bool = False
    started: float = 0.0
    finished: float = 0.0
    value: Any = None
    error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self.phase == "finished"

    def set_up(self, resource: Any) -> None:
        self.resource, self.has_resource = resource, True

    def setup_failed(self, exc: BaseException) -> None:
        self.setup_error, self.phase = exc, "finished"

    def released_now(self) -> None:
        """Past the barrier: ``fn`` starts now."""
        self.released, self.started, self.phase = True, monotonic(), "running fn"


SetupT = TypeVar("SetupT", bound=Callable[[int], Any])


def _callers_setup(
    what: str, n: int, setup: SetupT | None, connect: object, connector: Callable[[Any], SetupT]
) -> SetupT | None:
    """The checked arguments of ``race``/``async_race`` (``what``): the setup each caller runs, if any."""
    if n < 1:
        raise ValueError(f"{what} needs at least one caller, got n={n}")
    if connect is None:
        return setup
    if setup is not None:
        raise ValueError(f"{what} takes setup= or connect=, not both")
    return connector(connect)


def _result(slots: Sequence[_Slot], during_error: BaseException | None) -> RaceResult[Any]:
    """The race's outcomes, once every caller finished: ``during``'s error first, then a setup's."""
    if during_error is not None:
        raise during_error
    _raise_setup_error(slots)
    return _outcomes(slots)


def _outcomes(slots: Sequence[_Slot]) -> RaceResult[Any]:
    first = min((s.started for s in slots if s.released), default=0.0)
    return RaceResult(
        tuple(
            RaceOutcome(i, s.value, s.error, max(0.0, s.started - first), max(0.0, s.finished - s.started))
            for i, s in enumerate(slots)
        )
    )


def _raise_setup_error(slots: Sequence[_Slot]) -> None:
    for i, slot in enumerate(slots):
        if slot.setup_error is not None:
            raise SeamError(
                f"the race did not start: caller {i}'s setup raised "
                f"{type(slot.setup_error).__name__}: {_one_line(str(slot.setup_error))}",
                hint="setup(i) runs in each caller before the barrier; fix it (or open the connection inside fn)",
            ) from slot.setup_error


def _timeout_error(kind: str, timeout: float, slots: Sequence[_Slot], where: Callable[[int], str]) -> WaitTimeout:
    lines = []
    for i, slot in enumerate(slots):
        if slot.done:
            outcome = RaceOutcome(i, slot.value, slot.error)
            lines.append(f"  caller {i}: finished, {outcome.describe()}")
        else:
            lines.append(f"  caller {i}: still {slot.phase} at {where(i)}")
    return WaitTimeout(
        f"{kind} did not finish within {timeout:g}s:\n" + "\n".join(lines) + "\n"
        "  (a caller blocked on a lock another caller holds until it returns? a server paused? "
        "pass timeout= to wait longer)"
    )


def _is_psycopg_connection(resource: Any) -> bool:
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(resource, psycopg.Connection | psycopg.AsyncConnection)


def _cancel(resource: Any) -> bool:
    """Interrupt the query a stuck caller's psycopg connection is running (thread-safe by design).

    True when a cancel request was sent.
    """
    if not _is_psycopg_connection(resource) or resource.closed:
        return False
    try:
        resource.cancel_safe(timeout=CANCEL_GRACE)
    except Exception:
        return False
    return True


def _close(resource: Any) -> None:
    close = getattr(resource, "close", None)
    with contextlib.suppress(Exception):
        if callable(close):
            close()
        elif hasattr(resource, "__exit__"):
            resource.__exit__(None, None, None)


async def _aclose(resource: Any) -> None:
    closer = getattr(resource, "aclose", None) or getattr(resource, "close", None)
    with contextlib.suppress(Exception):
        if callable(closer):
            result = closer()
            if inspect.isawaitable(result):
                await result
        elif hasattr(resource, "__aexit__"):
            await resource.__aexit__(None, None, None)
        elif hasattr(resource, "__exit__"):
            resource.__exit__(None, None, None)


def _connector(source: Any) -> Callable[[int], Any]:
    from testlane.seams._pg import open_connection

    return lambda i: open_connection(source, autocommit=True)


def _async_connector(source: Any) -> Callable[[int], Awaitable[Any]]:
    from testlane.seams._pg import open_async_connection

    return lambda i: open_async_connection(source)


# --------------------------------------------------------------------------- threads


@overload
def race(
    n: int,
    fn: Callable[[int], T],
    *,
    setup: None = None,
    connect: None = None,
    during: Callable[[], object] | None = None,
    timeout: float = 30.0,
) -> RaceResult[T]: ...


@overload
def race(
    n: int,
    fn: Callable[[R], T],
    *,
    setup: Callable[[int], R],
    connect: None = None,
    during: Callable[[], object] | None = None,
    timeout: float = 30.0,
) -> RaceResult[T]: ...


@overload
def race(
    n: int,
    fn: Callable[[psycopg.Connection[TupleRow]], T],
    *,
    setup: None = None,
    connect: PgSource,
    during: Callable[[], object] | None = None,
    timeout: float = 30.0,
) -> RaceResult[T]: ...


def race(
    n: int,
    fn: Callable[[Any], Any],
    *,
    setup: Callable[[int], Any] | None = None,
    connect: Any = None,
    during: Callable[[], object] | None = None,
    timeout: float = 30.0,
) -> RaceResult[Any]:
    """Run ``n`` callers of ``fn`` truly concurrently; return every outcome.

    Without ``setup`` each caller runs ``fn(i)`` (``i`` = 0..n-1) and opens what it needs itself.
    With ``setup``, each caller first runs ``setup(i)`` in its own thread — e.g.
    ``setup=lambda i: redis_db.client()`` — and then ``fn(resource)``; the resource is closed as
    soon as ``fn`` returns. ``connect=`` is the common case of that: each caller gets its own
    autocommit psycopg connection from ``connect`` (``pg_database``, the ``postgres`` fixture, a
    URL, or a function returning a connection). ``during``, if given, runs in the calling thread
    once the callers are released (e.g. ``lambda: gate.open(when_waiting=n)``). Exceptions in
    ``fn`` are outcomes, not errors of the race; a failing ``setup`` raises
    :class:`~testlane.core.errors.SeamError`, running out of ``timeout`` raises
    :class:`~testlane.core.waiting.WaitTimeout`.
    """
    __tracebackhide__ = True
    setup = _callers_setup("race", n, setup, connect, _connector)
    deadline = Deadline.after(timeout)
    barrier = threading.Barrier(n)
    slots = [_Slot() for _ in range(n)]

    def run(i: int) -> None:
        slot = slots[i]
        try:
            if setup is not None:
                slot.set_up(setup(i))
        except BaseException as exc:
            slot.setup_failed(exc)
            barrier.abort()
            return
        slot.phase = "waiting at the barrier"
        try:
            barrier.wait(timeout=max(deadline.remaining, 0.001))
        except threading.BrokenBarrierError:
            if slot.has_resource:
                _close(slot.resource)
            slot.phase = "finished"
            return
        slot.released_now()
        try:
            slot.value = fn(slot.resource if setup is not None else i)
        except BaseException as exc:
            slot.error = exc
        finally:
            slot.finished = monotonic()
            if slot.has_resource:
                _close(slot.resource)
            slot.phase = "finished"

    threads = [threading.Thread(target=run, args=(i,), name=f"seams-race-{i}", daemon=True) for i in range(n)]
    for thread in threads:
        thread.start()
    during_error: BaseException | None = None
    if during is not None:
        try:
            during()
        except Exception as exc:
            during_error = exc
            for slot in slots:  # the callers may wait for what during() was to do: unblock them
                _cancel(slot.resource)
    for thread in threads:
        thread.join(deadline.remaining)
    if any(t.is_alive() for t in threads):
        error = _timeout_error("the race", timeout, slots, lambda i: thread_location(threads[i]))
        cancelled = [t for slot, t in zip(slots, threads, strict=True) if t.is_alive() and _cancel(slot.resource)]
        for thread in cancelled:  # let them roll back and close their connections
            thread.join(CANCEL_GRACE)
        raise error from during_error
    return _result(slots, during_error)


# --------------------------------------------------------------------------- asyncio


@overload
async def async_race(
    n: int,
    fn: Callable[[int], Awaitable[T]],
    *,
    setup: None = None,
    connect: None = None,
    during: Callable[[], object] | None = None,
    timeout: float = 30.0,
) -> RaceResult[T]: ...


@overload
async def async_race(
    n: int,
    fn: Callable[[R], Awaitable[T]],
    *,
    setup: Callable[[int], Awaitable[R]],
    connect: None = None,
    during: Callable[[], object] | None = None,
    timeout: float = 30.0,
) -> RaceResult[T]: ...


@overload
async def async_race(
    n: int,
    fn: Callable[[psycopg.AsyncConnection[TupleRow]], Awaitable[T]],
    *,
    setup: None = None,
    connect: AsyncPgSource,
    during: Callable[[], object] | None = None,
    timeout: float = 30.0,
) -> RaceResult[T]: ...


async def async_race(
    n: int,
    fn: Callable[[Any], Awaitable[Any]],
    *,
    setup: Callable[[int], Awaitable[Any]] | None = None,
    connect: Any = None,
    during: Callable[[], object] | None = None,
    timeout: float = 30.0,
) -> RaceResult[Any]:
    """The asyncio form of :func:`race`: ``n`` tasks released together by an :class:`asyncio.Barrier`.

    ``setup(i)`` is awaited in each task (e.g. ``lambda i: redis_db.async_client()``), then
    ``fn(resource)`` (or ``fn(i)`` without setup); resources are closed (``aclose``/``close``,
    awaited when needed) as soon as ``fn`` returns. ``connect=`` gives each task its own autocommit
    ``psycopg.AsyncConnection`` (from ``pg_database``, a URL, or an async function returning one).
    ``during`` may be a plain or an async callable. Tasks still running at the deadline are
    cancelled and the race raises ``WaitTimeout``.
    """
    __tracebackhide__ = True
    setup = _callers_setup("async_race", n, setup, connect, _async_connector)
    deadline = Deadline.after(timeout)
    barrier = asyncio.Barrier(n)
    slots = [_Slot() for _ in range(n)]

    async def run(i: int) -> None:
        slot = slots[i]
        try:
            if setup is not None:
                slot.set_up(await setup(i))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            slot.setup_failed(exc)
            await barrier.abort()
            return
        slot.phase = "waiting at the barrier"
        try:
            await barrier.wait()
        except asyncio.BrokenBarrierError:
            if slot.has_resource:
                await _aclose(slot.resource)
            slot.phase = "finished"
            return
        slot.released_now()
        try:
            slot.value = await fn(slot.resource if setup is not None else i)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            slot.error = exc
        finally:
            slot.finished = monotonic()
            if slot.has_resource:
                await _aclose(slot.resource)
            slot.phase = "finished"

    tasks = [asyncio.ensure_future(run(i)) for i in range(n)]
    during_error: BaseException | None = None
    if during is not None:
        try:
            outcome = during()
            if inspect.isawaitable(outcome):
                await asyncio.wait_for(outcome, deadline.remaining)
        except Exception as exc:
            during_error = exc
    _, pending = await asyncio.wait(tasks, timeout=deadline.remaining)
    if pending:
        error = _timeout_error("the race", timeout, slots, lambda i: task_location(tasks[i]))
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=CANCEL_GRACE)
        raise error from during_error
    for task in tasks:
        task.result()  # surfaces a bug in run() itself; fn's exceptions are in the slots
    return _result(slots, during_error)
