"""The ``testlane`` command interrupted while it is still importing itself (before its own handlers exist)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("how", ["console script", "python -m testlane"])
def test_an_interrupt_while_the_command_imports_itself_ends_with_one_line_and_130(tmp_path: Path, how: str) -> None:
    # A real SIGINT in the import window: a `click` package first on the path that interrupts its own process
    # when imported (testlane.cli.main imports click before anything is started). Before the launcher, the
    # import's traceback was printed (a Ctrl-C 0.1-0.3 s after typing the command).
    (tmp_path / "click").mkdir()
    (tmp_path / "click" / "__init__.py").write_text(
        "import os, signal, time\nos.kill(os.getpid(), signal.SIGINT)\ntime.sleep(5)\n"
    )
    script = Path(sys.executable).with_name("testlane")
    command = [str(script)] if how == "console script" else [sys.executable, "-m", "testlane"]
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run([*command, "run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 130, result.stderr
    assert result.stderr == "testlane: interrupted (SIGINT) while starting; nothing was started\n"
    assert result.stdout == ""


def test_an_interrupt_inside_a_class_definition_while_importing_is_said_the_same_way(tmp_path: Path) -> None:
    # Seen by a fresh user (1 in 20 Ctrl-Cs 1.2 s in, loaded machine): the SIGINT landed while a dataclass field
    # was set up, Python wrapped it in "RuntimeError: Error calling __set_name__", and the traceback was printed.
    (tmp_path / "click").mkdir()
    (tmp_path / "click" / "__init__.py").write_text(
        "import os, signal, time\n\n"
        "class Field:\n"
        "    def __set_name__(self, owner, name):\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        time.sleep(5)\n\n"
        "class Checkpoints:\n"
        "    made = Field()\n"
    )
    script = Path(sys.executable).with_name("testlane")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run([str(script), "run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 130, result.stderr
    assert result.stderr == "testlane: interrupted (SIGINT) while starting; nothing was started\n"
