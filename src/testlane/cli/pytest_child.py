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
"""

import importlib.util
import os
import sys
from pathlib import Path

INTERRUPTED = 2  # pytest.ExitCode.INTERRUPTED, without importing pytest for it


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
    try:
        import pytest

        code = int(pytest.main())
    except KeyboardInterrupt:
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
