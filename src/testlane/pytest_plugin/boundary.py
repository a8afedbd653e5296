"""The harness's error boundary: how testlane's own work around a test fails or warns that test.

* :func:`fail_test` fails the current test with a testlane error's message alone (no traceback);
* :func:`warn_at_test` warns at the test's own definition;
* :func:`around_test` runs a fixture's context manager (an isolation, a connection) around the test:
  entering and leaving it is testlane's own work, so a driver error there is mapped through the table
  of :mod:`testlane.services.driver_errors` and fails the test with one message; the test itself runs
  outside the boundary, so its own SQL errors stay the driver's.

Cheap to import (pytest and testlane's core only): the plugin's entry module imports it.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Generator, Iterator
from typing import NoReturn, TypeVar

import pytest

from testlane.core.errors import TestlaneError

__all__ = ["around_test", "fail_test", "own_work", "warn_at_test"]

T = TypeVar("T")


def fail_test(error: TestlaneError | str, prefix: str = "") -> NoReturn:
    """Fail the current test with ``prefix`` + ``error``'s message alone: no traceback (a user's mistake,
    not a bug), and no chained "During handling of the above exception" when called in an ``except`` block
    (``pytest.fail`` there would print the caught error first, then the same text again).

    A :class:`TestlaneError` stays reachable as the failure's ``__context__`` (suppressed, so pytest does
    not print it): the reports read its root cause (``error.cause``, ``error.origin``) instead of guessing
    from the text.
    """
    __tracebackhide__ = True
    failed = pytest.fail.Exception(f"{prefix}{error}", pytrace=False)
    if isinstance(error, BaseException):
        failed.__context__ = error
    failed.__suppress_context__ = True  # what ``raise ... from None`` does: the context is never printed
    raise failed


def warn_at_test(item: pytest.Item, message: str) -> None:
    """A ``UserWarning`` about ``item``, located at the test's own definition: from a fixture or a hook,
    ``warnings.warn`` points at pytest's or testlane's code (``_pytest/fixtures.py:1074``), which tells the
    user nothing about which of their tests to look at."""
    _, lineno, _ = item.reportinfo()
    warnings.warn_explicit(message, UserWarning, str(item.path), (lineno or 0) + 1)


@contextlib.contextmanager
def own_work(doing: str) -> Iterator[None]:
    """Run testlane's own work for a test: a driver error becomes testlane's (``doing`` says what was being
    done), and a testlane error fails the test with its message alone."""
    __tracebackhide__ = True
    from testlane.services.driver_errors import driver_errors

    try:
        with driver_errors(doing):
            yield
    except TestlaneError as exc:
        fail_test(exc)


def around_test(
    enter: Callable[[], contextlib.AbstractContextManager[T]], *, setup: str, teardown: Callable[[T], str]
) -> Generator[T, None, T]:
    """A fixture's body: make and enter a context manager (``enter()``; ``setup`` says what that does), yield
    its value to the test, leave it (``teardown(value)`` says what that does); returns the value.

    Making, entering and leaving run inside :func:`own_work`; the test (the ``yield``) runs outside it. Used
    as ``yield from around_test(...)`` in a generator fixture: pytest resumes the generator after the test
    whatever its outcome, so leaving needs no ``finally``.
    """
    __tracebackhide__ = True
    stack = contextlib.ExitStack()
    with own_work(setup):
        value = stack.enter_context(enter())
    yield value  # the test runs here: its own driver errors are its own, never translated
    with own_work(teardown(value)):
        stack.close()
    return value
