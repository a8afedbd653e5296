"""Settings are validated where they are declared, and every ``TESTLANE_*`` variable means something (issue 15,
seen 3): a misspelt variable, a ``log_level`` typo, ``start_timeout = 0.001`` or ``stop_grace = -5`` were
accepted without a word, and ``TESTLANE_IT`` was parsed by hand in three places."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from testlane.core import environment
from testlane.core.config import iter_options, load_settings
from testlane.core.errors import ConfigError
from tests.helpers import settings_error as _error
from tests.helpers import settings_project as _project

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    ("key", "toml", "text", "allowed"),
    [
        ("start_timeout", "0.001", "0.001", "from 0.1 to 3600"),
        ("stop_grace", "-5", "-5", "from 0 to 3600"),
        ("postgres.port", "70000", "70000", "from 0 to 65535"),
        ("valkey.databases", "1", "1", "from 2 to 65536"),
        ("db.pool_size", "-1", "-1", "from 0 to 64"),
        ("db.checkpoints", "17", "17", "from 0 to 16"),
        ("gate.timeout", "0", "0", "more than 0 and at most 86400"),
        ("cache_max_unused_days", "36500", "36500", "more than 0 and at most 3650"),
        ("reports.digest_budget", "-1", "-1", "from 0 to 1000000"),
    ],
)
def test_a_number_out_of_range_names_key_source_and_range_in_every_form(
    tmp_path: Path, key: str, toml: str, text: str, allowed: str
) -> None:
    option = {o.key: o for o in iter_options()}[key]
    section, _, name = key.rpartition(".")
    _project(tmp_path, (f"[tool.testlane.{section}]\n" if section else "") + f"{name} = {toml}\n")
    from_file = _error(tmp_path)
    assert f"{tmp_path / 'pyproject.toml'} [tool.testlane]: {key} = {toml}" in from_file
    _project(tmp_path)
    from_env = _error(tmp_path, env={option.env: text})
    assert from_env.startswith(f"${option.env}: {key} = '{text}'")
    from_cli = _error(tmp_path, overrides={key: text})
    assert from_cli.startswith(f"command line: {key} = '{text}'")
    for message in (from_file, from_env, from_cli):
        assert f"is out of range: it must be {allowed}." in message, message
        assert f"hint: set {key} ({option.env}, or --set {key}=...) to a value {allowed}" in message, message


def test_values_at_the_bounds_are_accepted(tmp_path: Path) -> None:
    env = {"TESTLANE_START_TIMEOUT": "0.1", "TESTLANE_STOP_GRACE": "0", "TESTLANE_POSTGRES_SERVER_PORT": "65535"}
    settings = load_settings(start=tmp_path, environ=env, overrides={"db.pool_size": "0"})
    assert (settings.start_timeout, settings.stop_grace, settings.postgres.port, settings.db.pool_size) == (
        0.1,
        0.0,
        65535,
        0,
    )


@pytest.mark.parametrize("text", ["nan", "inf", "-inf"])
def test_a_number_that_is_not_finite_is_refused(tmp_path: Path, text: str) -> None:
    assert "is not a finite number" in _error(tmp_path, env={"TESTLANE_START_TIMEOUT": text})


def test_a_fraction_is_not_quietly_truncated_to_an_integer(tmp_path: Path) -> None:
    _project(tmp_path, "[tool.testlane.postgres]\nport = 5432.5\n")
    assert "postgres.port = 5432.5 is not an integer" in _error(tmp_path)


def test_every_numeric_setting_declares_its_range() -> None:
    """Decided per setting, not left open: a new number without a range fails here. Both ends: a value past
    any sensible one (``db.checkpoints = 4000``, a timeout in milliseconds) is a typo to report, not to obey."""
    for option in iter_options():
        if option.type in (int, float):
            assert option.min is not None or option.above is not None, f"{option.key}: declare min= or above="
            assert option.max is not None, f"{option.key}: declare max= in its opt()"


SCALAR_TYPES = (int, float, bool, str)
# Texts that are also TOML literals (numbers, booleans): each may be written bare or quoted in pyproject.
TEXTS = ["4", "2.0", "5.5", "-1", "0", "1e3", "1_000", "99999999", "true", "1", "inherit", "Info", "0.05", ""]


def _scalar_options() -> list[Any]:
    return [o for o in iter_options() if o.type in SCALAR_TYPES or o.choices is not None]


def _outcome(tmp_path: Path, key: str, **source: Any) -> tuple[str, Any]:
    """("ok", the value) or ("error", the message without its source prefix and with the value unquoted)."""
    try:
        settings = load_settings(start=tmp_path, **source)
    except ConfigError as exc:
        message = str(exc).split(": ", 1)[1]  # "<source>: KEY = VALUE is ..."
        head, _, rest = message.partition(" is ")
        return "error", f"{head.split(' = ')[0]} = {{value}} is {rest}"
    value: Any = settings
    for part in key.split("."):
        value = getattr(value, part)
    return "ok", value


@pytest.mark.parametrize("option", _scalar_options(), ids=lambda o: o.key)
def test_a_value_means_the_same_from_every_source(tmp_path: Path, option: Any) -> None:
    """The same text is the same value, or the same refusal, from pyproject (bare or quoted), the variable and
    --set. ``checkpoints = 2.0`` (and ``"4"``) in pyproject were read by TOML's type while ``--set
    db.checkpoints=2.0`` was refused: 2.0 was quietly 2 in one place and an error in the other."""
    section, _, name = option.key.rpartition(".")
    header = f"[tool.testlane.{section}]\n" if section else ""
    for text in TEXTS:
        _project(tmp_path)
        from_env = _outcome(tmp_path, option.key, environ={option.env: text})
        from_set = _outcome(tmp_path, option.key, environ={}, overrides={option.key: text})
        _project(tmp_path, f"{header}{name} = {json.dumps(text)}\n")
        quoted = _outcome(tmp_path, option.key, environ={})
        assert from_env == from_set == quoted, (option.key, text)
        if text in ("", "inherit", "Info"):
            continue  # not a TOML literal
        _project(tmp_path, f"{header}{name} = {text}\n")
        bare = _outcome(tmp_path, option.key, environ={})
        if option.type in (int, float, bool):
            assert bare == from_env, (option.key, text)
        else:  # TOML keeps a number's value, not its text (15.10 is 15.1): a string setting wants quotes
            assert bare[0] == "error" and ("is not a string (quoted" in bare[1] or "is not one of" in bare[1])


@pytest.mark.parametrize(
    ("key", "text", "says"),
    [
        ("db.checkpoints", "2.0", "is not an integer"),
        ("db.checkpoints", "1000", "is out of range"),
        ("postgres.port", "5432.5", "is not an integer"),
        ("db.keep_failed", "2", "is not true or false"),
        ("start_timeout", "soon", "is not a number"),
    ],
)
def test_a_refused_value_names_the_key_its_variable_and_what_is_accepted(
    tmp_path: Path, key: str, text: str, says: str
) -> None:
    option = {o.key: o for o in iter_options()}[key]
    message = _error(tmp_path, overrides={key: text})
    assert message.startswith(f"command line: {key} = '{text}' {says}"), message
    expected = {int: "an integer", float: "a number", bool: "true or false"}[option.type]
    expected += f" {option.allowed}" if option.allowed and "range" not in says else ""
    hint = f"hint: set {key} ({option.env}, or --set {key}=...) to {'a value ' if 'range' in says else ''}"
    assert hint + (option.allowed if "range" in says else expected) in message, message


def test_a_log_level_typo_is_an_error_in_every_form(tmp_path: Path) -> None:
    _project(tmp_path, 'log_level = "warnnig"\n')
    assert "log_level = 'warnnig' is not one of: debug, info, warning, error, critical" in _error(tmp_path)
    _project(tmp_path)
    assert _error(tmp_path, env={"TESTLANE_LOG_LEVEL": "warnnig"}).startswith("$TESTLANE_LOG_LEVEL: log_level")
    assert _error(tmp_path, overrides={"log_level": "verbose"}).startswith("command line: log_level = 'verbose'")


def test_a_log_level_in_capitals_is_the_same_level(tmp_path: Path) -> None:
    assert load_settings(start=tmp_path, environ={"TESTLANE_LOG_LEVEL": "DEBUG"}).log_level == "debug"
    assert load_settings(start=tmp_path, environ={}, overrides={"log_level": "Info"}).log_level == "info"


# --------------------------------------------------------------------------- variables


def test_a_misspelt_variable_is_an_error_that_suggests_the_right_one(tmp_path: Path) -> None:
    message = _error(tmp_path, env={"TESTLANE_POSTGRES_BACKND": "local"})
    assert message.startswith(
        "$TESTLANE_POSTGRES_BACKND (did you mean $TESTLANE_POSTGRES_BACKEND?) is not a testlane variable."
    )
    assert "docs/configuration.md" in message
    several = _error(tmp_path, env={"TESTLANE_STRAT_TIMEOUT": "5", "TESTLANE_ITT": "1"})
    assert "$TESTLANE_ITT (did you mean $TESTLANE_IT?), $TESTLANE_STRAT_TIMEOUT (did you mean " in several
    assert "are not testlane variables" in several


def test_variables_testlane_exports_are_accepted_and_are_not_settings(tmp_path: Path) -> None:
    """What `testlane run` and `eval "$(testlane services env)"` put in the environment: the port of the running
    server is not a request for that port (it was `postgres.port`'s variable)."""
    exported = {
        "TESTLANE_IT": "1",
        "TESTLANE_RUN_ID": "0a1b2c3d",
        "TESTLANE_OWNER_PID": "1",
        "TESTLANE_SERVICES_FILE": "/tmp/x/services.json",
        "TESTLANE_CHOSEN_DATA_ROOT": "/dev/shm/testlane-0",
        "TESTLANE_POSTGRES_URL": "postgresql://postgres:pw@127.0.0.1:41234/postgres",
        "TESTLANE_POSTGRES_HOST": "127.0.0.1",
        "TESTLANE_POSTGRES_PORT": "41234",
        "TESTLANE_POSTGRES_USER": "postgres",
        "TESTLANE_POSTGRES_PASSWORD": "pw",
        "TESTLANE_REDIS_URL": "redis://:pw@127.0.0.1:41235/0",
        "TESTLANE_VALKEY_URL": "redis://:pw@127.0.0.1:41235/0",
        "TESTLANE_REDIS_HOST": "127.0.0.1",
        "TESTLANE_REDIS_PORT": "41235",
        "TESTLANE_MARIADB_URL": "mysql://root@127.0.0.1:41236/",
        "TESTLANE_MARIADB_HOST": "127.0.0.1",
        "TESTLANE_MARIADB_PORT": "41236",
        "TESTLANE_MARIADB_USER": "root",
        "TESTLANE_REPORTS_FORMAT": "digest",
        "TESTLANE_RERUN_PREFIX": "testlane run --",
        "TESTLANE_REPORTED_FILE": "/tmp/x/reported",
        "TESTLANE_CI_CONTAINERS": "0",
    }
    settings = load_settings(start=tmp_path, environ=exported)
    assert (settings.postgres.port, settings.mariadb.port) == (0, 0)
    requested = {"TESTLANE_POSTGRES_SERVER_PORT": "5433", "TESTLANE_MARIADB_SERVER_PORT": "3307"}
    settings = load_settings(start=tmp_path, environ={**exported, **requested})
    assert (settings.postgres.port, settings.mariadb.port) == (5433, 3307)


def test_names_the_project_maps_are_accepted(tmp_path: Path) -> None:
    _project(tmp_path, '[tool.testlane.env]\nTESTLANE_APP_DB = "{postgres.url}"\n')
    assert load_settings(start=tmp_path, environ={"TESTLANE_APP_DB": "postgresql://x"}).env


def test_no_declared_variable_is_also_a_setting_variable() -> None:
    settings_vars = {o.env for o in iter_options()}
    assert not settings_vars & environment.declared_names()


def test_every_testlane_variable_in_the_repository_is_a_setting_or_declared() -> None:
    """A variable set or read anywhere (code, docs, scripts, CI, examples) is one load_settings accepts: a new
    one that is neither would make every opted-in project's run fail as "not a testlane variable"."""
    known = {o.env for o in iter_options()} | environment.declared_names()
    # Deliberately wrong, in docs/configuration.md's examples of the error.
    examples_of_mistakes = {"TESTLANE_POSTGRES_BACKND", "TESTLANE_PG_BACKEND"}
    found: dict[str, str] = {}
    roots = [REPO / "src", REPO / "docs", REPO / "scripts", REPO / "examples", REPO / "bench", REPO / ".ci"]
    files = [REPO / "Makefile", REPO / "README.md"]
    for root in roots:
        files += [p for p in root.rglob("*") if p.is_file() and p.suffix not in (".pyc", ".png", ".svg")]
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        for name in re.findall(r"\bTESTLANE_[A-Z0-9_]*[A-Z0-9]\b", text):
            found.setdefault(name, str(path.relative_to(REPO)))
    unknown = {name: where for name, where in found.items() if name not in known | examples_of_mistakes}
    assert not unknown, f"declare these in testlane.core.environment.VARIABLES (or fix them): {unknown}"


def test_the_guard_s_child_variables_are_the_declared_ones() -> None:
    """testlane.services.egress spells them out (a child Python loads it by file path, without testlane)."""
    from testlane.services import egress

    assert (egress.ALLOW_ENV, egress.REPORT_ENV) == (environment.EGRESS_ALLOW, environment.EGRESS_REPORT)


def test_docs_list_the_variables_that_are_not_settings() -> None:
    doc = (REPO / "docs" / "configuration.md").read_text()
    assert environment.variables_table_markdown() in doc, (
        "docs/configuration.md is out of date; regenerate the table with `python -m testlane.core.environment`"
    )


# --------------------------------------------------------------------------- TESTLANE_IT


@pytest.mark.parametrize(
    ("value", "on"),
    [("1", True), ("true", True), ("Yes", True), (" on ", True), ("0", False), ("off", False), ("", False)],
)
def test_testlane_it_truth_values(value: str, on: bool) -> None:
    assert environment.integration_lane_from_env({"TESTLANE_IT": value}) is on
    assert environment.integration_lane_from_env({}) is False


def test_testlane_it_that_is_neither_true_nor_false_is_an_error_everywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match=r"\$TESTLANE_IT = 'maybe' is neither true nor false"):
        environment.integration_lane_from_env({"TESTLANE_IT": "maybe"})
    assert "hint: set TESTLANE_IT=1" in _error(tmp_path, env={"TESTLANE_IT": "maybe"})
    from testlane.core.runenv import RunEnv
    from testlane.databases.guard import current_lane, in_integration_lane

    monkeypatch.setenv("TESTLANE_IT", "maybe")
    token = current_lane.set(None)  # as outside pytest: the variable decides, and it must say something
    try:
        with pytest.raises(ConfigError, match="neither true nor false"):
            in_integration_lane(RunEnv.current())
    finally:
        current_lane.reset(token)
