"""Repeat until confident: ``@seam(repeat=N)`` runs a race test's body N times.

A race that goes wrong one time in twenty passes most runs. Repeating the body catches rare
interleavings in one run, and a failure says which iteration it was::

    AssertionError: expected exactly 1 of 2 callers to win ...
    seam: iteration 7 of 20 failed (iterations 1-6 passed)

Two ways to repeat, with different fixture semantics:

* ``@seam(repeat=N)`` (default) loops inside **one** test: fixtures are set up once and shared by
  every iteration, the run stops at the first failing iteration, and it costs nothing per
  iteration beyond the body. Each iteration must make its own state — a key of its own
  (``f"job-{seam_iteration.number}"``), or rows it creates and removes itself — because the
  database, the Redis database and every other fixture are the same object in every iteration.
* ``@seam(repeat=N, fresh=True)`` makes **N tests** (ids ``[iteration-3-of-N]``): every iteration
  gets fresh function-scoped fixtures (its own database), at the cost of fixture setup per
  iteration; every iteration runs even after one fails.

Either way a test may ask for the ``seam_iteration`` fixture (a :class:`SeamIteration`:
``.number``, 1-based, and ``.of``). Both forms mark the test ``@pytest.mark.seam`` (select seam tests
with ``-m seam``). A repeated test runs N times its body's time under one per-test timeout: mark
long ones ``@pytest.mark.timeout(...)``. Works on ``async def`` tests too.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import pytest

__all__ = ["ITERATION_FIXTURE", "SeamIteration", "seam"]

F = TypeVar("F", bound=Callable[..., object])

ITERATION_FIXTURE = "seam_iteration"


class SeamDecorator(Protocol):
    """What ``@seam(...)`` returns: a decorator that gives back the test function's own type."""

    def __call__(self, fn: F, /) -> F: ...


@dataclass(frozen=True)
class SeamIteration:
    """Which iteration of a repeated seam test is running: ``number`` (1-based) ``of`` N."""

    number: int = 1
    of: int = 1

    def __str__(self) -> str:
        return f"{self.number}/{self.of}"


def _not_a_failure() -> tuple[type[BaseException], ...]:
    return (pytest.skip.Exception, pytest.xfail.Exception, KeyboardInterrupt, SystemExit, GeneratorExit)


def _annotate(exc: BaseException, number: int, of: int) -> None:
    """Say on the exception which iteration failed (Python shows notes under the traceback)."""
    if isinstance(exc, _not_a_failure()):
        return
    if number == 1:
        before = "the first one"
    elif number == 2:
        before = "iteration 1 passed"
    else:
        before = f"iterations 1-{number - 1} passed"
    exc.add_note(f"seam: iteration {number} of {of} failed ({before})")


def seam(*, repeat: int = 1, fresh: bool = False) -> SeamDecorator:
    """Mark a test as a seam test and run its body ``repeat`` times (see the module docstring).

    ``fresh=False`` loops inside one test (shared fixtures, stops at the first failure, reports the
    failing iteration); ``fresh=True`` makes one test per iteration (fresh fixtures each).
    """
    if repeat < 1:
        raise ValueError(f"@seam(repeat={repeat}): repeat must be at least 1")
    mark = pytest.mark.seam(repeat=repeat, fresh=fresh)

    def decorate(fn: F) -> F:
        if fresh or repeat == 1:
            marked: F = mark(fn)
            return marked  # the plugin parametrizes fresh tests (one item per iteration)
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def arepeated(*args: Any, **kwargs: Any) -> Any:
                __tracebackhide__ = True
                for number in range(1, repeat + 1):
                    if ITERATION_FIXTURE in kwargs:
                        kwargs[ITERATION_FIXTURE] = SeamIteration(number, repeat)
                    try:
                        await fn(*args, **kwargs)
                    except BaseException as exc:
                        _annotate(exc, number, repeat)
                        raise

            wrapped: Any = arepeated
        else:

            @functools.wraps(fn)
            def repeated(*args: Any, **kwargs: Any) -> Any:
                __tracebackhide__ = True
                for number in range(1, repeat + 1):
                    if ITERATION_FIXTURE in kwargs:
                        kwargs[ITERATION_FIXTURE] = SeamIteration(number, repeat)
                    try:
                        fn(*args, **kwargs)
                    except BaseException as exc:
                        _annotate(exc, number, repeat)
                        raise

            wrapped = repeated
        result: F = mark(wrapped)
        return result

    return decorate
