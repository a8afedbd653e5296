"""`testlane gate` and `testlane hook ...` as a user (or Claude Code) runs them: real subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import TESTLANE, clean_env, run_cli

pytestmark = pytest.mark.timeout(180)

PY = sys.executable

PYPROJECT = """
[project]
name = "gated"
version = "0"

[tool.testlane]
services = []

[tool.testlane.gate]
checks = {checks}
commands = {commands}
{extra}
"""


def gated_project(root: Path, checks: list[str], commands: dict[str, str], extra: str = "") -> Path:
    table = "{ " + ", ".join(f"{name} = {json.dumps(cmd)}" for name, cmd in commands.items()) + " }"
    (root / "pyproject.toml").write_text(PYPROJECT.format(checks=json.dumps(checks), commands=table, extra=extra))
    return root


def exits(code: int) -> str:
    return f"{PY} -c 'import sys; print(\"check output\"); sys.exit({code})'"


def test_gate_passes_only_when_every_check_passes(tmp_path: Path) -> None:
    gated_project(tmp_path, ["first", "second"], {"first": exits(0), "second": "true"})
    ok = run_cli(["gate"], cwd=tmp_path, env=clean_env())
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.rstrip().splitlines()[-1] == "gate: PASSED — first, second passed"


def test_a_failure_inside_a_pipe_fails_the_gate(tmp_path: Path) -> None:
    # Under sh, `false | cat` succeeds; the gate runs shell commands under bash -o pipefail.
    gated_project(tmp_path, ["piped", "after"], {"piped": f"{exits(3)} | cat", "after": "true"})
    result = run_cli(["gate"], cwd=tmp_path, env=clean_env())
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("gate: piped: FAILED (exit 3, ")
    assert lines[1].startswith("gate: after: passed")  # every check runs: all failures in one report
    assert any(line.startswith("── piped: ") for line in lines) and "check output" in result.stdout
    assert lines[-1] == "gate: FAILED — piped failed; after passed"


def test_the_gates_exit_code_survives_a_pipe_after_it(tmp_path: Path) -> None:
    gated_project(tmp_path, ["broken"], {"broken": exits(2)})
    piped = subprocess.run(
        ["bash", "-o", "pipefail", "-c", f"{TESTLANE} gate | tail -n 2"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert piped.returncode == 1
    assert piped.stdout.rstrip().endswith("gate: FAILED — broken failed")


def test_a_test_check_whose_lane_is_empty_has_nothing_to_test_and_the_gate_fails_when_nothing_was_tested(
    tmp_path: Path,
) -> None:
    """The built-in unit check (`pytest --lane unit`) on a suite without lanes tests nothing (its tests are all
    integration tests): not a failure while another check tested something, but a gate in which no check tested
    anything has passed nothing."""
    gated_project(tmp_path, ["lint", "unit"], {"lint": "true"})
    (tmp_path / "test_orders.py").write_text("def test_one():\n    pass\n")
    result = run_cli(["gate"], cwd=tmp_path, env=clean_env())
    lines = result.stdout.splitlines()
    assert result.returncode == 1, result.stdout + result.stderr
    assert lines[1].startswith("gate: unit: nothing to test (--lane unit: the suite declares no lanes"), lines
    assert lines[-1] == "gate: FAILED — lint passed; unit had nothing to test; no test ran: nothing was tested"


def test_fail_fast_skips_the_rest_and_says_so(tmp_path: Path) -> None:
    gated_project(tmp_path, ["first", "second"], {"first": "false", "second": "true"})
    result = run_cli(["gate", "--fail-fast"], cwd=tmp_path, env=clean_env())
    assert result.returncode == 1
    assert "gate: second: not run (--fail-fast)" in result.stdout
    assert result.stdout.rstrip().endswith("gate: FAILED — first failed; second not run")


def test_exec_prefix_goes_before_every_command(tmp_path: Path) -> None:
    probe = f'{PY} -c \'import os, sys; sys.exit(0 if os.environ.get("IN_CONTAINER") == "yes" else 7)\''
    gated_project(tmp_path, ["probe"], {"probe": probe})
    without = run_cli(["gate"], cwd=tmp_path, env=clean_env())
    assert without.returncode == 1 and "FAILED (exit 7" in without.stdout
    option = run_cli(["gate", "--exec-prefix", "env IN_CONTAINER=yes"], cwd=tmp_path, env=clean_env())
    assert option.returncode == 0, option.stdout
    gated_project(tmp_path, ["probe"], {"probe": probe}, extra='exec_prefix = "env IN_CONTAINER=yes"')
    setting = run_cli(["gate"], cwd=tmp_path, env=clean_env())
    assert setting.returncode == 0, setting.stdout


def test_a_missing_tool_or_a_hung_check_is_a_failure(tmp_path: Path) -> None:
    gated_project(
        tmp_path,
        ["missing", "hung"],
        {"missing": "no-such-tool-here --check", "hung": "sleep 30"},
        extra="timeout = 1",
    )
    result = run_cli(["gate"], cwd=tmp_path, env=clean_env(), timeout=60)
    assert result.returncode == 1
    assert "gate: missing: FAILED: could not start `no-such-tool-here`" in result.stdout
    assert "gate: hung: FAILED: timed out after 1s" in result.stdout


def test_an_unknown_check_is_one_clear_message(tmp_path: Path) -> None:
    gated_project(tmp_path, ["e2e"], {})
    result = run_cli(["gate"], cwd=tmp_path, env=clean_env())
    assert result.returncode == 4
    assert "gate check 'e2e' has no command" in result.stderr and "Traceback" not in result.stderr


# --------------------------------------------------------------------------- hooks


def hook(args: list[str], payload: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TESTLANE, "hook", *args],
        input=json.dumps(payload),
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_stop_hook_blocks_with_the_digest_when_the_gate_fails(tmp_path: Path) -> None:
    noisy = f"{PY} -c 'import sys; [print(\"problem\", i) for i in range(5000)]; sys.exit(1)'"
    gated_project(tmp_path, ["lint"], {"lint": noisy})
    elsewhere = tmp_path / "sub"
    elsewhere.mkdir()
    result = hook(["stop"], {"stop_hook_active": False, "cwd": str(tmp_path)}, cwd=elsewhere)
    assert result.returncode == 0
    decision = json.loads(result.stdout)
    assert decision["decision"] == "block"
    reason = decision["reason"]
    assert len(reason) < 10_000
    assert "gate: lint: FAILED (exit 1" in reason and "problem 0" in reason
    assert reason.rstrip().endswith("gate: FAILED — lint failed")


def test_stop_hook_lets_the_agent_stop_when_it_is_already_continuing(tmp_path: Path) -> None:
    marker = tmp_path / "gate-ran"
    gated_project(tmp_path, ["lint"], {"lint": f"touch {marker} && false"})
    result = hook(["stop"], {"stop_hook_active": True, "cwd": str(tmp_path)}, cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout == ""
    assert not marker.exists()  # the gate did not even run


def test_stop_hook_is_silent_when_the_gate_passes(tmp_path: Path) -> None:
    gated_project(tmp_path, ["lint"], {"lint": "true"})
    result = hook(["stop"], {"stop_hook_active": False}, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout == ""


def test_post_edit_lints_only_the_edited_python_file(tmp_path: Path) -> None:
    gated_project(tmp_path, ["lint"], {"lint": "true"})
    (tmp_path / "good.py").write_text("VALUE = 1\n")
    (tmp_path / "bad.py").write_text("import os\n\nVALUE = 1\n")
    (tmp_path / "notes.txt").write_text("x = (1 +\n")
    bad = hook(["post-edit"], {"tool_name": "Edit", "tool_input": {"file_path": str(tmp_path / "bad.py")}}, tmp_path)
    assert bad.returncode == 0
    decision = json.loads(bad.stdout)
    assert decision["decision"] == "block"
    assert "bad.py:1:8: F401" in decision["reason"] and "good.py" not in decision["reason"]
    for name in ("good.py", "notes.txt"):
        quiet = hook(["post-edit"], {"tool_input": {"file_path": str(tmp_path / name)}}, tmp_path)
        assert quiet.returncode == 0 and quiet.stdout == "", name
    nothing = hook(["post-edit"], {}, tmp_path)
    assert nothing.returncode == 0 and nothing.stdout == ""


# --------------------------------------------------------------------------- the hooks `init` writes


def run_written_hook(root: Path, event: str, payload: object, path: str) -> subprocess.CompletedProcess[str]:
    """The command `init` wrote for ``event``, run as Claude Code runs it: through a shell, with its PATH."""
    settings = json.loads((root / ".claude" / "settings.json").read_text())
    [handler] = settings["hooks"][event][0]["hooks"]
    return subprocess.run(
        ["/bin/sh", "-c", handler["command"]],
        input=json.dumps(payload),
        cwd=root,
        env=clean_env({"PATH": path, "CLAUDE_PROJECT_DIR": str(root)}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_written_stop_hook_runs_the_gate_without_the_virtualenv_on_path(tmp_path: Path) -> None:
    from testlane.cli.init import scaffold

    scaffold(tmp_path)  # by this interpreter: the worktree's virtualenv, outside the project
    marker = tmp_path / "gate-ran"
    gated_project(tmp_path, ["lint"], {"lint": f"touch {marker} && false"})
    result = run_written_hook(tmp_path, "Stop", {"stop_hook_active": False, "cwd": str(tmp_path)}, "/usr/bin:/bin")
    assert result.returncode == 0, result.stderr  # a bare `testlane` exited 127 here: the gate never ran
    assert marker.exists()
    assert json.loads(result.stdout)["decision"] == "block"


def test_a_written_hook_whose_interpreter_is_gone_blocks_with_the_reason(tmp_path: Path) -> None:
    from testlane.cli.init import scaffold

    gone = tmp_path / "old-env" / "bin" / "python"
    scaffold(tmp_path, interpreter=gone)
    gated_project(tmp_path, ["lint"], {"lint": "true"})
    empty = tmp_path / "no-python-here"
    empty.mkdir()
    # No fallback python3 at all, then one without testlane installed: both block (exit 2, reason on stderr).
    for path, exit_code in ((str(empty), 127), ("/usr/bin:/bin", 1)):
        result = run_written_hook(tmp_path, "Stop", {"stop_hook_active": False}, path)
        assert result.returncode == 2, (path, result.stdout, result.stderr)
        reason = result.stderr.strip().splitlines()[-1]
        assert reason.startswith("testlane: the Stop hook could not run the quality gate (testlane gate): ")
        assert f"python3 -m testlane hook stop exited {exit_code}." in reason
        assert "pip install testlane" in reason and "testlane init" in reason
    edit = run_written_hook(tmp_path, "PostToolUse", {"tool_input": {"file_path": "x.py"}}, str(empty))
    assert edit.returncode == 2 and "the post-edit hook could not lint the edited file" in edit.stderr


# --------------------------------------------------------------------------- the built-in checks on a project


def test_the_unit_check_runs_pytest_as_testlane_run_does_and_a_passing_test_check_counts_its_tests(
    tmp_path: Path,
) -> None:
    """`from tests.helper import ...` with no tests/__init__.py works under `python -m pytest` (`testlane run`,
    the integration check) and failed under the `pytest` script (the unit check: No module named 'tests')."""
    gated_project(tmp_path, ["unit", "integration"], {})
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "helper.py").write_text("VALUE = 1\n")
    (tests / "test_unit.py").write_text("from tests.helper import VALUE\n\ndef test_value():\n    assert VALUE == 1\n")
    (tests / "test_db_it.py").write_text("from tests.helper import VALUE\n\ndef test_db():\n    assert VALUE\n")
    result = run_cli(["gate"], cwd=tmp_path, env=clean_env(), timeout=150)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"gate: unit: {Path(sys.executable).name} -m pytest --lane unit --digest" in result.stderr  # progress
    lines = result.stdout.splitlines()
    assert lines[0].startswith("gate: unit: passed (1 passed, "), lines
    assert lines[1].startswith("gate: integration: passed (1 passed, 1 deselected, "), lines


def test_types_leaves_virtualenvs_and_build_folders_out_of_mypy_dot_unless_the_project_excludes(
    tmp_path: Path,
) -> None:
    """With `[mypy]` naming no `files` the gate runs `mypy .`, which walked the project's .venv (minutes, then an
    INTERNAL ERROR in site-packages)."""
    gated_project(tmp_path, ["types"], {})
    (tmp_path / "setup.cfg").write_text("[mypy]\nignore_missing_imports = True\n")
    (tmp_path / "app.py").write_text("VALUE: int = 1\n")
    bad = 'WRONG: int = "not an int"\n'
    # mypy itself skips .venv (a dot folder) and site-packages, not venv, build or a virtualenv by another name.
    for folder in ("venv/lib/pkg", "build/lib", "other-env/lib"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "bad.py").write_text(bad)
    (tmp_path / "other-env" / "pyvenv.cfg").write_text("home = /usr/bin\n")  # a virtualenv by another name
    result = run_cli(["gate"], cwd=tmp_path, env=clean_env(), timeout=150)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        "gate: types: mypy . --exclude '(^|/)(" in result.stderr
        and "other\\-env" in result.stderr
        and "^(build|dist|" in result.stderr
    )
    # The project's own exclude stands: the gate adds none (mypy's --exclude would replace it).
    (tmp_path / "setup.cfg").write_text("[mypy]\nexclude = (^|/)build/\n")
    own = run_cli(["gate"], cwd=tmp_path, env=clean_env(), timeout=150)
    assert "gate: types: mypy .\n" in own.stderr, own.stderr
    assert own.returncode == 1 and "other-env/lib/bad.py" in own.stdout and "build/" not in own.stdout


def test_a_built_in_check_whose_tool_is_missing_says_how_to_fix_it(tmp_path: Path) -> None:
    gated_project(tmp_path, ["lint", "types"], {}, extra='exec_prefix = "env PATH=/usr/bin:/bin"')
    (tmp_path / "setup.cfg").write_text("[mypy]\n")
    result = run_cli(["gate"], cwd=tmp_path, env=clean_env())
    assert result.returncode == 1
    lint, types = result.stdout.splitlines()[:2]
    assert lint.startswith("gate: lint: FAILED: command not found: ") and "ruff" in lint, lint
    assert lint.endswith(
        "Install it (`pip install ruff`, where the checks run), or give the check a command of your own: "
        '[tool.testlane.gate] commands = { lint = "..." }'
    )
    assert "mypy: command not found" in types and "`pip install mypy`" in types and "{ types = " in types, types
