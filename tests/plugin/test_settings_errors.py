"""A bad setting or a misspelt ``TESTLANE_*`` variable stops ``testlane`` (exit 4) and an opted-in plain pytest
(a usage error) with one message and no traceback; a project that has not opted in never sees them (issue 15,
seen 3). Runs the real CLI and pytest in projects with no services, so nothing is started."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.helpers import clean_env, inner_pyproject, run_cli, run_inner

pytestmark = pytest.mark.timeout(120)


TEST = "def test_ok():\n    pass\n"

# (extra pyproject lines, extra variables, extra `testlane` arguments) -> what the one message says
CASES = {
    "misspelt variable": (
        "",
        {"TESTLANE_POSTGRES_BACKND": "local"},
        [],
        "$TESTLANE_POSTGRES_BACKND (did you mean $TESTLANE_POSTGRES_BACKEND?) is not a testlane variable.",
    ),
    "log_level typo": (
        'log_level = "warnnig"',
        {},
        [],
        "log_level = 'warnnig' is not one of: debug, info, warning, error, critical.",
    ),
    "start_timeout from --set": (
        "",
        {},
        ["--set", "start_timeout=0.001"],
        "command line: start_timeout = '0.001' is out of range: it must be from 0.1 to 3600.",
    ),
    "stop_grace from the environment": (
        "",
        {"TESTLANE_STOP_GRACE": "-5"},
        [],
        "$TESTLANE_STOP_GRACE: stop_grace = '-5' is out of range: it must be from 0 to 3600.",
    ),
    "TESTLANE_IT=maybe": ("", {"TESTLANE_IT": "maybe"}, [], "$TESTLANE_IT = 'maybe' is neither true nor false."),
}


def _project(root: Path, extra: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(inner_pyproject(services="[]", testlane=extra))
    (root / "test_ok.py").write_text(TEST)
    return root


@pytest.mark.parametrize("case", list(CASES))
def test_the_testlane_command_exits_4_with_one_message(tmp_path: Path, case: str) -> None:
    extra, variables, args, expected = CASES[case]
    root = _project(tmp_path / "project", extra)
    result = run_cli([*args, "run", "--", "-q", "-p", "no:cacheprovider"], cwd=root, env=clean_env(variables))
    assert result.returncode == 4, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "testlane: configuration error: " in result.stderr and expected in result.stderr, result.stderr
    assert result.stderr.count("configuration error") == 1, result.stderr
    assert "hint:" in result.stderr
    assert "passed" not in result.stdout  # pytest never ran


@pytest.mark.usefixtures("plain_env")
@pytest.mark.parametrize("case", [c for c, (_, _, args, _) in CASES.items() if not args])
def test_plain_pytest_in_an_opted_in_project_shows_one_clean_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    extra, variables, _, expected = CASES[case]
    pytester.makefile(".toml", pyproject=inner_pyproject(services="[]", testlane=extra))
    pytester.makepyfile(test_ok=TEST)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    result = run_inner(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    err = result.stderr.str()
    assert "ERROR: testlane: " in err and expected in err, err
    assert "Traceback" not in err and err.count("ERROR: testlane:") == 1, err


@pytest.mark.usefixtures("plain_env")
def test_plain_pytest_checks_testlane_set_like_the_command(pytester: pytest.Pytester) -> None:
    """`--set` given to pytest (``--testlane-set``) is checked like the command's."""
    pytester.makefile(".toml", pyproject=inner_pyproject(services="[]"))
    pytester.makepyfile(test_ok=TEST)
    result = run_inner(pytester, "--testlane-set", "stop_grace=-5")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "stop_grace = '-5' is out of range: it must be from 0 to 3600." in result.stderr.str()


@pytest.mark.usefixtures("plain_env")
def test_a_project_that_did_not_opt_in_never_reads_testlane_variables(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makefile(".toml", pyproject='[project]\nname = "plain"\nversion = "0"\n')
    pytester.makepyfile(test_ok=TEST)
    monkeypatch.setenv("TESTLANE_POSTGRES_BACKND", "local")
    monkeypatch.setenv("TESTLANE_STOP_GRACE", "-5")
    run_inner(pytester).assert_outcomes(passed=1)


@pytest.mark.usefixtures("plain_env")
def test_testlane_it_that_is_neither_true_nor_false_is_an_error_even_before_opting_in(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``TESTLANE_IT`` is itself a way to opt in: ``maybe`` cannot be decided either way, so it is said, not
    guessed (a project that has not opted in and does not set it never sees this)."""
    pytester.makefile(".toml", pyproject='[project]\nname = "plain"\nversion = "0"\n')
    pytester.makepyfile(test_ok=TEST)
    monkeypatch.setenv("TESTLANE_IT", "maybe")
    result = run_inner(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "ERROR: testlane: $TESTLANE_IT = 'maybe' is neither true nor false." in err and "Traceback" not in err


def test_the_documented_configuration_errors_are_what_testlane_prints(tmp_path: Path) -> None:
    """docs/configuration.md's console examples of configuration errors, run as written."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    examples = re.findall(r"```console\n\$ (.+)\n((?:(?!```).*\n)+)```", doc)
    examples = [(command, output) for command, output in examples if "configuration error" in output]
    assert len(examples) >= 2, examples
    for number, (written, output) in enumerate(examples):
        # `$ testlane run   # with `key = value` under [tool.testlane]`: that line in the project's pyproject.toml
        command, _, comment = written.partition("#")
        line = re.search(r"with `(.+)` under \[tool\.testlane\]", comment)
        root = _project(tmp_path / f"project{number}", line.group(1) + "\n" if line else "")
        words = shlex.split(command)
        variables = dict(w.split("=", 1) for w in words if re.fullmatch(r"[A-Z_]+=.*", w))
        args = [w for w in words if not re.fullmatch(r"[A-Z_]+=.*", w)]
        assert args[0] == "testlane", written
        result = run_cli([*args[1:], "--", "-q"], cwd=root, env=clean_env(variables))
        assert result.returncode == 4, written
        # The docs shorten with "..." (the rest of a line) and name the project's file as `pyproject.toml`.
        pattern = re.escape(output.strip()).replace(re.escape("..."), "[^\n]*")
        pattern = pattern.replace(re.escape("pyproject.toml ["), "(?:[^\n ]*/)?" + re.escape("pyproject.toml ["))
        assert re.fullmatch(pattern, result.stderr.strip()), (written, result.stderr)
