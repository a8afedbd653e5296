"""``testlane gate``: the project's checks in order, one combined digest, one exit code.

The checks come from ``[tool.testlane.gate]`` (docs/agents.md): by default ``lint`` (ruff), ``types``
(mypy or pyright, when the project configures one), ``unit`` (the unit lane, under ``python -m pytest`` as
``testlane run`` starts pytest) and ``integration`` (the integration lane under ``testlane run``); ``--fast``
runs ``gate.fast`` (lint and the unit lane).

Each check is a subprocess in the project root, in its own process group (a check that outlives
``gate.timeout`` is stopped, with whatever it started, and fails). A command is split into words and
run directly; one with shell syntax runs under ``bash -o pipefail -c``, so a failing command piped
into ``tail`` still fails the check (POSIX ``sh`` has no ``pipefail``). With an exec prefix
(``podman exec app``) every command runs inside the container; otherwise the tools of testlane's own
environment (its ``bin`` directory) come first on ``PATH``.

The gate runs every check and reports every failure at once (one round trip for an agent), unless
``--fail-fast``. Exit code 0 only when every check that ran passed; a check that could not start (the
tool is missing) is a failure, never a skip. Only ``types`` without a configured type checker is
skipped, and the digest says so.
"""

from __future__ import annotations

import configparser
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click

from testlane.cli.common import CliState, console, pass_state
from testlane.cli.run import RUN_SCOPED_ENV
from testlane.core import environment
from testlane.core.config import Settings
from testlane.core.errors import ConfigError, config_errors
from testlane.core.redact import redact
from testlane.core.runenv import RunEnv
from testlane.services.process import terminate

__all__ = ["Check", "CheckResult", "GateReport", "gate_command", "plan_checks", "run_gate"]

BUILT_IN = ("lint", "types", "unit", "integration")
TEST_CHECKS = ("unit", "integration")
_SHELL_CHARS = set("|&;<>()$`*?[]{}~\n")
STOP_GRACE = 10.0


@dataclass(frozen=True)
class Check:
    """One named check: its command, or why it is skipped."""

    name: str
    command: str
    skip_reason: str | None = None
    built_in: bool = False  # testlane's own command (not gate.commands): for a test check, exit 5 is an empty lane
    tool: str | None = None  # a built-in check's tool: named, with the fix, when it cannot be started


@dataclass
class CheckResult:
    """What one check did."""

    check: Check
    exit_code: int | None  # None: skipped, or not run after --fail-fast
    duration: float = 0.0
    stdout: str = ""
    stderr: str = ""
    problem: str | None = None  # could not start, timed out

    @property
    def empty(self) -> str | None:
        """Why a built-in test check tested nothing (pytest's exit 5: its lane has no test), else None. Not a
        failure of the gate by itself (a suite without lanes has no unit lane: its tests run in `integration`);
        the gate fails when no test check tested anything."""
        if not (self.check.built_in and self.check.name in TEST_CHECKS and self.exit_code == 5 and not self.problem):
            return None
        said = [line.strip() for line in self.stdout.splitlines() if line.strip().startswith("no tests ran: ")]
        return said[-1].removeprefix("no tests ran: ") if said else "pytest ran no test"

    @property
    def passed(self) -> bool:
        return self.exit_code == 0 and self.problem is None

    @property
    def failed(self) -> bool:
        if self.empty is not None:
            return False
        return self.problem is not None or (self.exit_code is not None and self.exit_code != 0)


# --------------------------------------------------------------------------- planning


def _type_checker(root: Path) -> str | None:
    """The type-check command the project configures (mypy or pyright), or None."""
    pyproject: dict[str, object] = {}
    if (root / "pyproject.toml").is_file():
        try:
            pyproject = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError:
            pyproject = {}
    tool = pyproject.get("tool", {})
    tool = tool if isinstance(tool, dict) else {}
    mypy_files: object = None
    mypy_exclude: object = None
    has_mypy = "mypy" in tool
    if has_mypy and isinstance(tool["mypy"], dict):
        mypy_files = tool["mypy"].get("files")
        mypy_exclude = tool["mypy"].get("exclude")
    for name in ("mypy.ini", ".mypy.ini", "setup.cfg"):
        path = root / name
        if not path.is_file():
            continue
        parser = configparser.ConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except configparser.Error:
            continue
        if parser.has_section("mypy"):
            has_mypy = True
            mypy_files = mypy_files or parser.get("mypy", "files", fallback=None)
            mypy_exclude = mypy_exclude or parser.get("mypy", "exclude", fallback=None)
    if has_mypy:
        if mypy_files:
            return "mypy"
        # `mypy .` walks every folder: a project's .venv took minutes, then crashed mypy in site-packages. The
        # project's own `exclude` is left alone (a command-line --exclude would replace it).
        return "mypy ." if mypy_exclude else f"mypy . --exclude {shlex.quote(_not_sources(root))}"
    if "pyright" in tool or (root / "pyrightconfig.json").is_file():
        return "pyright"
    return None


NOT_SOURCES = (r"\.?venv[^/]*", r"\.tox", r"\.nox", "node_modules", "site-packages")  # at any depth
TOP_LEVEL_NOT_SOURCES = ("build", "dist")  # only at the top: a package may have a `build` module of its own


def _not_sources(root: Path) -> str:
    """mypy's ``--exclude`` for ``mypy .``: virtualenvs at any depth, ``build`` and ``dist`` at the top, and every
    top-level folder holding a ``pyvenv.cfg`` (a virtualenv by any name). mypy searches each discovered path, relative
    and with ``/`` after a folder's name, for the regex."""
    top = list(TOP_LEVEL_NOT_SOURCES)
    try:
        venvs = sorted(p.name for p in root.iterdir() if (p / "pyvenv.cfg").is_file())
    except OSError:
        venvs = []
    top += [re.escape(name) for name in venvs if not any(re.fullmatch(n, name) for n in (*NOT_SOURCES, *top))]
    return f"(^|/)({'|'.join(NOT_SOURCES)})/|^({'|'.join(top)})/"


def _python(exec_prefix: str) -> str:
    """The Python that runs pytest for the unit check, as ``testlane run`` does (``python -m pytest``: the
    project's root on ``sys.path``, so ``from tests.helpers import ...`` works in both). Without an exec prefix,
    testlane's own (its ``bin`` is first on the checks' ``PATH``: :func:`check_env`); in a container, its
    ``python3``."""
    return "python3" if exec_prefix else Path(sys.executable).name


def _built_in(name: str, settings: Settings, exec_prefix: str) -> Check:
    budget = max(settings.gate.budget // 2, 1000)
    if name == "lint":
        return Check(name, "ruff check --output-format concise .", built_in=True, tool="ruff")
    if name == "types":
        command = _type_checker(settings.project_root)
        if command is None:
            return Check(name, "", skip_reason="no type checker configured: [tool.mypy] or [tool.pyright]")
        return Check(name, command, built_in=True, tool=command.split()[0])
    if name == "unit":
        command = f"{_python(exec_prefix)} -m pytest --lane unit --digest --digest-budget {budget}"
        return Check(name, command, built_in=True, tool="pytest")
    command = f"testlane run -- --lane it --digest --digest-budget {budget}"
    return Check(name, command, built_in=True, tool="testlane")


def plan_checks(settings: Settings, *, fast: bool = False, exec_prefix: str | None = None) -> list[Check]:
    """The checks to run, in order, each with its command (``gate.commands`` over the built-in one)."""
    prefix = settings.gate.exec_prefix if exec_prefix is None else exec_prefix
    names = settings.gate.fast if fast else settings.gate.checks
    checks = []
    for name in names:
        command = settings.gate.commands.get(name)
        if command is not None:
            checks.append(Check(name, command))
        elif name in BUILT_IN:
            checks.append(_built_in(name, settings, prefix))
        else:
            raise ConfigError(
                f"gate check {name!r} has no command.",
                hint=f'add it to [tool.testlane.gate] commands, e.g. commands = {{ {name} = "make {name}" }}; '
                f"built-in checks: {', '.join(BUILT_IN)}.",
            )
    return checks


# --------------------------------------------------------------------------- running


def needs_shell(command: str) -> bool:
    """Whether ``command`` uses shell syntax (pipes, lists, redirections, expansions)."""
    try:
        lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
    except ValueError:
        return True
    return any(_SHELL_CHARS.intersection(token) for token in tokens)


def argv_for(command: str, exec_prefix: str) -> list[str]:
    """The argv that runs ``command``: split into words, or under ``bash -o pipefail -c``; prefixed."""
    words = ["bash", "-o", "pipefail", "-c", command] if needs_shell(command) else shlex.split(command)
    with config_errors(
        ValueError,
        lambda exc: f"gate exec prefix {exec_prefix!r} cannot be split into words: {exc}.",
        hint='check its quotes, e.g. exec_prefix = "podman exec app".',
    ):
        prefix = shlex.split(exec_prefix)
    return [*prefix, *words]


def check_env(exec_prefix: str) -> dict[str, str]:
    """The environment for checks: without the surrounding run's variables; our tools first on PATH."""
    # The user's whole environment (their checks need it), without the run's own variables.
    env = RunEnv().child_environ(os.environ, drop=(*RUN_SCOPED_ENV, environment.IT))
    env.pop("PYTEST_ADDOPTS", None)
    if not exec_prefix:
        bin_dir = str(Path(sys.executable).parent)
        env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    return env


def run_check(check: Check, *, cwd: Path, exec_prefix: str, timeout: float) -> CheckResult:
    """Run one check to completion (or its timeout) and return what it did."""
    argv = argv_for(check.command, exec_prefix)
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=check_env(exec_prefix),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,
        )
    except OSError as exc:
        problem = f"could not start `{argv[0]}`: {exc.strerror or exc}"
        return CheckResult(check, 127, problem=problem + _missing_tool_fix(check))
    try:
        stdout, stderr = proc.communicate(timeout=timeout if timeout > 0 else None)
    except subprocess.TimeoutExpired:
        terminate(proc, grace=STOP_GRACE, group=True, first_to_group=True)
        stdout, stderr = proc.communicate()
        return CheckResult(
            check, proc.returncode, time.monotonic() - started, stdout, stderr, f"timed out after {timeout:g}s"
        )
    except BaseException:  # interrupted: take the check down with us
        terminate(proc, grace=STOP_GRACE, group=True, first_to_group=True)
        raise
    result = CheckResult(check, proc.returncode, time.monotonic() - started, stdout, stderr)
    # 127: the shell's (or `podman exec`'s, `env`'s) code for a command it could not find.
    if proc.returncode == 127 and ("not found" in stderr or "No such file or directory" in stderr):
        result.problem = f"command not found: {stderr.strip().splitlines()[-1]}" + _missing_tool_fix(check)
    elif proc.returncode < 0:
        result.problem = f"killed by {signal.Signals(-proc.returncode).name}"
    return result


def _missing_tool_fix(check: Check) -> str:
    """For a built-in check whose tool is not installed: the two ways out."""
    if not check.built_in or check.tool is None:
        return ""
    return (
        f". Install it (`pip install {check.tool}`, where the checks run), or give the check a command of your own: "
        f'[tool.testlane.gate] commands = {{ {check.name} = "..." }}'
    )


def _tally(result: CheckResult) -> str | None:
    """A test check's counts from its digest's last line (``testlane: PASSED — 512 passed, 3 skipped``)."""
    if result.check.name not in TEST_CHECKS:
        return None
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    if not lines or not lines[-1].startswith("testlane: PASSED — "):
        return None
    return lines[-1].rsplit(" — ", 1)[1]


# --------------------------------------------------------------------------- the combined digest


@dataclass
class GateReport:
    """Every check's result, and the combined digest."""

    results: list[CheckResult]
    budget: int

    @property
    def nothing_tested(self) -> bool:
        """Test checks ran and none of them tested anything (every one's lane was empty)."""
        tests = [r for r in self.results if r.check.name in TEST_CHECKS and r.exit_code is not None]
        return bool(tests) and all(r.empty is not None for r in tests)

    @property
    def passed(self) -> bool:
        ran = [r for r in self.results if r.exit_code is not None or r.problem]
        return bool(ran) and not any(r.failed for r in self.results) and not self.nothing_tested

    def status(self, result: CheckResult) -> str:
        if result.check.skip_reason:
            return f"skipped ({result.check.skip_reason})"
        if result.empty is not None:
            return f"nothing to test ({result.empty}; {result.duration:.1f}s)"
        if result.exit_code is None and result.problem is None:
            return "not run (--fail-fast)"
        if result.problem:
            return f"FAILED: {result.problem}"
        if result.failed:
            return f"FAILED (exit {result.exit_code}, {result.duration:.1f}s)"
        tally = _tally(result)
        return f"passed ({tally}, {result.duration:.1f}s)" if tally else f"passed ({result.duration:.1f}s)"

    def _body(self, result: CheckResult) -> list[str]:
        """What a failed check said: the test digest, or the tool's output (stderr added when useful).

        Credentials are masked (:func:`~testlane.core.redact.redact`) before anything is folded.
        """
        out = [redact(line.rstrip()) for line in result.stdout.splitlines() if line.strip()]
        err = [redact(line.rstrip()) for line in result.stderr.splitlines() if line.strip()]
        is_digest = any(line.startswith("testlane: ") for line in out[-3:])
        if result.check.name in TEST_CHECKS and is_digest:
            return out
        if not out or result.problem or result.exit_code not in (0, 1):
            return out + err[-15:]
        return out

    def summary(self) -> str:
        failed = [r.check.name for r in self.results if r.failed]
        passed = [r.check.name for r in self.results if r.passed]
        skipped = [f"{r.check.name} skipped" for r in self.results if r.check.skip_reason]
        skipped += [f"{r.check.name} had nothing to test" for r in self.results if r.empty is not None]
        not_run = [
            r.check.name for r in self.results if r.exit_code is None and not r.problem and not r.check.skip_reason
        ]
        parts = []
        if failed:
            parts.append(f"{', '.join(failed)} failed")
        if passed:
            parts.append(f"{', '.join(passed)} passed")
        parts += skipped
        if not_run:
            parts.append(f"{', '.join(not_run)} not run")
        verdict = "PASSED" if self.passed else "FAILED"
        if self.nothing_tested:
            parts.append("no test ran: nothing was tested")
        return f"gate: {verdict} — {'; '.join(parts) or 'no checks'}"

    def render(self) -> str:
        """Status of every check, the output of each failed one (folded to the budget), the verdict."""
        head = [f"gate: {r.check.name}: {self.status(r)}" for r in self.results]
        summary = self.summary()
        sections: list[tuple[str, list[str]]] = [
            (f"── {r.check.name}: {r.check.command}", self._body(r)) for r in self.results if r.failed
        ]
        room = self.budget - sum(len(line) + 1 for line in [*head, summary])
        lines: list[str] = [*head]
        for index, (title, body) in enumerate(sections):
            later = len(sections) - index - 1
            allowed = max(room - later * 300, 200)
            kept, used = _fit([title, *body], allowed)
            lines += kept
            room -= used
        lines.append(summary)
        return "\n".join(lines) + "\n"


def _fit(lines: list[str], allowed: int) -> tuple[list[str], int]:
    """As many leading lines as fit in ``allowed`` characters, and the digest's summary line if any."""
    last = lines[-1] if lines and lines[-1].startswith("testlane: ") else None
    reserve = len(last) + 1 if last else 0
    kept: list[str] = []
    used = 0
    for line in lines:
        line = line if len(line) <= 400 else line[:399] + "…"
        if used + len(line) + 1 > allowed - reserve - 40:
            kept.append(f"  … {len(lines) - len(kept)} more lines (run the check's command for all of them)")
            if last is not None:
                kept.append(last)
            used = sum(len(x) + 1 for x in kept)
            return kept, used
        kept.append(line)
        used += len(line) + 1
    return kept, used


def run_gate(
    settings: Settings,
    *,
    fast: bool = False,
    exec_prefix: str | None = None,
    fail_fast: bool | None = None,
    progress: Callable[[str], None] | None = None,
) -> GateReport:
    """Run the gate's checks in order and return the report (nothing printed but ``progress``)."""
    prefix = settings.gate.exec_prefix if exec_prefix is None else exec_prefix
    stop_early = settings.gate.fail_fast if fail_fast is None else fail_fast
    results: list[CheckResult] = []
    failed = False
    for check in plan_checks(settings, fast=fast, exec_prefix=prefix):
        if check.skip_reason or (failed and stop_early):
            results.append(CheckResult(check, None))
            continue
        if progress is not None:
            progress(f"gate: {check.name}: {check.command}")
        result = run_check(check, cwd=settings.project_root, exec_prefix=prefix, timeout=settings.gate.timeout)
        results.append(result)
        failed = failed or result.failed
    return GateReport(results, settings.gate.budget)


@click.command("gate")
@click.option("--fast", is_flag=True, help="Run only `gate.fast` (lint and the unit lane).")
@pass_state
def gate_command(state: CliState, fast: bool) -> None:
    """Run the quality gate: lint, types, unit lane, integration lane; one digest, one exit code."""
    settings = state.settings()  # --exec-prefix and --fail-fast (cli.main adds them from the settings table)
    progress = None if state.quiet else (lambda message: console.print(f"[dim]{message}[/dim]"))
    report = run_gate(settings, fast=fast, progress=progress)
    sys.stdout.write(report.render())
    sys.stdout.flush()
    raise SystemExit(0 if report.passed else 1)
