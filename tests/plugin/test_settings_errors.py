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


# ----------------------------------------------------------------------------- cfg21: a fresh user's mistakes

THREE_TESTS = {
    "test_a_it.py": "def test_one(postgres):\n    pass\n\ndef test_two(postgres):\n    pass\n\n"
    "def test_three(postgres):\n    pass\n",
}
NO_URL = 'postgres.backend is "url" but postgres.url is empty.'


def _once(output: str, text: str) -> None:
    assert output.count(text) == 1, output
    assert "Traceback" not in output, output


@pytest.mark.usefixtures("plain_env")
@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["plain", "xdist"])
def test_a_configuration_error_of_a_configured_service_stops_pytest_it_once(
    pytester: pytest.Pytester, workers: list[str]
) -> None:
    """`pytest --it` with `postgres.backend = "url"` and no URL: one usage error for the run (exit 4), as
    `testlane run` says it, not the same error at every test that uses Postgres."""
    pytester.makefile(
        ".toml",
        pyproject=inner_pyproject(services='["postgres"]', testlane='[tool.testlane.postgres]\nbackend = "url"'),
    )
    pytester.makepyfile(**{name.removesuffix(".py"): text for name, text in THREE_TESTS.items()})
    result = run_inner(pytester, "--it", *workers)
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, output
    _once(output, NO_URL)
    assert "ERROR: testlane: " in result.stderr.str(), output
    assert "test_one" not in output and "passed" not in output, output


@pytest.mark.usefixtures("plain_env")
def test_a_configuration_error_met_by_a_test_stops_the_run_there(pytester: pytest.Pytester) -> None:
    """A service no setting names, started when a test asks for it: the first test that needs it says what is
    wrong, and the run stops there (exit 4) instead of failing every other test with the same message."""
    pytester.makefile(
        ".toml", pyproject=inner_pyproject(services="[]", testlane='[tool.testlane.postgres]\nbackend = "url"')
    )
    pytester.makepyfile(**{name.removesuffix(".py"): text for name, text in THREE_TESTS.items()})
    result = run_inner(pytester, "--it")
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, output
    _once(output, NO_URL)
    assert "test_two" not in output and "test_three" not in output, output
    assert "testlane: configuration error" in output, output


@pytest.mark.usefixtures("plain_env")
@pytest.mark.parametrize("lane", [[], ["--it"]], ids=["unit lane", "integration lane"])
@pytest.mark.parametrize("opted_in", [True, False], ids=["opted in", "not opted in"])
def test_testlane_config_naming_no_file_is_one_error_in_every_lane(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, lane: list[str], opted_in: bool
) -> None:
    """``TESTLANE_CONFIG=/nonexistent`` was silently ignored by a plain pytest (the file it names decides whether
    the project opted in, and a missing file opted nothing in). Like ``TESTLANE_IT=maybe``, it is the user's own
    word to testlane that cannot be followed: said, opted in or not."""
    pytester.makefile(
        ".toml",
        pyproject=inner_pyproject(services="[]") if opted_in else '[project]\nname = "plain"\nversion = "0"\n',
    )
    pytester.makepyfile(test_ok=TEST)
    missing = pytester.path / "nowhere" / "pyproject.toml"
    monkeypatch.setenv("TESTLANE_CONFIG", str(missing))
    result = run_inner(pytester, *lane)
    err = result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + err
    _once(err, f"ERROR: testlane: $TESTLANE_CONFIG names {missing}, which does not exist.")
    assert "passed" not in result.stdout.str()


def test_testlane_run_with_testlane_config_naming_no_file_says_so(tmp_path: Path) -> None:
    root = _project(tmp_path / "project")
    missing = tmp_path / "nowhere.toml"
    result = run_cli(["run", "--", "-q"], cwd=root, env=clean_env({"TESTLANE_CONFIG": str(missing)}))
    assert result.returncode == 4, result.stdout + result.stderr
    _once(result.stderr, f"testlane: configuration error: $TESTLANE_CONFIG names {missing}, which does not exist.")


def test_a_set_key_without_its_table_suggests_the_set_to_type(tmp_path: Path) -> None:
    root = _project(tmp_path / "project")
    result = run_cli(["--set", "checkpoints=3", "run", "--", "-q"], cwd=root, env=clean_env())
    assert result.returncode == 4, result.stdout + result.stderr
    _once(result.stderr, "did you mean --set db.checkpoints=3?")


@pytest.mark.usefixtures("plain_env")
def test_pytest_s_set_option_suggests_itself(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", pyproject=inner_pyproject(services="[]"))
    pytester.makepyfile(test_ok=TEST)
    result = run_inner(pytester, "--testlane-set", "checkpoints=3")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    _once(result.stderr.str(), "did you mean --testlane-set db.checkpoints=3?")


# ------------------------------------------------------------------ once21: a service that cannot start, said once

SIX_TESTS = {
    "test_a_it": "".join(f"def test_{n}(postgres):\n    pass\n\n\n" for n in ("one", "two", "three", "four")),
    "test_b_it": "def test_five(postgres):\n    pass\n\n\ndef test_six(postgres):\n    pass\n",
}
UNREACHABLE = (
    'start_timeout = 1\n[tool.testlane.postgres]\nbackend = "url"\nurl = "postgresql://someone:s3cretpw@127.0.0.1:1/x"'
)
DID_NOT_ANSWER = "the existing postgres server at postgresql://someone:***@127.0.0.1:1/x did not answer"


@pytest.mark.usefixtures("plain_env")
@pytest.mark.parametrize("services", ['["postgres"]', "[]"], ids=["configured", "on demand"])
@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["plain", "xdist"])
def test_a_service_that_cannot_start_stops_pytest_it_once(
    pytester: pytest.Pytester, workers: list[str], services: str
) -> None:
    """`pytest --it` with an existing server that does not answer: the first test that needs it says so, the run
    stops there and exits 3, as `testlane run` does when it cannot start a service: not the same error (and its
    wait) at every test that uses Postgres. The password stays masked."""
    pytester.makefile(".toml", pyproject=inner_pyproject(services=services, testlane=UNREACHABLE))
    pytester.makepyfile(**SIX_TESTS)
    result = run_inner(pytester, "--it", "-rA", *workers)
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == 3, output
    _once(output, DID_NOT_ANSWER)
    assert "s3cretpw" not in output, output
    assert "testlane: a service could not be started (above): the run stops here" in output, output
    assert "pytest crashed" not in output and "INTERNALERROR" not in output, output
    assert "xdist.dsession.Interrupted" not in output, output  # the last line says why, not xdist's class
    if not workers:
        assert "test_two" not in output and "test_six" not in output, output


@pytest.mark.usefixtures("plain_env")
def test_the_digest_says_a_service_could_not_be_started(pytester: pytest.Pytester) -> None:
    """Exit 3 is testlane's, as under `testlane run`: the verdict says a service could not be started, not that
    pytest crashed."""
    pytester.makefile(".toml", pyproject=inner_pyproject(testlane=UNREACHABLE))
    pytester.makepyfile(**SIX_TESTS)
    result = run_inner(pytester, "--it", "--digest")
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == 3, output
    assert "testlane: FAILED — a service could not be started — 1 error" in output, output
    assert output.rstrip().endswith("(exit 3)"), output
    assert "s3cretpw" not in output and "crashed" not in output, output


@pytest.mark.usefixtures("plain_env")
@pytest.mark.parametrize(
    ("args", "variables"),
    [
        (["--testlane-set", "db.checkpoints=0x4"], {}),
        ([], {"TESTLANE_DB_CHECKPOINTS": "0x4"}),
    ],
    ids=["--testlane-set", "variable"],
)
def test_pytest_s_hints_name_pytest_s_option(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, args: list[str], variables: dict[str, str]
) -> None:
    """Inside pytest, a hint that names the command-line option names pytest's (`--testlane-set`): pytest
    knows no `--set`."""
    for key, value in variables.items():
        monkeypatch.setenv(key, value)
    pytester.makefile(".toml", pyproject=inner_pyproject(services="[]"))
    pytester.makepyfile(test_ok=TEST)
    result = run_inner(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    _once(result.stderr.str(), "(TESTLANE_DB_CHECKPOINTS, or --testlane-set db.checkpoints=...)")
    assert " --set " not in result.stderr.str(), result.stderr.str()


@pytest.mark.usefixtures("plain_env")
def test_pytest_s_set_option_that_is_not_key_value_shows_pytest_s_spelling(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", pyproject=inner_pyproject(services="[]"))
    pytester.makepyfile(test_ok=TEST)
    result = run_inner(pytester, "--testlane-set", "nonsense")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    _once(result.stderr.str(), "--testlane-set 'nonsense' is not KEY=VALUE.")
    _once(result.stderr.str(), "write e.g. --testlane-set postgres.backend=local")


def test_the_testlane_command_s_hints_name_set(tmp_path: Path) -> None:
    root = _project(tmp_path / "project")
    result = run_cli(["--set", "db.checkpoints=0x4", "run", "--", "-q"], cwd=root, env=clean_env())
    assert result.returncode == 4, result.stdout + result.stderr
    _once(result.stderr, "(TESTLANE_DB_CHECKPOINTS, or --set db.checkpoints=...)")
    result = run_cli(["--set", "nonsense", "run", "--", "-q"], cwd=root, env=clean_env())
    assert result.returncode == 4, result.stdout + result.stderr
    _once(result.stderr, "write e.g. --set postgres.backend=local")
