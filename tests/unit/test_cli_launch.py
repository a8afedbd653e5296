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
