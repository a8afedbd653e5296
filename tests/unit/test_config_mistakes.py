"""A fresh user's configuration mistakes each get the right answer (cfg21): a key in the wrong table or a misspelt
table is pointed at the table it belongs to, whatever the source (pyproject.toml, ``--set``, a variable); a number
is read as TOML writes a decimal number, from every source (Python's ``int()`` took ``1__0`` and ``٣``); a
``TESTLANE_CONFIG`` that names no file is an error that names it, not a silent fall-back."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from testlane.core import config
from testlane.core.config import iter_options, load_settings
from testlane.core.errors import ConfigError
from tests.helpers import settings_error as _error
from tests.helpers import settings_project as _project

# --------------------------------------------------------------------------- suggestions

# What is written in pyproject.toml -> what the message must say. A key is looked for by its last part in every
# table (`migrations` is db's, not postgres's: its `scram_iterations` was suggested), and a table by its name
# (`database` is `db`: valkey's `databases` was suggested), its aliases (`redis` is `valkey`) and what it holds.
PYPROJECT_MISTAKES = [
    (
        '[tool.testlane.postgres]\nmigrations = "migrations"\n',
        "'migrations' is not a key of [tool.testlane.postgres]: move it to [tool.testlane.db] (db.migrations)",
    ),
    ('[tool.testlane.database]\nmigrations = "migrations"\n', "did you mean [tool.testlane.db]?"),
    ('[tool.testlane.database]\nisolation = "transaction"\n', "did you mean [tool.testlane.db]?"),
    ("[tool.testlane.database]\n", "did you mean [tool.testlane.db]?"),
    ('[tool.testlane.pg]\nbackend = "local"\n', "did you mean [tool.testlane.postgres]?"),
    ('[tool.testlane.postgresql]\nversion = "15"\n', "did you mean [tool.testlane.postgres]?"),
    ("[tool.testlane.redis]\nport = 6390\n", "did you mean [tool.testlane.valkey]?"),
    ('[tool.testlane.mysql]\nbinary = "/usr/sbin/mariadbd"\n', "did you mean [tool.testlane.mariadb]?"),
    ('[tool.testlane.report]\nformat = "digest"\n', "did you mean [tool.testlane.reports]?"),
    ('[tool.testlane.postgres.setings]\nwork_mem = "64MB"\n', "did you mean [tool.testlane.postgres.settings]?"),
    ('[tool.testlane.environment]\nDATABASE_URL = "{postgres.url}"\n', "did you mean [tool.testlane.env]?"),
    # A key of a sibling service (valkey.binary) does not beat this service's own spelling of it.
    ('[tool.testlane.postgres]\nbinary = "/usr/bin"\n', "did you mean 'postgres.bin_dir'?"),
    (
        '[tool.testlane.postgres]\nisolation = "transaction"\n',
        "move it to [tool.testlane.db] (db.isolation).",
    ),
    (
        "[tool.testlane.valkey]\nmax_connections = 10\n",
        "move it to [tool.testlane.postgres] (postgres.max_connections)",
    ),
    ("checkpoints = 3\n", "move it to [tool.testlane.db] (db.checkpoints)"),
    ("[tool.testlane.db]\ncheckpoint = 3\n", "did you mean 'db.checkpoints'?"),
    ("[tool.testlane.lanes]\ntimeout_it = 30\n", "move it to [tool.testlane.discipline] (discipline.timeout_it)"),
]


@pytest.mark.parametrize(("body", "expected"), PYPROJECT_MISTAKES)
def test_a_misplaced_or_misspelt_key_in_pyproject_is_pointed_at_its_table(
    tmp_path: Path, body: str, expected: str
) -> None:
    _project(tmp_path, body)
    message = _error(tmp_path)
    assert expected in message, message


def test_an_unknown_table_is_called_a_table(tmp_path: Path) -> None:
    _project(tmp_path, '[tool.testlane.database]\nmigrations = "migrations"\n')
    assert "unknown table [tool.testlane.database]." in _error(tmp_path)


# `--set KEY=VALUE` -> the --set to type instead (issue: `--set checkpoints=3` said "move it to [tool.testlane.db]").
SET_MISTAKES = [
    ("checkpoints", "3", "did you mean --set db.checkpoints=3?"),
    ("db.checkpoint", "3", "did you mean --set db.checkpoints=3?"),
    ("postgres.migrations", "m", "did you mean --set db.migrations=m?"),
    ("migrations", "m", "did you mean --set db.migrations=m or --set mariadb.migrations=m?"),
    ("database.isolation", "transaction", "did you mean --set db.isolation=transaction?"),
    ("pg.backend", "local", "did you mean --set postgres.backend=local?"),
    ("redis.port", "6390", "did you mean --set valkey.port=6390?"),
    ("lanes.timeout_it", "30", "did you mean --set discipline.timeout_it=30?"),
]


@pytest.mark.parametrize(("key", "value", "expected"), SET_MISTAKES)
def test_an_unknown_set_key_suggests_the_set_to_type(tmp_path: Path, key: str, value: str, expected: str) -> None:
    message = _error(tmp_path, overrides={key: value})
    assert message.startswith(f"command line: unknown setting {key!r}."), message
    assert expected in message, message


def test_pytest_s_set_option_is_the_one_suggested(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(start=tmp_path, environ={}, overrides={"checkpoints": "3"}, set_option="--testlane-set")
    assert "did you mean --testlane-set db.checkpoints=3?" in str(info.value)


VARIABLE_MISTAKES = [
    ("TESTLANE_CHECKPOINTS", "$TESTLANE_DB_CHECKPOINTS"),
    ("TESTLANE_POSTGRES_MIGRATIONS", "$TESTLANE_DB_MIGRATIONS"),
    ("TESTLANE_DATABASE_MIGRATIONS", "$TESTLANE_DB_MIGRATIONS"),
    ("TESTLANE_PG_BACKEND", "$TESTLANE_POSTGRES_BACKEND"),
    ("TESTLANE_POSTGRES_BACKND", "$TESTLANE_POSTGRES_BACKEND"),
    ("TESTLANE_REPORT_FORMAT", "$TESTLANE_REPORTS_FORMAT"),
]


@pytest.mark.parametrize(("variable", "expected"), VARIABLE_MISTAKES)
def test_a_misspelt_variable_suggests_the_setting_s_variable(tmp_path: Path, variable: str, expected: str) -> None:
    message = _error(tmp_path, env={variable: "1"})
    assert message.startswith(f"${variable} (did you mean {expected}"), message


# --------------------------------------------------------------------------- numbers


# Texts Python's int()/float() take (or TOML does not) but a setting must not: underscores not between two digits,
# other scripts' digits, base prefixes.
MALFORMED = [
    ("db.checkpoints", "1__0", "is not an integer"),
    ("db.checkpoints", "_10", "is not an integer"),
    ("db.checkpoints", "10_", "is not an integer"),
    ("db.checkpoints", "\u0663", "is not an integer"),  # ARABIC-INDIC DIGIT THREE: int() reads 3
    ("db.checkpoints", "0x4", "is not an integer"),
    ("db.checkpoints", "4 4", "is not an integer"),
    ("start_timeout", "1__0", "is not a number"),
    ("start_timeout", "1_.5", "is not a number"),
    ("start_timeout", "\u0665.\u0665", "is not a number"),
    ("start_timeout", "5 s", "is not a number"),
    ("db.reuse", "garbage", "is not true or false"),
    ("db.reuse", "2", "is not true or false"),
    ("postgres.settings", "=64MB", "is not a table"),
    ("postgres.settings", "work_mem=64MB,work_mem=8MB", "is not a table"),
]


@pytest.mark.parametrize(("key", "text", "says"), MALFORMED)
def test_a_malformed_value_is_refused_from_every_source(tmp_path: Path, key: str, text: str, says: str) -> None:
    option = {o.key: o for o in iter_options()}[key]
    section, _, name = key.rpartition(".")
    _project(tmp_path)
    from_env = _error(tmp_path, env={option.env: text})
    from_set = _error(tmp_path, overrides={key: text})
    header = f"[tool.testlane.{section}]\n" if section else ""
    quoted = text.replace("\\", "\\\\").replace('"', '\\"')
    _project(tmp_path, f'{header}{name} = "{quoted}"\n')
    from_file = _error(tmp_path)
    for message in (from_env, from_set, from_file):
        assert f"{key} = {text!r} {says}" in message, message
    assert from_env.startswith(f"${option.env}: ") and from_set.startswith("command line: ")


@pytest.mark.parametrize(("key", "toml", "value"), [("db.checkpoints", "1_0", 10), ("start_timeout", "1_0.5", 10.5)])
def test_a_number_with_toml_s_underscores_means_the_same_bare_quoted_and_in_a_variable(
    tmp_path: Path, key: str, toml: str, value: Any
) -> None:
    """TOML reads ``checkpoints = 1_0`` as 10: a variable's, ``--set``'s and a quoted ``1_0`` are read alike."""
    option = {o.key: o for o in iter_options()}[key]
    section, _, name = key.rpartition(".")
    header = f"[tool.testlane.{section}]\n" if section else ""

    def read(**source: Any) -> Any:
        found: Any = load_settings(start=tmp_path, **source)
        for part in key.split("."):
            found = getattr(found, part)
        return found

    values = []
    for body in (f"{header}{name} = {toml}\n", f'{header}{name} = "{toml}"\n'):
        _project(tmp_path, body)
        values.append(read(environ={}))
    _project(tmp_path)
    values += [read(environ={option.env: toml}), read(environ={}, overrides={key: toml})]
    assert values == [value] * 4


@pytest.mark.parametrize(
    ("key", "text", "value"),
    [
        ("db.checkpoints", "10", 10),
        ("db.checkpoints", " 4\n", 4),
        ("db.checkpoints", "+4", 4),
        ("start_timeout", "1e1", 10.0),
        ("start_timeout", ".5", 0.5),
        ("start_timeout", "-0", None),  # out of range: read as a number, then refused for its range
        ("db.reuse", " Yes ", True),
    ],
)
def test_well_formed_values_are_read_alike_from_every_source(tmp_path: Path, key: str, text: str, value: Any) -> None:
    option = {o.key: o for o in iter_options()}[key]

    def read(**source: Any) -> Any:
        try:
            settings = load_settings(start=tmp_path, **source)
        except ConfigError as exc:
            assert "out of range" in str(exc), exc
            return None
        found: Any = settings
        for part in key.split("."):
            found = getattr(found, part)
        return found

    _project(tmp_path)
    assert read(environ={option.env: text}) == value
    assert read(environ={}, overrides={key: text}) == value


def test_a_table_of_tables_is_not_a_table_of_values(tmp_path: Path) -> None:
    _project(tmp_path, '[tool.testlane.postgres.settings]\nwork_mem = { size = "64MB" }\n')
    assert "postgres.settings" in _error(tmp_path) and "is not a table" in _error(tmp_path)


# --------------------------------------------------------------------------- TESTLANE_CONFIG


def test_testlane_config_naming_no_file_is_an_error_that_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "pyproject.toml"
    _project(tmp_path)
    message = _error(tmp_path, env={"TESTLANE_CONFIG": str(missing)})
    assert message.startswith(f"$TESTLANE_CONFIG names {missing}, which does not exist."), message
    assert "hint:" in message and "TESTLANE_CONFIG" in message.split("hint:")[1]
    with pytest.raises(ConfigError, match=r"\$TESTLANE_CONFIG names .*, which does not exist"):
        config.testlane_table_file(tmp_path, {"TESTLANE_CONFIG": str(missing)})


def test_testlane_config_naming_a_device_says_it_is_no_regular_file(tmp_path: Path) -> None:
    """Found by a fresh user: ``TESTLANE_CONFIG=/dev/null`` was said not to exist."""
    _project(tmp_path)
    message = _error(tmp_path, env={"TESTLANE_CONFIG": os.devnull})
    assert message.startswith(f"$TESTLANE_CONFIG names {os.devnull}, which is not a regular file."), message


def test_testlane_config_naming_a_folder_says_which_file_to_name(tmp_path: Path) -> None:
    _project(tmp_path)
    message = _error(tmp_path, env={"TESTLANE_CONFIG": str(tmp_path)})
    assert f"$TESTLANE_CONFIG names {tmp_path}, which is a folder" in message, message
    assert str(tmp_path / "pyproject.toml") in message


def test_testlane_config_naming_a_file_that_is_not_toml_is_an_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[tool.testlane\n")
    with pytest.raises(ConfigError, match=r"\$TESTLANE_CONFIG names .*broken\.toml, which is not valid TOML"):
        config.testlane_table_file(tmp_path, {"TESTLANE_CONFIG": str(broken)})


def test_the_config_option_naming_no_file_names_the_option(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError) as info:
        load_settings(start=tmp_path, environ={}, config_file=missing)
    assert str(info.value).startswith(f"--config {missing}: the file does not exist."), info.value


# --------------------------------------------------------------------------- services, checked before a run


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"postgres.backend": "url"}, 'postgres.backend is "url" but postgres.url is empty.'),
        ({"postgres.url": "mysql://root@127.0.0.1:3306/"}, "does not look like a postgres URL"),
        ({"services": "postgres,s3", "s3.url": "http://127.0.0.1:9"}, 's3.backend is "url" but s3.access_key is empty'),
        ({"valkey.backend": "embedded", "services": "redis,mariadb", "mariadb.backend": "embedded"}, "no embedded"),
        ({"db.migrations": "nowhere"}, "db.migrations: "),
    ],
)
def test_the_services_settings_are_checked_without_starting_anything(
    tmp_path: Path, overrides: dict[str, str], says: str
) -> None:
    """What pytest-xdist's controller runs before its workers start (they start the services): the errors a start
    would meet for the settings alone, here, once."""
    from testlane.databases.provision import check_services

    settings = load_settings(start=_project(tmp_path), environ={}, overrides={"services": "postgres", **overrides})
    with pytest.raises(ConfigError) as info:
        check_services(settings, settings.services)
    assert says in str(info.value), info.value
    assert not list(tmp_path.glob("**/state")), "nothing is written"


def test_well_configured_services_pass_the_check_by_their_canonical_names(tmp_path: Path) -> None:
    from testlane.databases.provision import check_services

    settings = load_settings(start=_project(tmp_path), environ={}, overrides={"postgres.url": "postgresql://a@h/d"})
    assert check_services(settings, ["postgresql", "redis"]) == ["postgres", "valkey"]


# --------------------------------------------------------------------------- secrets


@pytest.mark.parametrize(
    ("source", "key"),
    [
        ("set", "s3.secret"),  # unknown: the suggestion is the secret's key
        ("set", "s3.secretkey"),
        ("set", "s3_secret_key"),
        ("set", "s3.secret_key"),  # known, refused: not a string
        ("toml", "s3.secret_key"),
        ("env", "s3.secret_ke"),
    ],
)
def test_a_secret_typed_wrongly_is_never_echoed(tmp_path: Path, source: str, key: str) -> None:
    """Found by a fresh user: ``--set s3.secret=SECRETPW11`` hinted ``did you mean --set s3.secret_key=SECRETPW11?``
    and ``secret_key = 12345678`` (a TOML number) was quoted back in its error."""
    secret = "12345678"  # bare in TOML: a number, refused for a string setting
    if source == "toml":
        _project(tmp_path, f"[tool.testlane.s3]\nsecret_key = {secret}\n")
        message = _error(tmp_path)
    elif source == "env":  # a misspelt variable holding the secret
        _project(tmp_path)
        message = _error(tmp_path, env={"TESTLANE_S3_SERVER_SECRET_KE": secret})
    else:
        _project(tmp_path)
        message = _error(tmp_path, overrides={key: 12345678 if key == "s3.secret_key" else secret})
    assert secret not in message, message
    assert "***" in message or "secret_key" in message.lower(), message


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ("[tools.testlane]\nservices = []\n", "[tools.testlane]"),
        ("[tool.testlane_db]\nisolation = 'transaction'\n", "[tool.testlane_db]"),
        ("[tool.test-lane]\nservices = []\n", "[tool.test-lane]"),
        ("[tool.testlanes]\nservices = []\n", "[tool.testlanes]"),
    ],
)
def test_a_misspelt_root_table_is_named_not_ignored(tmp_path: Path, body: str, named: str) -> None:
    """Found by a fresh user: ``[tools.testlane]`` was silently ignored (`testlane run` ran with the defaults)."""
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "0"\n' + body)
    message = _error(tmp_path)
    assert f"has {named}: testlane reads [tool.testlane] only" in message, message
    assert f"rename {named} to [tool.testlane]" in message, message


def test_other_tools_tables_are_no_testlane_table(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.ruff]\nline-length = 1\n[tool.pytest.ini_options]\naddopts = ""\n')
    load_settings(start=tmp_path, environ={})  # no [tool.testlane], nothing close: the defaults, no error


def test_an_unknown_key_in_a_sub_table_names_the_table_it_is_written_in(tmp_path: Path) -> None:
    """Found by a fresh user: ``[tool.testlane.db] checkpoint`` was reported in ``[tool.testlane]`` only."""
    _project(tmp_path, "[tool.testlane.db]\ncheckpoint = 3\n")
    assert "unknown key 'db.checkpoint' (`checkpoint` in [tool.testlane.db])." in _error(tmp_path)
