"""testlane's timeouts without a timer set and cancelled around every test: one watchdog thread per session.

pytest-timeout's signal method installs a ``SIGALRM`` handler and arms ``setitimer`` before each test, then
disarms both after it: four system calls, two of them through :func:`signal.signal`'s Python wrapper, and two
closures, for every test — most of what testlane's default timeout cost a unit test (docs/benchmarks.md, "The
plugin alone"). pytest-timeout lets a plugin replace that mechanism (its ``pytest_timeout_set_timer`` and
``pytest_timeout_cancel_timer`` hooks); this one does, for the signal method on pytest's main thread, when
testlane's timeouts are in force (no ``--timeout``, ``timeout`` or ``timeout_method`` of the project's own):

* setting the timer records the running test and its deadline (no system call); cancelling forgets it;
* a thread (the interpreter's own, not a ``threading.Thread``: started without waiting for it) sleeps until the
  running test's deadline (woken early only when a test with an earlier deadline starts) and then, if that test
  still runs, sends ``SIGALRM`` to the main thread (:func:`signal.pthread_kill`: a blocking system call there is
  interrupted, as by the timer);
* the handler, installed once (again if a test replaced it), does what pytest-timeout's ``timeout_sigalrm`` does
  (:func:`timeout_sigalrm`): the same stacks of every other thread but the watchdog, the same ``Timeout (>5.0s)
  from pytest-timeout.`` failure, the same debugger detection.

pytest-timeout still decides which tests get which timeout (markers, ``func_only``) and still cancels before
``--pdb``'s post-mortem; its thread method, and tests run outside the main thread, stay its own. A ``SIGALRM``
that the watchdog did not send (a test's own ``alarm()``) is ignored by the handler instead of being taken for a
timeout; pytest-timeout also disarmed such an alarm after the test that set it (the timer is the process's one).
"""

from __future__ import annotations

import _thread
import math
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

__all__ = ["TimeoutWatchdog", "timeout_sigalrm"]

# signal.getsignal without its Python wrapper, which tries (and fails: an exception) to make a method handler an
# enum member, 4.5 µs here: asked before every test. The C function takes 0.07 µs.
_getsignal: Callable[[int], Any] = getattr(signal, "_signal", signal).getsignal


REFIRE_S = 0.05  # seconds: a timeout that fell between two phases of the test is raised again after this


_RUNNER = str(Path("_pytest", "runner.py"))  # where pytest runs a phase and reports it


def _reporting(frame: Any) -> bool:
    """Whether the main thread, interrupted in ``frame``, is in pytest's handling of a phase's report (its
    ``call_and_report`` after the phase's code returned) rather than in the phase (``CallInfo.from_call``)."""
    while frame is not None:
        code = frame.f_code
        if code.co_filename.endswith(_RUNNER):  # pytest's own: a test's function may have either name
            if code.co_name == "from_call":
                return False
            if code.co_name == "call_and_report":
                return True
        frame = frame.f_back
    return False


# The idents of the watchdogs' threads running (one per session; a pytester session inside a test has its own).
_watchdog_threads: set[int] = set()


def timeout_sigalrm(item: pytest.Item, settings: Any) -> None:
    """pytest-timeout's ``timeout_sigalrm`` (2.x), but for the watchdog's own thread, left out of the stacks (it is
    the same in every timeout, and alone it would make a single-threaded test's timeout print the stacks' frame):
    unless a debugger runs, the stack of every other thread, then the test fails with pytest-timeout's message."""
    import pytest_timeout  # type: ignore[import-untyped]

    if not settings.disable_debugger_detection and pytest_timeout.is_debugging():
        return
    __tracebackhide__ = True
    skip = {threading.get_ident(), *_watchdog_threads}
    stacks = [(ident, frame) for ident, frame in sys._current_frames().items() if ident not in skip]
    terminal = item.config.get_terminal_writer()
    if stacks:
        names = {t.ident: t.name for t in threading.enumerate()}
        terminal.sep("+", title="Timeout")
        for ident, frame in stacks:
            terminal.sep("~", title=f"Stack of {names.get(ident, '<unknown>')} ({ident})")
            terminal.write("".join(traceback.format_stack(frame)))
        terminal.sep("+", title="Timeout")
    pytest.fail(pytest_timeout.PYTEST_FAILURE_MESSAGE % settings.timeout)


class TimeoutWatchdog:
    """The session's watchdog (a pytest plugin: pytest-timeout's two hooks)."""

    def __init__(self, timed_out: Callable[[pytest.Item, Any], Any] = timeout_sigalrm) -> None:
        self.timed_out = timed_out  # called in the main thread when the running test's deadline has passed
        main = threading.main_thread().ident
        assert main is not None
        self.main = main
        self.handler = self._on_alarm  # one bound method, so that the installed handler is recognised
        # (item, pytest-timeout's settings, deadline on the monotonic clock): the test being timed, or None
        self.current: tuple[pytest.Item, Any, float] | None = None
        self.fired: tuple[pytest.Item, Any, float] | None = None  # what the last SIGALRM sent is for
        self.wake_at = math.inf  # when the thread wakes next by itself (inf: not before it is woken)
        self.wake = threading.Event()
        self.stopped = False
        self.started = False
        self.ended = threading.Event()  # set by the thread as it returns
        self.previous_handler: Any = None

    # ----------------------------------------------------------------- pytest-timeout's hooks (main thread)

    @pytest.hookimpl(tryfirst=True)
    def pytest_timeout_set_timer(self, item: pytest.Item, settings: Any) -> bool | None:
        if settings.method != "signal" or threading.get_ident() != self.main:
            return None  # pytest-timeout's own way
        if _getsignal(signal.SIGALRM) is not self.handler:
            self._install()
        deadline = time.monotonic() + settings.timeout
        self.current = (item, settings, deadline)
        if deadline < self.wake_at:  # the thread sleeps past this deadline (or waits to be woken): wake it
            self.wake.set()
        return True

    @pytest.hookimpl(tryfirst=True)
    def pytest_timeout_cancel_timer(self, item: pytest.Item) -> bool | None:
        current = self.current
        if current is None or current[0] is not item:
            return None  # not ours: pytest-timeout's own timer, if any
        self.current = None
        return True

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self.stop()

    # ----------------------------------------------------------------- the handler and the thread

    def _install(self) -> None:
        handler = signal.signal(signal.SIGALRM, self.handler)
        if not self.started:  # the first test: what the session had before, restored at its end
            self.previous_handler = handler
            self.started = True
            # A thread of the interpreter's, not a threading.Thread: Thread.start() waits until the new thread has
            # run (a switch to it and back: 0.1 ms, and 4-8 ms at times on a loaded machine, once per run); this
            # one starts when it gets the GIL. It is in no list of threading's (the leak check never sees it) and
            # leaves its ident in _watchdog_threads (a timeout's stacks leave it out).
            _thread.start_new_thread(self._run, ())

    def _on_alarm(self, signum: int, frame: Any) -> None:
        __tracebackhide__ = True
        fired, self.fired = self.fired, None
        if fired is None or fired is not self.current:
            return  # not the watchdog's, or for a test that has ended meanwhile
        item, settings, _ = fired
        if _reporting(frame):
            # Between two phases, in pytest's reporting of the last one (pytest-xdist sending it to the controller,
            # a reporter writing it): a failure raised there is pytest's INTERNALERROR, which ends the whole run.
            # Asked again in REFIRE_S: the test fails in the phase then running; one whose phases have all ended
            # by then passes (its own code kept to its time).
            self.current = (item, settings, time.monotonic() + REFIRE_S)
            self.wake.set()
            return
        self.timed_out(item, settings)

    def _run(self) -> None:
        ident = threading.get_ident()
        _watchdog_threads.add(ident)
        try:
            self._watch()
        finally:
            _watchdog_threads.discard(ident)
            self.ended.set()

    def _watch(self) -> None:
        while not self.stopped:
            self.wake.clear()  # cleared before the state is read: a wake-up after the read is not lost
            current = self.current
            if current is None:
                self.wake_at = math.inf
                if self.current is None and not self.stopped:
                    self.wake.wait()
                continue
            remaining = current[2] - time.monotonic()
            if remaining > 0:
                self.wake_at = current[2]
                self.wake.wait(remaining)
                self.wake_at = math.inf
                continue
            if self.current is current:
                self.fired = current
                signal.pthread_kill(self.main, signal.SIGALRM)
            self.wake_at = math.inf
            while self.current is current and not self.stopped:  # once per test: until the next one starts
                self.wake.wait()
                self.wake.clear()

    def stop(self) -> None:
        """End the thread and put the session's ``SIGALRM`` handler back (main thread)."""
        self.stopped = True
        self.current = None
        self.wake.set()
        if self.started:
            self.started = False
            self.ended.wait(timeout=5)
            if _getsignal(signal.SIGALRM) is self.handler:
                signal.signal(signal.SIGALRM, self.previous_handler or signal.SIG_DFL)
