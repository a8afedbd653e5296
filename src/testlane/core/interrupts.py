"""Interruptions (Ctrl-C, SIGINT, SIGTERM): what they interrupted, one delivery each, and one line saying so.

* **Phases**: long steps say what they are doing (``with phase("building the migrated template")``);
  a signal records the innermost phase when it arrives, so the line printed after the clean-up names
  what was interrupted even though the phase has unwound by then.
* **One delivery**: a SIGINT sent to a whole process group reaches ``testlane run`` *and* its pytest,
  and ``testlane run`` forwards what it gets (it cannot tell a group signal from one sent to it
  alone). :func:`install_interrupt_handler` makes the process ignore a second SIGINT/SIGTERM that
  arrives within :data:`DUPLICATE_WINDOW` of the first (the same interruption delivered twice: a second
  ``KeyboardInterrupt`` would land inside the handling of the first and print both tracebacks); a
  later one is a new request and acts at once.
* **One line**: :func:`interrupted_line`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType

__all__ = [
    "DUPLICATE_WINDOW",
    "Interruption",
    "current_phase",
    "install_interrupt_handler",
    "interrupted_line",
    "last_interruption",
    "last_signal",
    "phase",
]

DUPLICATE_WINDOW = 1.0  # seconds: a forwarded copy arrives within milliseconds; a person's second Ctrl-C later

_phases: list[str] = []  # process-wide, not per thread: the signal lands in the main thread whoever is working


@dataclass(frozen=True)
class Interruption:
    signum: int
    phase: str
    at: float  # time.monotonic()

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


_last: list[Interruption] = []


@contextlib.contextmanager
def phase(what: str) -> Iterator[None]:
    """Mark a step an interruption may land in (``what`` reads after "while": "starting the services")."""
    _phases.append(what)
    try:
        yield
    finally:
        _phases.pop()


def current_phase(default: str) -> str:
    return _phases[-1] if _phases else default


def record(signum: int, default_phase: str) -> Interruption | None:
    """Note an interruption; None when it is a copy of the last one (within the window)."""
    now = time.monotonic()
    if _last and now - _last[-1].at < DUPLICATE_WINDOW:
        return None
    interruption = Interruption(signum, current_phase(default_phase), now)
    _last[:] = [interruption]
    return interruption


def last_interruption() -> Interruption | None:
    return _last[-1] if _last else None


def last_signal() -> int | None:
    """The signal of this process's last interruption (``None``: not interrupted)."""
    latest = last_interruption()
    return latest.signum if latest is not None else None


CLEANED = "the run's servers are stopped and its data and databases removed"


def interrupted_line(interruption: Interruption, cleaned: str = CLEANED) -> str:
    """The one line printed once everything is cleaned up (``cleaned``: what that was)."""
    return f"testlane: interrupted ({interruption.name}) while {interruption.phase}; cleaned up: {cleaned}"


def install_interrupt_handler(
    default_phase: str, on_sigterm: Callable[[], None] | None = None
) -> Callable[[], None] | None:
    """SIGINT raises ``KeyboardInterrupt`` (and SIGTERM calls ``on_sigterm``, when given) once per
    interruption: copies within the window are ignored. Only in the main thread, and only where the
    signal has its default disposition (someone else's handler is left alone). Returns a function
    that restores the previous handlers, or None when nothing was installed."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous: dict[int, object] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        __tracebackhide__ = True  # pytest names the line that was interrupted, not this one
        first = last_interruption() is None
        if record(signum, default_phase) is None:
            return  # the same interruption, delivered again
        if signum == signal.SIGTERM and on_sigterm is not None:
            if not first:  # asked again: end at once
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGTERM)
            on_sigterm()
            return
        raise KeyboardInterrupt

    defaults = {signal.SIGINT: (signal.default_int_handler, signal.SIG_DFL), signal.SIGTERM: (signal.SIG_DFL,)}
    for signum, untouched in defaults.items():
        if signum == signal.SIGTERM and on_sigterm is None:
            continue
        current = signal.getsignal(signum)
        if current in untouched:
            previous[signum] = current
            signal.signal(signum, handler)
    if not previous:
        return None

    def restore() -> None:
        for signum, old in previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signum, old)  # type: ignore[arg-type]

    return restore
