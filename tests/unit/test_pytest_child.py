"""pytest_child's side of the start pipe (`testlane run` starts pytest beside the services)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from testlane.cli import pytest_child
from testlane.core import environment


def test_the_pipe_variable_is_the_declared_one() -> None:
    # pytest_child cannot import testlane's package (see its docstring): the name is spelled there again
    assert pytest_child.START_FD_ENV == environment.START_FD


def test_the_services_variables_arrive_whole_and_the_pipe_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TL_CHILD_PROBE", "before")  # restored (removed) afterwards
    read_end, write_end = os.pipe()
    big = "x" * 200_000  # more than a pipe holds: read until the writer closes, not once

    def send() -> None:  # as testlane run does, from its own process
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(json.dumps({"TL_CHILD_PROBE": big}).encode())

    writer = threading.Thread(target=send)
    writer.start()
    pytest_child.wait_for_services(read_end)
    writer.join()
    assert os.environ["TL_CHILD_PROBE"] == big
    with pytest.raises(OSError):
        os.fstat(read_end)  # closed: xdist's workers and the tests' processes do not inherit it


def test_a_pipe_closed_empty_means_the_start_was_abandoned() -> None:
    read_end, write_end = os.pipe()
    os.close(write_end)
    with pytest.raises(pytest_child.StartAbandoned):
        pytest_child.wait_for_services(read_end)


def _interrupt_before_exec() -> None:
    """In the child before it runs pytest_child: SIGINT blocked, as testlane run starts it, and one pending."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    os.kill(os.getpid(), signal.SIGINT)


def test_a_ctrl_c_in_its_first_milliseconds_ends_it_quietly(tmp_path: Path) -> None:
    # The SIGINT waited, blocked, for the handler; delivered at the unblocking, it printed a traceback from there.
    proc = subprocess.run(
        [sys.executable, pytest_child.__file__, "--version"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        preexec_fn=_interrupt_before_exec,
        timeout=60,
        check=False,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (pytest_child.INTERRUPTED, "", "")
