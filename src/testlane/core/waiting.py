"""The one place testlane waits for something: ``wait_until`` on a monotonic deadline.

Every readiness check, every "eventually" and every shutdown wait goes through
here, so every wait has a deadline and every timeout message says what was
awaited, for how long, and what the last attempt saw.

``time.monotonic`` and ``time.sleep`` are bound at import time (as pytest's
``timing.py`` does), so tests that mock or freeze time cannot break testlane.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["Deadline", "WaitTimeout", "monotonic", "sleep", "wait_until"]

monotonic = time.monotonic
sleep = time.sleep

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    """Raised by :func:`wait_until` when the deadline passes.

    ``last_error`` is the exception the last attempt raised, if any; ``reason`` what ``abort`` returned
    when it ended the wait (None for a deadline).
    """

    def __init__(self, message: str, last_error: BaseException | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.last_error = last_error
        self.reason = reason


@dataclass
class Deadline:
    """A point on the monotonic clock; ``remaining`` never goes below zero."""

    at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(monotonic() + seconds)

    @property
    def remaining(self) -> float:
        return max(0.0, self.at - monotonic())

    @property
    def expired(self) -> bool:
        return monotonic() >= self.at


def wait_until(
    check: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.01,
    max_interval: float = 0.1,
    transient: tuple[type[BaseException], ...] = (),
    abort: Callable[[], str | None] | None = None,
) -> T:
    """Call ``check`` until it returns something other than ``None``/``False``; return that.

    ``transient`` exceptions raised by ``check`` count as "not yet" (the last one is
    kept for the timeout message); any other exception propagates at once.
    ``abort`` is called between attempts; a non-empty string it returns ends the wait
    with a ``WaitTimeout`` carrying that reason (used to stop waiting for a server
    whose process has already exited). The interval starts at ``interval`` and
    doubles up to ``max_interval``.
    """
    __tracebackhide__ = True
    deadline = Deadline.after(timeout)
    last_error: BaseException | None = None
    delay = interval
    while True:
        try:
            result = check()
        except transient as exc:
            last_error = exc
        else:
            if result is not None and result is not False:
                return result
        if abort is not None:
            reason = abort()
            if reason:
                raise WaitTimeout(f"stopped waiting for {what}: {reason}", last_error, reason)
        if deadline.expired:
            seen = f"; last attempt: {last_error}" if last_error is not None else ""
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what}{seen}", last_error)
        sleep(min(delay, deadline.remaining))
        delay = min(delay * 2, max_interval)
