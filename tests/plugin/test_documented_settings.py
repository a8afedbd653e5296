"""Every documented setting works in every form docs/configuration.md documents for it (issue 15).

The walk reads the table users read (docs/configuration.md) and, for each key, gives a valid value that is not
the default as ``[tool.testlane]`` in pyproject.toml, as its environment variable and as its option (the
dedicated flag where the table lists one, else ``--testlane-set``/``--set``), then checks the value the session
resolved: under plain pytest, and through the ``testlane`` command (``testlane --set ... run``, ``testlane run
--flag``, ``testlane gate --flag``). Nothing is started: the project has ``services = []`` and the probe test
only reads the settings.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import typing
from pathlib import Path
from typing import Any, Literal

import pytest

from testlane.core.config import OptionInfo, iter_options
from tests.helpers import clean_env, run_cli, run_inner

pytestmark = pytest.mark.timeout(180)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"

# Only where a generic sample would not be a valid value.
SAMPLES: dict[str, Any] = {
    "services": ["mariadb"],
    "log_level": "info",
    "postgres.url": "postgresql://someone@127.0.0.1:5999/postgres",
    "valkey.url": "redis://127.0.0.1:6999/0",
    "mariadb.url": "mysql://someone@127.0.0.1:3999/",
    "postgres.version": "15",
    "postgres.port": 25432,  # 0 + 1 would be a privileged port
    "valkey.port": 26379,
    "mariadb.port": 23306,
    "gate.checks": ["lint"],
    "gate.fast": ["unit"],
    "hooks.post_edit": "ruff format {file}",
}


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of the documented table."""

    key: str
    env: str
    flag: str | None  # the dedicated flag, None where the table says `--set KEY=…`
    command: str  # the command the flag belongs to: "run" (pytest and `testlane run`) or e.g. "gate"


def documented_rows() -> list[Row]:
    rows = []
    pattern = re.compile(r"^\| `([\w.]+)` \| `(TESTLANE_\w+)` \| (`[^`]+`)(?: \(`testlane (\w+)`\))? \|")
    for line in DOCS.read_text().splitlines():
        match = pattern.match(line)
        if match:
            key, env, option, command = match.groups()
            flag = None if option.startswith("`--set ") else option.strip("`")
            rows.append(Row(key, env, flag, command or "run"))
    return rows


ROWS = documented_rows()
INFO = {o.key: o for o in iter_options()}


def sample(info: OptionInfo) -> Any:
    """A valid value that is not the default: generic per type, :data:`SAMPLES` where that is invalid."""
    if info.key in SAMPLES:
        return SAMPLES[info.key]
    tp, default = info.type, info.default
    if typing.get_origin(tp) is Literal:
        return next(c for c in typing.get_args(tp) if c not in (default, ""))
    if tp is bool:
        return not default
    if tp in (int, float):
        return default + 1
    if typing.get_origin(tp) is list:
        return [f"sample-{info.key}", "second"]
    if typing.get_origin(tp) is dict:
        return {"SAMPLE_NAME": f"sample-{info.key}"}
    assert tp is str, f"no sample for {info.key} of type {tp!r}: add one to SAMPLES"
    return f"sample-{info.key}"


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)  # strings, ints, floats: JSON and TOML agree for these


def text_value(value: Any) -> str:
    """The value as an environment variable or ``--set`` writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(value)
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def option_args(row: Row, value: Any, set_option: str) -> list[str]:
    """The option form the table documents for ``row``: its flag, else ``set_option KEY=VALUE``."""
    if row.flag is None:
        return [set_option, f"{row.key}={text_value(value)}"]
    if isinstance(value, bool):
        return [row.flag if value else "--no-" + row.flag[2:]]
    return [row.flag, text_value(value)]


EXPECTED = {row.key: sample(INFO[row.key]) for row in ROWS}

PYPROJECT_HEAD = '[project]\nname = "probe"\nversion = "0"\n[tool.pytest.ini_options]\n'
PYPROJECT_HEAD += 'asyncio_default_fixture_loop_scope = "function"\n'

PROBE = """
import json, os
from testlane.pytest_plugin.optin import opted_in
from testlane.pytest_plugin.plugin import settings_for

def test_probe(request):
    settings = settings_for(request.config)
    seen = {}
    for key in json.loads(os.environ["PROBE_KEYS"]):
        if key == "opted_in":
            seen[key] = bool(opted_in(request.config))
            continue
        value = settings
        for part in key.split("."):
            value = getattr(value, part)
        seen[key] = value
    with open(os.environ["PROBE_OUT"], "w") as fh:
        json.dump(seen, fh)
"""


def pyproject(values: dict[str, Any]) -> str:
    """``[tool.testlane]`` (and its sub-tables) setting ``values``, ``services = []`` unless given."""
    tables: dict[str, list[str]] = {"": [] if "services" in values else ["services = []"]}
    for key, value in values.items():
        table, _, name = key.rpartition(".")
        tables.setdefault(table, []).append(f"{name} = {toml_value(value)}")
    out = PYPROJECT_HEAD
    for table, lines in tables.items():
        out += f"[tool.testlane{'.' + table if table else ''}]\n" + "".join(f"{line}\n" for line in lines)
    return out


@pytest.fixture
def no_testlane_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """The environment minus every setting's variable (an outer run's would beat pyproject)."""
    env = clean_env()
    # Every TESTLANE_* name, in the copy and in os.environ (which pytester's subprocesses inherit): an outer
    # `testlane run` sets some that clean_env() already dropped from the copy.
    for name in [n for n in {*env, *os.environ} if n.startswith("TESTLANE_")]:
        env.pop(name, None)
        monkeypatch.delenv(name, raising=False)
    for name in ("TESTLANE_IT", "PYTEST_ADDOPTS", "PYTEST_XDIST_WORKER"):
        monkeypatch.delenv(name, raising=False)
    env["PROBE_OUT"] = str(tmp_path / "seen.json")
    env["PROBE_KEYS"] = json.dumps(list(EXPECTED))
    monkeypatch.setenv("PROBE_OUT", env["PROBE_OUT"])
    monkeypatch.setenv("PROBE_KEYS", env["PROBE_KEYS"])
    return env


def seen_by_pytest(pytester: pytest.Pytester, env: dict[str, str], *args: str) -> dict[str, Any]:
    pytester.makepyfile(test_probe=PROBE)
    out = Path(env["PROBE_OUT"])
    out.unlink(missing_ok=True)
    result = run_inner(pytester, "-q", *args, timeout=120)
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    seen: dict[str, Any] = json.loads(out.read_text())
    return seen


def mismatches(seen: dict[str, Any], expected: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {k: (seen.get(k), v) for k, v in expected.items() if seen.get(k) != v}


def test_the_table_documents_every_setting_and_the_walk_has_a_sample_for_each() -> None:
    assert [r.key for r in ROWS] == list(INFO), "docs/configuration.md's table and the settings differ"
    for row in ROWS:
        info = INFO[row.key]
        assert EXPECTED[row.key] != info.default, row.key
        assert (row.env, row.flag, row.command) == (info.env, info.cli, info.cli_command)
    assert {"--isolation", "--keep-failed-db", "--digest-budget"} <= {r.flag for r in ROWS}


@pytest.mark.parametrize("form", ["pyproject", "environment", "option"])
def test_every_documented_key_in_every_form_under_plain_pytest(
    pytester: pytest.Pytester, no_testlane_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    args: list[str] = []
    if form == "pyproject":
        pytester.makefile(".toml", pyproject=pyproject(EXPECTED))
    else:
        pytester.makefile(".toml", pyproject=pyproject({}))
        for row in ROWS:
            value = EXPECTED[row.key]
            if form == "environment":
                monkeypatch.setenv(row.env, text_value(value))
            elif row.command == "run":  # options of other commands (testlane gate) are not pytest's
                args += option_args(row, value, "--testlane-set")
            else:
                args += ["--testlane-set", f"{row.key}={text_value(value)}"]
    seen = seen_by_pytest(pytester, no_testlane_env, *args)
    assert not mismatches(seen, EXPECTED), mismatches(seen, EXPECTED)


def test_every_documented_key_through_testlane_run(pytester: pytest.Pytester, no_testlane_env: dict[str, str]) -> None:
    """``testlane --set KEY=VALUE run`` for every key, and ``testlane run --flag`` for every flag of ``run``:
    the pytest that ``testlane run`` starts resolves the same values."""
    pytester.makefile(".toml", pyproject=pyproject({}))
    pytester.makepyfile(test_probe=PROBE)
    env = {**no_testlane_env, "TESTLANE_DATA_DIR": str(pytester.path / "data")}
    expected = {**EXPECTED, "data_dir": str(pytester.path / "data")}
    before: list[str] = []
    after: list[str] = []
    for row in ROWS:
        if row.key in ("services", "data_dir"):
            continue  # `testlane run` would start MariaDB; the data directory is the test's
        value = EXPECTED[row.key]
        if row.flag is not None and row.command == "run":
            after += option_args(row, value, "--set")
        else:
            before += ["--set", f"{row.key}={text_value(value)}"]
    expected["services"] = []
    # The relative report paths given as flags are relative to where the command runs (not the project root).
    cwd = pytester.mkdir("elsewhere")
    for key in ("reports.json_path", "reports.jsonl_path"):
        expected[key] = str(cwd / EXPECTED[key])
    expected["reports.format"] = "terminal"  # so the probe's output is pytest's own
    after = [*after, "--format", "terminal"]
    pytest_args = ["--", "-q", "-p", "no:cacheprovider", "../test_probe.py"]
    result = run_cli([*before, "run", *after, *pytest_args], cwd=cwd, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    seen = json.loads(Path(env["PROBE_OUT"]).read_text())
    assert not mismatches(seen, expected), mismatches(seen, expected)


def test_gate_options_reach_the_gates_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The documented ``testlane gate`` flags, parsed by the real command line, before and after ``--set``."""
    from testlane.cli.main import cli

    (tmp_path / "pyproject.toml").write_text(pyproject({}))
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("TESTLANE_")]:
        monkeypatch.delenv(name)
    rows = [r for r in ROWS if r.flag is not None and r.command == "gate"]
    assert rows
    args = [arg for row in rows for arg in option_args(row, EXPECTED[row.key], "--set")]
    with cli.make_context("testlane", ["gate"]) as ctx:
        command = cli.get_command(ctx, "gate")
        assert command is not None
        with command.make_context("gate", args, parent=ctx) as sub:
            state = sub.find_object(type(ctx.obj))
            assert state is not None
            settings = state.settings()
    for row in rows:
        value: Any = settings
        for part in row.key.split("."):
            value = getattr(value, part)
        assert value == EXPECTED[row.key], row.key


def test_options_beat_the_environment_which_beats_pyproject(
    pytester: pytest.Pytester, no_testlane_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One order for every way in: pyproject < TESTLANE_* < option, under plain pytest and ``testlane run`` (where
    the options travel to pytest through the environment and must still beat the variables already set)."""
    keys: dict[str, tuple[Any, Any, Any]] = {
        "db.isolation": ("schema", "transaction", "database"),
        "log_level": ("error", "debug", "info"),
    }
    keys["reports.digest_budget"] = (5, 7, 0)  # 0 is a value, not "not given"
    keys["db.keep_failed"] = (False, True, False)  # the --no- form of a true/false flag
    pytester.makefile(".toml", pyproject=pyproject({k: v[0] for k, v in keys.items()}))
    monkeypatch.setenv("PROBE_KEYS", json.dumps(list(keys)))
    no_testlane_env["PROBE_KEYS"] = json.dumps(list(keys))
    assert seen_by_pytest(pytester, no_testlane_env) == {k: v[0] for k, v in keys.items()}
    for key, values in keys.items():
        env_name = INFO[key].env
        monkeypatch.setenv(env_name, str(values[1]))
        no_testlane_env[env_name] = str(values[1])
    assert seen_by_pytest(pytester, no_testlane_env) == {k: v[1] for k, v in keys.items()}
    flags = ["--isolation", "database", "--testlane-set", "log_level=info", "--digest-budget", "0"]
    flags.append("--no-keep-failed-db")
    assert seen_by_pytest(pytester, no_testlane_env, *flags) == {k: v[2] for k, v in keys.items()}
    for where in ("before", "after"):
        sets = ["--set", "log_level=info", "--set", "db.isolation=database", "--set", "reports.digest_budget=0"]
        args = [*sets, "--set", "db.keep_failed=false", "run"] if where == "before" else ["run", *sets]
        args += ["--no-keep-failed-db"] if where == "after" else []
        result = run_cli([*args, "--", "-q", "-p", "no:cacheprovider"], cwd=pytester.path, env=no_testlane_env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert json.loads(Path(no_testlane_env["PROBE_OUT"]).read_text()) == {k: v[2] for k, v in keys.items()}
        assert "DEBUG" not in result.stderr  # testlane's own log: --set log_level=info beat TESTLANE_LOG_LEVEL


def test_a_flag_another_plugin_registered_first_is_left_to_it(
    pytester: pytest.Pytester, no_testlane_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Installing testlane changes nothing: a plugin's own ``--isolation`` keeps working (ours is skipped, no
    "conflicting option" error), and the key is still set with ``--testlane-set db.isolation=...``."""
    pytester.makefile(".toml", pyproject=pyproject({}))
    pytester.makepyfile(
        other_plugin=(
            "def pytest_addoption(parser):\n"
            "    parser.addoption('--isolation', dest='other_isolation', default='none')\n\n"
            "def pytest_report_header(config):\n"
            "    return 'other isolation: ' + config.getoption('other_isolation')\n"
        )
    )
    pytester.syspathinsert()
    monkeypatch.setenv("PROBE_KEYS", json.dumps(["db.isolation"]))
    no_testlane_env["PROBE_KEYS"] = json.dumps(["db.isolation"])
    args = ["-p", "other_plugin", "--isolation", "strict", "--testlane-set", "db.isolation=schema", "test_probe.py"]
    assert seen_by_pytest(pytester, no_testlane_env, *args) == {"db.isolation": "schema"}
    result = pytester.runpytest_subprocess("-p", "other_plugin", "--isolation", "strict", "--co", timeout=120)
    assert "other isolation: strict" in result.stdout.str()


def test_every_project_gets_the_options_and_using_one_opts_in(
    pytester: pytest.Pytester, no_testlane_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Installed, testlane registers the generated options for every project (``pytest --help`` lists them), and
    one given, even as ``--digest-budget 0``, opts the project in (issue 15: "unrecognized arguments")."""
    pytester.makefile(".toml", pyproject=PYPROJECT_HEAD)  # no [tool.testlane]
    help_text = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--help", timeout=120).stdout.str()
    for row in ROWS:
        if row.flag is not None and row.command == "run":
            assert row.flag in help_text, row.flag
    keys = json.dumps(["opted_in", "reports.digest_budget"])
    monkeypatch.setenv("PROBE_KEYS", keys)
    no_testlane_env["PROBE_KEYS"] = keys
    assert seen_by_pytest(pytester, no_testlane_env) == {"opted_in": False, "reports.digest_budget": 4000}
    seen = seen_by_pytest(pytester, no_testlane_env, "--digest-budget", "0")
    assert seen == {"opted_in": True, "reports.digest_budget": 0}


@pytest.mark.parametrize("value", ["2.0", "2000000"])
def test_a_flag_s_value_is_read_as_set_reads_it(
    pytester: pytest.Pytester, no_testlane_env: dict[str, str], value: str
) -> None:
    """A dedicated flag's value is read as ``--set``'s and the variable's are: ``--digest-budget 2.0`` was
    argparse's and click's "invalid int value" (neither the key nor what it takes), and 2000000 (no upper
    bound then) was taken. The error names the flag the user typed and how to give it (it said "command
    line" and suggested ``--set``, an option the user had not used), in pytest and in ``testlane run``;
    the same value given by ``--set`` is still reported as the command line's, with the ``--set`` fix."""
    pytester.makefile(".toml", pyproject=pyproject({}))
    pytester.makepyfile(test_probe=PROBE)
    said = f"--digest-budget: reports.digest_budget = '{value}' is "
    fix = "give --digest-budget "
    result = run_inner(pytester, "-q", "-p", "no:cacheprovider", "--digest-budget", value, timeout=120)
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == 4 and said in out and fix in out and "0 to 1000000" in out, out
    assert "--testlane-set" not in out and "command line" not in out, out
    args = ["run", "--digest-budget", value, "--", "-q", "-p", "no:cacheprovider"]
    cli = run_cli(args, cwd=pytester.path, env=no_testlane_env)
    both = cli.stderr + cli.stdout
    assert cli.returncode == 4 and said in both and fix in both and "--set" not in both, cli
    # by --set: the command line's, with each command's own option to set it (pytest knows no --set)
    said = f"command line: reports.digest_budget = '{value}' is "
    accepted = "reports.digest_budget (TESTLANE_REPORTS_DIGEST_BUDGET, or --set reports.digest_budget=...) to "
    in_pytest = accepted.replace("--set", "--testlane-set")
    result = run_inner(pytester, "-q", "-p", "no:cacheprovider", f"--testlane-set=reports.digest_budget={value}")
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == 4 and said in out and in_pytest in out, out
    cli = run_cli(
        ["run", "--set", f"reports.digest_budget={value}", "--", "-q"], cwd=pytester.path, env=no_testlane_env
    )
    assert cli.returncode == 4 and said in cli.stderr + cli.stdout and accepted in cli.stderr + cli.stdout, cli
