"""``testlane init``: scaffold a project's test set-up, idempotently.

What it writes (each line of output says ``wrote``, ``updated``, ``skipped`` or ``overwrote``):

* ``[tool.testlane]`` (and ``[tool.pytest.ini_options]`` when the project has no pytest
  configuration) appended to ``pyproject.toml`` — created when missing; an existing
  ``[tool.testlane]`` table is left as it is, and nothing else in the file is touched;
* ``tests/unit/`` and ``tests/integration/``, each with a ``conftest.py`` and one example test;
  ``tests/fixtures/`` (test data) and ``tests/helpers/`` (builders);
* ``.github/workflows/tests.yml``: a fast unit job and an integration job;
* ``.claude/settings.json``: the Stop and PostToolUse hooks, run by this interpreter and blocking
  when they cannot run (``hook_command``); merged into an existing file: other hooks are kept,
  testlane's own are brought up to date;
* a testing section in ``AGENTS.md`` (appended when the file exists).

A file that exists is never overwritten without ``--force``; files are only ever added to, never
trimmed. Running it twice changes nothing the second time.
"""

from __future__ import annotations

import configparser
import importlib.util
import json
import re
import shlex
import sys
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import click

__all__ = ["init_command", "scaffold"]

AGENTS_BEGIN = "<!-- testlane:testing:begin -->"
AGENTS_END = "<!-- testlane:testing:end -->"
STOP_TIMEOUT = 1800
POST_EDIT_TIMEOUT = 60
# What CI installs besides the project: pytest-asyncio runs the async tests the scaffolded
# `asyncio_mode = "auto"` is for.
TEST_TOOLS = "testlane pytest pytest-asyncio ruff"


def template(name: str) -> str:
    """A scaffold file shipped with testlane."""
    return resources.files("testlane.cli").joinpath("scaffold", name).read_text(encoding="utf-8")


def _has_pytest_config(root: Path, pyproject: dict[str, Any]) -> bool:
    if "pytest" in pyproject.get("tool", {}) or any((root / n).is_file() for n in ("pytest.ini", "pytest.toml")):
        return True
    for name, section in (("tox.ini", "pytest"), ("setup.cfg", "tool:pytest")):
        path = root / name
        if path.is_file():
            parser = configparser.ConfigParser()
            try:
                parser.read(path, encoding="utf-8")
            except configparser.Error:
                continue
            if parser.has_section(section):
                return True
    return False


def _handlers(entries: object) -> list[dict[str, Any]]:
    """The hook handlers (``{"type": "command", "command": ...}``) of one event's entries."""
    found: list[dict[str, Any]] = []
    for entry in entries if isinstance(entries, list) else []:
        handlers = entry.get("hooks") if isinstance(entry, dict) else None
        found += [h for h in handlers if isinstance(h, dict)] if isinstance(handlers, list) else []
    return found


def _install_command(root: Path, pyproject: dict[str, Any]) -> str:
    """How CI installs the project and its test tools."""
    project = pyproject.get("project")
    if isinstance(project, dict):
        extras = project.get("optional-dependencies", {})
        for extra in ("dev", "test", "tests"):
            if isinstance(extras, dict) and extra in extras:
                return f"pip install -e '.[{extra}]' {TEST_TOOLS}"
        return f"pip install -e . {TEST_TOOLS}"
    requirements = [n for n in ("requirements.txt", "requirements-dev.txt") if (root / n).is_file()]
    if requirements:
        return "pip install " + " ".join(f"-r {n}" for n in requirements) + f" {TEST_TOOLS}"
    return f"pip install {TEST_TOOLS}"


OUR_HOOK_COMMAND = re.compile(r"\btestlane hook (stop|post-edit)\b")
HOOK_FAILURES = {
    "stop": "the Stop hook could not run the quality gate (testlane gate)",
    "post-edit": "the post-edit hook could not lint the edited file",
}


def hook_command(event: str, root: Path, interpreter: Path) -> str:
    """The shell command of testlane's ``event`` hook in ``.claude/settings.json``.

    It runs ``python -m testlane hook <event>`` with ``interpreter`` — relative to
    ``$CLAUDE_PROJECT_DIR`` when it lives in the project (a virtualenv there), so the committed file
    works in every checkout — falling back to ``python3`` on PATH when that interpreter is gone. The
    hook itself always exits 0; any other exit means it could not run (no interpreter, no testlane):
    that becomes exit 2 with the reason on stderr, which Claude Code treats as a block and shows the
    agent. A bare ``testlane`` would exit 127 outside the virtualenv, a non-blocking error: the gate
    would silently never run.
    """
    try:
        py = '"$CLAUDE_PROJECT_DIR"/' + shlex.quote(interpreter.relative_to(root).as_posix())
    except ValueError:
        py = shlex.quote(str(interpreter))
    reason = (
        f"testlane: {HOOK_FAILURES[event]}: $py -m testlane hook {event} exited $?. Install testlane in the "
        "project's environment (pip install testlane), then run testlane init with it: init points the "
        "hooks at the Python that runs it."
    )
    return f'py={py}; [ -x "$py" ] || py=python3; "$py" -m testlane hook {event} || {{ echo "{reason}" >&2; exit 2; }}'


class Scaffold:
    """One ``init`` run: what to write where, and what happened to each path."""

    def __init__(self, root: Path, *, force: bool, interpreter: Path | None = None) -> None:
        self.root = root
        self.force = force
        # The hooks run testlane with the interpreter running this command (its virtualenv's, not resolved
        # through the symlink: that would lose the virtualenv).
        self.interpreter = (interpreter or Path(sys.executable)).absolute()
        self.log: list[tuple[str, str]] = []  # (status, path and detail)

    def _say(self, status: str, path: Path, detail: str = "") -> None:
        rel = path.relative_to(self.root).as_posix()
        self.log.append((status, rel + (f" ({detail})" if detail else "")))

    def file(self, rel: str, content: str) -> None:
        path = self.root / rel
        existed = path.exists()
        if existed and not self.force:
            self._say("skipped", path, "exists; --force overwrites it")
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        self._say("overwrote" if existed else "wrote", path)

    # ----------------------------------------------------------------- pyproject

    def pyproject(self) -> dict[str, Any]:
        path = self.root / "pyproject.toml"
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            self._say("skipped", path, f"not valid TOML ({exc}); add [tool.testlane] by hand")
            return {}
        additions = ""
        if "testlane" in data.get("tool", {}):
            self._say("skipped", path, "[tool.testlane] is already there")
        else:
            additions += template("pyproject.toml.tmpl")
        if not _has_pytest_config(self.root, data):
            additions += template("pytest.toml.tmpl")
        if not additions:
            return data
        new_text = text + ("\n" if text and not text.endswith("\n") else "") + additions
        if not text:
            new_text = new_text.lstrip("\n")
        try:
            data = tomllib.loads(new_text)  # never leave a file behind that does not parse
        except tomllib.TOMLDecodeError as exc:
            self._say("skipped", path, f"adding [tool.testlane] would not parse ({exc}); add it by hand")
            return data
        path.write_text(new_text, encoding="utf-8")
        what = "added [tool.testlane]" if "[tool.testlane]" in additions else "added [tool.pytest.ini_options]"
        self._say("updated" if text else "wrote", path, what if text else "")
        return data

    # ----------------------------------------------------------------- tests

    def tests(self) -> None:
        tests = self.root / "tests"
        package = not tests.exists() or (tests / "__init__.py").is_file()
        helpers = "tests.helpers" if package else "helpers"
        if package:
            self.file("tests/__init__.py", "")
        for lane in ("unit", "integration"):
            if not (tests / lane).exists() or (tests / lane / "__init__.py").is_file():
                self.file(f"tests/{lane}/__init__.py", "")
        self.file("tests/unit/conftest.py", template("unit_conftest.py.tmpl"))
        self.file("tests/unit/test_example.py", template("unit_test_example.py.tmpl").replace("{helpers}", helpers))
        self.file("tests/integration/conftest.py", template("integration_conftest.py.tmpl"))
        self.file(
            "tests/integration/test_example_it.py",
            template("integration_test_example_it.py.tmpl").replace("{helpers}", helpers),
        )
        self.file("tests/helpers/__init__.py", template("helpers.py.tmpl"))
        self.file("tests/fixtures/users.json", template("users.json.tmpl"))

    # ----------------------------------------------------------------- CI and agents

    def workflow(self, pyproject: dict[str, Any]) -> None:
        python = f"{sys.version_info.major}.{sys.version_info.minor}"
        content = template("workflow.yml.tmpl").replace("{python}", python)
        self.file(".github/workflows/tests.yml", content.replace("{install}", _install_command(self.root, pyproject)))

    def claude_settings(self) -> None:
        path = self.root / ".claude" / "settings.json"
        wanted: dict[str, dict[str, Any]] = {
            "PostToolUse": {
                "matcher": "Edit|MultiEdit|Write",
                "hooks": [
                    {
                        "type": "command",
                        "command": hook_command("post-edit", self.root, self.interpreter),
                        "timeout": POST_EDIT_TIMEOUT,
                    }
                ],
            },
            "Stop": {
                "hooks": [
                    {
                        "type": "command",
                        "command": hook_command("stop", self.root, self.interpreter),
                        "timeout": STOP_TIMEOUT,
                    }
                ]
            },
        }
        settings: dict[str, Any] = {}
        if path.is_file():
            try:
                settings = json.loads(path.read_text(encoding="utf-8") or "{}")
            except json.JSONDecodeError:
                settings = {}
                if not self.force:
                    self._say("skipped", path, "not valid JSON; --force replaces it, or see docs/agents.md")
                    return
            if not isinstance(settings, dict):
                settings = {}
        hooks = settings.setdefault("hooks", {})
        if not isinstance(hooks, dict):
            self._say("skipped", path, '"hooks" is not an object; add testlane\'s hooks by hand')
            return
        added, rewritten = [], []
        for event, entry in wanted.items():
            entries = hooks.setdefault(event, [])
            command = entry["hooks"][0]["command"]
            ours = [h for h in _handlers(entries) if OUR_HOOK_COMMAND.search(str(h.get("command", "")))]
            if not ours:
                entries.append(entry)
                added.append(event)
            # testlane's own hooks are brought up to date: an older one may call a bare `testlane`, which
            # fails open (exit 127, a non-blocking error) wherever the virtualenv is not on PATH.
            for handler in ours:
                if handler["command"] != command:
                    handler["command"] = command
                    rewritten.append(event)
        if not added and not rewritten:
            self._say("skipped", path, "testlane's hooks are already there")
            return
        existed = path.is_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
        details = [f"added {', '.join(added)} hooks"] if added else []
        if rewritten:
            details.append(f"{', '.join(dict.fromkeys(rewritten))} hooks now run {self.interpreter}")
        self._say("updated" if existed else "wrote", path, "; ".join(details) if existed else "")

    def agents(self) -> None:
        path = self.root / "AGENTS.md"
        section = template("agents_section.md.tmpl")
        if not path.is_file():
            path.write_text("# AGENTS.md\n\nInstructions for coding agents working in this project.\n\n" + section)
            self._say("wrote", path)
            return
        text = path.read_text(encoding="utf-8")
        if AGENTS_BEGIN in text and AGENTS_END in text:
            if not self.force:
                self._say("skipped", path, "already has testlane's testing section")
                return
            before, rest = text.split(AGENTS_BEGIN, 1)
            after = rest.split(AGENTS_END, 1)[1]
            path.write_text(before + section.rstrip("\n") + after, encoding="utf-8")
            self._say("overwrote", path, "testlane's testing section")
            return
        path.write_text(text + ("\n" if not text.endswith("\n") else "") + "\n" + section, encoding="utf-8")
        self._say("updated", path, "added a testing section")


def scaffold(root: Path, *, force: bool = False, interpreter: Path | None = None) -> list[tuple[str, str]]:
    """Scaffold ``root``; return what happened to each path, in order (``interpreter``: the hooks', by
    default this one)."""
    root.mkdir(parents=True, exist_ok=True)
    job = Scaffold(root.resolve(), force=force, interpreter=interpreter)
    pyproject = job.pyproject()
    job.tests()
    job.workflow(pyproject)
    job.claude_settings()
    job.agents()
    return job.log


@click.command("init")
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite files that exist (pyproject's tables are never replaced).")
def init_command(directory: Path | None, force: bool) -> None:
    """Scaffold testlane into a project: config, test folders, CI workflow, agent hooks, AGENTS.md."""
    root = directory or Path.cwd()
    log = scaffold(root, force=force)
    width = max(len(status) for status, _ in log)
    for status, what in log:
        click.echo(f"{status.ljust(width)}  {what}")
    written = sum(1 for status, _ in log if status != "skipped")
    if importlib.util.find_spec("pytest_asyncio") is None:
        click.echo(
            "testlane init: async tests (`async def`, and the async fixtures) need pytest-asyncio, which is not "
            "installed here: pip install pytest-asyncio (or pip install 'testlane[all]')."
        )
    click.echo(
        f"testlane init: {written} written, {len(log) - written} skipped. Next: `testlane run` runs both lanes; "
        "`testlane gate` is the full check."
    )
