"""pytest as ``testlane run`` starts it: ``python <this file> <pytest args>``.

The same as ``python -m pytest`` (the current directory first on ``sys.path``, pytest's exit code),
except for interruptions. Before pytest is imported it installs the one-delivery SIGINT handler
(:mod:`testlane.core.interrupts`): a SIGINT sent to the process group reaches pytest, and
``testlane run`` forwards the copy it got, so without it the copy would land inside pytest's handling
of the first and print two tracebacks. An interrupt before pytest's session has begun (pytest still
importing itself and its plugins) ends it quietly with pytest's "interrupted" code, 2: ``testlane
run`` prints the one line about it once it has cleaned up.

Run as a file, not ``-m``, and without importing the ``testlane`` package: pytest rewrites the asserts
of its plugins' packages, and warns ("Module already imported so cannot be rewritten: testlane") when
one was imported before it. ``interrupts.py`` imports only the standard library, so it is loaded here
by path under its own name, ``testlane.core.interrupts``, without its packages: the plugin's later
``from testlane.core.interrupts import ...`` finds this module in ``sys.modules`` (one record of the
process's interruptions, not two copies).

**Started while the services start.** ``testlane run`` starts this process first and its services (and a
migrated template to build) beside it, so that pytest imports itself and its plugins on the other core
meanwhile. What only the started services can tell (their URLs, the services file, the variables mapped for
the application) arrives as one JSON object on the pipe named by ``TESTLANE_START_FD``; pytest waits for it
at the start of ``pytest_load_initial_conftests``, before any conftest — and so the project's settings and
any hook that reads them — is imported. A pipe closed without it means the start failed or was interrupted:
this process ends quietly, and ``testlane run`` reports why.
"""

import importlib.util
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

INTERRUPTED = 2  # pytest.ExitCode.INTERRUPTED, without importing pytest for it
START_FD_ENV = "TESTLANE_START_FD"  # testlane.core.environment.START_FD (not imported here: see above)


class StartAbandoned(BaseException):
    """``testlane run`` closed the start pipe without the services' variables: nothing is to run."""


def wait_for_services(fd: int) -> None:
    """Read the services' variables from ``fd`` (until the writer closes it) and set them in ``os.environ``.

    Raises :class:`StartAbandoned` when the pipe closed empty. Blocks until ``testlane run`` has started
    the services; a SIGINT meanwhile raises ``KeyboardInterrupt`` (the handler installed in :func:`main`)."""
    chunks = []
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)  # not inherited further: xdist's workers and the tests' processes have no use for it
    if not chunks:
        raise StartAbandoned
    variables: dict[str, str] = json.loads(b"".join(chunks))
    os.environ.update(variables)


def start_waiter(fd: int) -> Any:
    """A plugin object for ``pytest.main(plugins=...)`` whose hook waits for the services (see the module
    docstring). A ``tryfirst`` wrapper: it runs before every plain ``pytest_load_initial_conftests`` (which may
    read the application's settings, as pytest-django's does) and before pytest loads the conftests; another
    plugin's ``tryfirst`` wrapper, registered after this object, runs its part before ``yield`` earlier."""
    import pytest

    class StartWaiter:
        @pytest.hookimpl(wrapper=True, tryfirst=True)
        def pytest_load_initial_conftests(self) -> Any:
            wait_for_services(fd)
            return (yield)

    return StartWaiter()


def main() -> int:
    sys.path[0] = os.getcwd()  # as `python -m pytest`: the current directory, not this file's
    spec = importlib.util.spec_from_file_location(
        "testlane.core.interrupts", Path(__file__).resolve().parents[1] / "core" / "interrupts.py"
    )
    assert spec is not None and spec.loader is not None
    interrupts = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = interrupts  # dataclasses look their module up
    spec.loader.exec_module(interrupts)
    interrupts.install_interrupt_handler("pytest was starting")
    start_fd = os.environ.pop(START_FD_ENV, None)
    try:
        # testlane run starts this process with SIGINT blocked (see cli/run.py): one sent meanwhile arrives here
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        import pytest

        plugins = [] if start_fd is None else [start_waiter(int(start_fd))]
        code = int(pytest.main(plugins=plugins))
    except (KeyboardInterrupt, StartAbandoned):
        return INTERRUPTED
    _join_threads_quietly()
    return code


def _join_threads_quietly() -> None:
    """Wait for the threads a test left running, as Python does at exit, but end quietly when interrupted.

    Python joins every non-daemon thread before a process ends (``threading._shutdown``), and a Ctrl-C in
    that wait prints a traceback of it. Joined here first, the interrupt ends the wait: the exit handlers
    run (coverage's data, for one) and the process exits at once, the leftover threads with it.
    """
    import atexit
    import threading

    try:
        for thread in threading.enumerate():
            if thread is not threading.main_thread() and not thread.daemon:
                thread.join()
    except KeyboardInterrupt:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())
