"""The gate's planning and folding, the hook's reason limit, and `init`'s idempotence, without subprocesses."""

from __future__ import annotations

import io
import json
import sys
import tomllib
from pathlib import Path

import pytest

from testlane.cli.gate import Check, CheckResult, GateReport, argv_for, needs_shell, plan_checks
from testlane.cli.hooks import REASON_LIMIT, block, read_payload
from testlane.cli.init import hook_command, scaffold, template
from testlane.core.config import load_settings
from testlane.core.errors import ConfigError


@pytest.mark.parametrize(
    ("command", "shell"),
    [
        ("ruff check .", False),
        ("pytest --lane unit -k 'a and b'", False),
        ("pytest | tee log", True),
        ("make lint && make types", True),
        ("mypy > out.txt", True),
        ("ruff check src/*.py", True),
        ("echo $HOME", True),
    ],
)
def test_shell_syntax_is_detected(command: str, shell: bool) -> None:
    assert needs_shell(command) is shell


def test_argv_uses_bash_with_pipefail_for_shell_commands_and_puts_the_prefix_first() -> None:
    assert argv_for("pytest | tail", "") == ["bash", "-o", "pipefail", "-c", "pytest | tail"]
    assert argv_for("ruff check .", "podman exec app") == ["podman", "exec", "app", "ruff", "check", "."]
    assert argv_for("a | b", "podman exec app") == ["podman", "exec", "app", "bash", "-o", "pipefail", "-c", "a | b"]


def project(tmp_path: Path, extra: str = "") -> Path:
    (tmp_path / "pyproject.toml").write_text(f'[project]\nname = "p"\nversion = "0"\n{extra}')
    return tmp_path


def test_default_checks_and_the_type_checker_only_when_configured(tmp_path: Path) -> None:
    settings = load_settings(start=project(tmp_path), environ={})
    checks = plan_checks(settings)
    assert [c.name for c in checks] == ["lint", "types", "unit", "integration"]
    assert checks[0].command.startswith("ruff check")
    assert checks[1].skip_reason is not None
    assert checks[2].command.startswith(f"{Path(sys.executable).name} -m pytest --lane unit --digest")
    assert plan_checks(settings, exec_prefix="podman exec app")[2].command.startswith("python3 -m pytest --lane unit")
    assert checks[3].command.startswith("testlane run -- --lane it --digest")
    assert [c.name for c in plan_checks(settings, fast=True)] == ["lint", "unit"]
    typed = load_settings(start=project(tmp_path, '[tool.mypy]\nfiles = ["src"]\n'), environ={})
    assert plan_checks(typed)[1] == Check("types", "mypy", built_in=True, tool="mypy")


def test_a_command_replaces_a_built_in_check_and_an_unknown_check_is_an_error(tmp_path: Path) -> None:
    settings = load_settings(
        start=project(tmp_path, '[tool.testlane.gate]\nchecks = ["lint"]\ncommands = { lint = "ruff check src" }\n'),
        environ={},
    )
    assert plan_checks(settings) == [Check("lint", "ruff check src")]
    unknown = load_settings(start=project(tmp_path, '[tool.testlane.gate]\nchecks = ["e2e"]\n'), environ={})
    with pytest.raises(ConfigError, match="gate check 'e2e' has no command"):
        plan_checks(unknown)


def test_the_combined_digest_keeps_every_status_and_the_first_failure_within_budget() -> None:
    lint = CheckResult(
        Check("lint", "ruff check ."), 1, 0.1, "\n".join(f"src/a.py:{i}:1: F401 unused" for i in range(900))
    )
    unit_digest = (
        "[1] FAILED tests/test_a.py::test_x — AssertionError: assert 1 == 2\ntestlane: FAILED — 1 failed (exit 1)"
    )
    unit = CheckResult(Check("unit", "pytest --lane unit --digest"), 1, 2.0, unit_digest)
    skipped = CheckResult(Check("types", "", skip_reason="no type checker configured"), None)
    report = GateReport([lint, skipped, unit], budget=3000)
    text = report.render()
    assert len(text) <= 3000
    assert not report.passed
    assert "gate: lint: FAILED (exit 1, 0.1s)" in text and "gate: types: skipped (no type checker" in text
    assert "src/a.py:0:1: F401 unused" in text and "more lines" in text
    assert "[1] FAILED tests/test_a.py::test_x" in text and "testlane: FAILED — 1 failed (exit 1)" in text
    assert text.rstrip().endswith("gate: FAILED — lint, unit failed; types skipped")


def test_a_gate_where_nothing_ran_has_not_passed() -> None:
    only_skipped = GateReport([CheckResult(Check("types", "", skip_reason="none"), None)], budget=1000)
    assert not only_skipped.passed


def test_block_keeps_the_reason_under_the_hook_limit(capsys: pytest.CaptureFixture[str]) -> None:
    block("head\n" + "x" * 50_000 + "\nthe verdict")
    decision = json.loads(capsys.readouterr().out)
    assert decision["decision"] == "block"
    assert len(decision["reason"]) < REASON_LIMIT
    assert decision["reason"].startswith("head") and decision["reason"].endswith("the verdict")


def test_hook_payload_that_is_empty_or_not_json_is_an_empty_dict() -> None:
    assert read_payload(io.StringIO("")) == {}
    assert read_payload(io.StringIO("not json")) == {}
    assert read_payload(io.StringIO('{"stop_hook_active": true}')) == {"stop_hook_active": True}


# --------------------------------------------------------------------------- init


def snapshot(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def test_init_twice_writes_once_and_then_changes_nothing(tmp_path: Path) -> None:
    first = scaffold(tmp_path)
    assert {status for status, _ in first} == {"wrote"}
    written = snapshot(tmp_path)
    assert {
        "pyproject.toml",
        "tests/unit/conftest.py",
        "tests/unit/test_example.py",
        "tests/integration/conftest.py",
        "tests/integration/test_example_it.py",
        "tests/fixtures/users.json",
        "tests/helpers/__init__.py",
        ".github/workflows/tests.yml",
        ".claude/settings.json",
        "AGENTS.md",
    } <= set(written)
    config = tomllib.loads(written["pyproject.toml"])
    assert config["tool"]["testlane"]["services"] == ["postgres", "valkey"]
    hooks = json.loads(written[".claude/settings.json"])["hooks"]
    assert hooks["Stop"][0]["hooks"][0]["command"] == hook_command("stop", tmp_path, Path(sys.executable))
    assert hooks["PostToolUse"][0]["hooks"][0]["command"] == hook_command("post-edit", tmp_path, Path(sys.executable))
    assert "from tests.helpers import make_user" in written["tests/unit/test_example.py"]
    second = scaffold(tmp_path)
    assert {status for status, _ in second} == {"skipped"}
    assert snapshot(tmp_path) == written


def test_init_adds_to_existing_files_without_clobbering_them(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "app"\nversion = "1"\n[project.optional-dependencies]\ndev = ["pytest"]\n\n'
        '[tool.pytest.ini_options]\naddopts = "-q"\n'
    )
    (tmp_path / "AGENTS.md").write_text("# Agents\n\nBe nice.\n")
    (tmp_path / ".claude").mkdir()
    other_hook = {"matcher": "Bash", "hooks": [{"type": "command", "command": "audit"}]}
    (tmp_path / ".claude" / "settings.json").write_text(
        json.dumps({"model": "x", "hooks": {"PreToolUse": [other_hook]}})
    )
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_old.py").write_text("def test_old():\n    pass\n")
    log = dict((what.split(" ")[0], status) for status, what in scaffold(tmp_path))
    assert log["pyproject.toml"] == "updated" and log["AGENTS.md"] == "updated"
    assert log[".claude/settings.json"] == "updated"
    config = tomllib.loads((tmp_path / "pyproject.toml").read_text())
    assert config["project"]["name"] == "app" and config["tool"]["pytest"]["ini_options"]["addopts"] == "-q"
    assert "testlane" in config["tool"]
    assert (tmp_path / "AGENTS.md").read_text().startswith("# Agents\n\nBe nice.\n")
    settings = json.loads((tmp_path / ".claude" / "settings.json").read_text())
    assert settings["model"] == "x" and settings["hooks"]["PreToolUse"] == [other_hook]
    assert "Stop" in settings["hooks"]
    # tests/ existed without __init__.py: not turned into a package; the examples import `helpers`
    assert not (tmp_path / "tests" / "__init__.py").exists()
    assert "from helpers import make_user" in (tmp_path / "tests" / "unit" / "test_example.py").read_text()
    workflow = (tmp_path / ".github" / "workflows" / "tests.yml").read_text()
    assert "pip install -e '.[dev]' testlane pytest pytest-asyncio ruff" in workflow


def test_the_all_extra_brings_what_the_async_examples_need() -> None:
    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    assert any(r.startswith("pytest-asyncio") for r in project["optional-dependencies"]["all"])
    written = tomllib.loads(template("pytest.toml.tmpl"))["tool"]["pytest"]["ini_options"]
    assert written["asyncio_mode"] == "auto"


def test_init_force_overwrites_files_but_never_replaces_pyproject_tables(tmp_path: Path) -> None:
    scaffold(tmp_path)
    example = tmp_path / "tests" / "unit" / "test_example.py"
    example.write_text("# mine\n")
    pyproject = (tmp_path / "pyproject.toml").read_text()
    statuses = dict((what.split(" ")[0], status) for status, what in scaffold(tmp_path, force=True))
    assert statuses["tests/unit/test_example.py"] == "overwrote"
    assert example.read_text() != "# mine\n"
    assert (tmp_path / "pyproject.toml").read_text() == pyproject


def test_hook_commands_find_their_interpreter_and_older_bare_ones_are_rewritten(tmp_path: Path) -> None:
    venv_python = tmp_path / ".venv" / "bin" / "python"
    assert hook_command("stop", tmp_path, venv_python).startswith('py="$CLAUDE_PROJECT_DIR"/.venv/bin/python; ')
    assert hook_command("stop", tmp_path, Path("/opt/env/bin/python")).startswith("py=/opt/env/bin/python; ")
    (tmp_path / ".claude").mkdir()
    old = {"type": "command", "command": "testlane hook stop", "timeout": 900}
    audit = {"hooks": [{"type": "command", "command": "audit"}]}
    (tmp_path / ".claude" / "settings.json").write_text(json.dumps({"hooks": {"Stop": [audit, {"hooks": [old]}]}}))
    log = dict((what.split(" ")[0], (status, what)) for status, what in scaffold(tmp_path, interpreter=venv_python))
    assert log[".claude/settings.json"][0] == "updated"
    assert f"Stop hooks now run {venv_python}" in log[".claude/settings.json"][1]
    stop = json.loads((tmp_path / ".claude" / "settings.json").read_text())["hooks"]["Stop"]
    assert stop == [audit, {"hooks": [{**old, "command": hook_command("stop", tmp_path, venv_python)}]}]


def test_the_hooks_shown_in_the_docs_are_the_ones_init_writes(tmp_path: Path) -> None:
    text = (Path(__file__).parents[2] / "docs" / "agents.md").read_text()
    block = text.split("### Wiring: `.claude/settings.json`", 1)[1].split("```json\n", 1)[1].split("```", 1)[0]
    shown = json.loads(block)["hooks"]
    scaffold(tmp_path, interpreter=tmp_path / ".venv" / "bin" / "python")
    assert json.loads((tmp_path / ".claude" / "settings.json").read_text())["hooks"] == shown
