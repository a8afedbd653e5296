"""Eventually: poll until something holds, under a deadline — instead of sleeping and hoping.

``time.sleep(0.5); assert worker.done`` is slow when the system is fast and flaky when it is slow.
:func:`eventually` polls a probe (starting every 10 ms, backing off to 100 ms) and returns as soon
as it holds; :func:`eventually_passes` does the same for a block of assertions. When the deadline
passes, the :class:`~testlane.core.waiting.WaitTimeout` says what was awaited, for how long, how
many attempts were made, the last value seen and the last exception::

    eventually: timed out after 2s (37 attempts) waiting for the job to be completed
      last value: 0
      last exception: ConnectionError: Error 111 connecting to 127.0.0.1:6379

Both are built on :func:`testlane.core.waiting.wait_until`, the one wait in testlane.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from testlane.core.waiting import WaitTimeout, wait_until

__all__ = ["eventually", "eventually_passes"]

T = TypeVar("T")

_UNSET: Any = object()


@dataclass
class _Probe:
    """Counts attempts and keeps the last value and exception, for the timeout message."""

    attempts: int = 0
    last_value: Any = _UNSET
    last_error: BaseException | None = None


@dataclass(frozen=True)
class _Held:
    """Returned to ``wait_until`` when the condition holds (so a falsy value can still end the wait)."""

    value: Any


def _describe_probe(probe: Callable[..., object]) -> str:
    """A short description of a probe: its name, or the source line of a lambda."""
    name = getattr(probe, "__qualname__", None) or repr(probe)
    if "<lambda>" not in name:
        return f"{name}()"
    try:
        line = inspect.getsource(probe).strip()
    except (OSError, TypeError):
        return "a lambda"
    return " ".join(line.split())[:120]


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _poll(
    attempt: Callable[[_Probe], _Held | None],
    *,
    timeout: float,
    what: str,
    interval: float,
    retry_on: tuple[type[BaseException], ...],
) -> Any:
    __tracebackhide__ = True
    probe = _Probe()

    def check() -> _Held | None:
        probe.attempts += 1
        try:
            return attempt(probe)
        except retry_on as exc:
            probe.last_error = exc
            return None

    try:
        held: _Held = wait_until(check, timeout=timeout, what=what, interval=interval)
    except WaitTimeout:
        lines = [f"eventually: timed out after {timeout:g}s ({probe.attempts} attempts) waiting for {what}"]
        if probe.last_value is not _UNSET:
            lines.append(f"  last value: {_one_line(repr(probe.last_value))}")
        if probe.last_error is not None:
            error = f"{type(probe.last_error).__name__}: {_one_line(str(probe.last_error))}"
            lines.append(f"  last exception: {error}")
        raise WaitTimeout("\n".join(lines), probe.last_error) from probe.last_error
    return held.value


def eventually(
    probe: Callable[[], T],
    timeout: float = 10.0,
    *,
    until: Callable[[T], object] | None = None,
    what: str | None = None,
    interval: float = 0.01,
    retry_on: tuple[type[BaseException], ...] = (AssertionError,),
) -> T:
    """Call ``probe`` until its value holds; return that value.

    The value holds when ``until(value)`` is truthy, or — without ``until`` — when the value itself
    is truthy: ``eventually(lambda: r.get("done"))``, ``eventually(worker.poll_once, until=lambda n: n > 0)``.
    ``retry_on`` exceptions raised by the probe count as "not yet" (the last one is reported);
    any other exception fails at once. ``what`` names the condition in the timeout message
    (default: the probe's name or lambda source).
    """
    __tracebackhide__ = True

    def attempt(state: _Probe) -> _Held | None:
        value = probe()
        state.last_value = value
        held = until(value) if until is not None else value
        return _Held(value) if held else None

    result: T = _poll(
        attempt, timeout=timeout, what=what or _describe_probe(probe), interval=interval, retry_on=retry_on
    )
    return result


def eventually_passes(
    check: Callable[[], object],
    timeout: float = 10.0,
    *,
    what: str | None = None,
    interval: float = 0.01,
    retry_on: tuple[type[BaseException], ...] = (AssertionError,),
) -> None:
    """Call ``check`` until it returns without raising (an assertion block that eventually holds).

    ``check`` raises ``AssertionError`` (or another ``retry_on`` exception) while the condition does
    not hold; its return value is ignored. The timeout message carries the last assertion's text.
    """
    __tracebackhide__ = True

    def attempt(state: _Probe) -> _Held:
        check()
        return _Held(None)

    _poll(attempt, timeout=timeout, what=what or _describe_probe(check), interval=interval, retry_on=retry_on)
