from __future__ import annotations

from pathlib import Path

import pytest

from testlane.core.config import iter_options, load_settings, options_table_markdown, parse_set_options
from testlane.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write_pyproject(path: Path, body: str) -> Path:
    (path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "0"\n\n' + body)
    return path


def test_defaults_without_pyproject(tmp_path: Path) -> None:
    settings = load_settings(start=tmp_path, environ={})
    assert settings.services == ["postgres", "valkey"]
    assert settings.backend == "auto"
    assert settings.postgres.backend == ""  # inherits the top-level backend
    assert settings.postgres.port == 0
    assert settings.start_timeout == 30.0


def test_precedence_default_pyproject_env_cli(tmp_path: Path) -> None:
    write_pyproject(
        tmp_path,
        '[tool.testlane]\nstart_timeout = 10\n[tool.testlane.postgres]\nbackend = "local"\nversion = "15"\n',
    )
    from_file = load_settings(start=tmp_path, environ={})
    assert (from_file.start_timeout, from_file.postgres.backend, from_file.postgres.version) == (
        10.0,
        "local",
        "15",
    )

    env = {"TESTLANE_POSTGRES_BACKEND": "embedded", "TESTLANE_START_TIMEOUT": "12.5"}
    from_env = load_settings(start=tmp_path, environ=env)
    assert (from_env.start_timeout, from_env.postgres.backend, from_env.postgres.version) == (
        12.5,
        "embedded",
        "15",
    )

    from_cli = load_settings(start=tmp_path, environ=env, overrides={"postgres.backend": "local"})
    assert from_cli.postgres.backend == "local"
    assert from_cli.start_timeout == 12.5


def test_settings_found_from_a_subdirectory(tmp_path: Path) -> None:
    write_pyproject(tmp_path, '[tool.testlane]\nservices = ["postgres"]\n')
    sub = tmp_path / "tests" / "unit"
    sub.mkdir(parents=True)
    settings = load_settings(start=sub, environ={})
    assert settings.services == ["postgres"]
    assert settings.project_root == tmp_path.resolve()


def test_explicit_falsy_values_are_kept(tmp_path: Path) -> None:
    write_pyproject(tmp_path, "[tool.testlane]\nservices = []\n[tool.testlane.discipline]\ntimeout_unit = 0\n")
    settings = load_settings(start=tmp_path, environ={})
    assert settings.services == []
    assert settings.discipline.timeout_unit == 0.0


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    write_pyproject(tmp_path, '[tool.testlane.postgres]\nbakend = "local"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(start=tmp_path, environ={})
    assert "unknown key 'postgres.bakend'" in str(info.value)
    assert "did you mean 'postgres.backend'" in str(info.value)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # fastapi template adoption: top-level keys meant for [tool.testlane.db] were "unknown" and nothing more.
        (
            '[tool.testlane]\nmigrations = "app/alembic"\n',
            "'migrations' is not a key of [tool.testlane]: move it to [tool.testlane.db] (db.migrations)",
        ),
        (
            '[tool.testlane]\nmigration = "app/alembic"\n',
            "did you mean 'migrations', in [tool.testlane.db] (db.migrations)",
        ),
        ('[tool.testlane.environment]\nDATABASE_URL = "{postgres.url}"\n', "did you mean [tool.testlane.env]?"),
        ('[tool.testlane.db]\nsetup = ["alembic upgrade head"]\n', "move it to [tool.testlane] (setup)"),
        ("[tool.testlane.lanes]\ntimeout_it = 30\n", "move it to [tool.testlane.discipline] (discipline.timeout_it)"),
        ('[tool.testlane.db]\nmigration = "migrations"\n', "did you mean 'db.migrations'?"),
    ],
)
def test_an_unknown_key_names_the_closest_known_key_and_the_table_it_belongs_to(
    tmp_path: Path, body: str, expected: str
) -> None:
    write_pyproject(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_settings(start=tmp_path, environ={})
    assert expected in str(info.value)


def test_an_unknown_override_names_where_the_key_is(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(start=tmp_path, environ={}, overrides={"migrations": "x"})
    assert "did you mean --set db.migrations=x or --set mariadb.migrations=x?" in str(info.value)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"TESTLANE_START_TIMEOUT": "soon"}, "is not a number"),
        ({"TESTLANE_POSTGRES_BACKEND": "docker"}, 'is not one of: "" (inherit), auto, embedded, local, container, url'),
        ({"TESTLANE_POSTGRES_SERVER_PORT": "5.5"}, "is not an integer"),
    ],
)
def test_bad_environment_values_name_the_variable(tmp_path: Path, env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(start=tmp_path, environ=env)
    assert expected in str(info.value)
    assert str(info.value).startswith("$TESTLANE_")


def test_env_lists_and_tables(tmp_path: Path) -> None:
    env = {"TESTLANE_SERVICES": "postgres, valkey", "TESTLANE_POSTGRES_SETTINGS": "work_mem=64MB,jit=on"}
    settings = load_settings(start=tmp_path, environ=env)
    assert settings.services == ["postgres", "valkey"]
    assert settings.postgres.settings == {"work_mem": "64MB", "jit": "on"}


def test_toml_table_values_become_strings(tmp_path: Path) -> None:
    write_pyproject(tmp_path, '[tool.testlane.postgres.settings]\nwork_mem = "8MB"\nmax_locks_per_transaction = 128\n')
    settings = load_settings(start=tmp_path, environ={})
    assert settings.postgres.settings == {"work_mem": "8MB", "max_locks_per_transaction": "128"}


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.testlane\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_settings(start=tmp_path, environ={})


def test_unknown_override_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown setting 'postgres\.bin'"):
        load_settings(start=tmp_path, environ={}, overrides={"postgres.bin": "x"})


def test_set_option_parsing() -> None:
    assert parse_set_options(["a.b=1", "c= x=y"]) == {"a.b": "1", "c": " x=y"}
    with pytest.raises(ConfigError, match="is not KEY=VALUE"):
        parse_set_options(["novalue"])


def test_every_option_has_help_and_env_name() -> None:
    options = list(iter_options())
    assert options, "no options declared"
    for option in options:
        assert option.help.strip(), option.key
        assert option.env.startswith("TESTLANE_"), option.key
    envs = [o.env for o in options]
    assert len(envs) == len(set(envs)), "two settings share an environment variable"


def test_docs_configuration_table_is_current() -> None:
    doc = (REPO / "docs" / "configuration.md").read_text()
    assert options_table_markdown() in doc, (
        "docs/configuration.md is out of date; regenerate the table with `python -m testlane.core.config`"
    )


def test_services_default_to_what_the_mapping_refers_to(tmp_path: Path) -> None:
    """Issue 14: a Redis project that maps only `{valkey.url}` gets Valkey alone, a libpq project PostgreSQL
    alone; a template to build (setup, db.migrations) needs PostgreSQL; `services` set is kept as written."""
    cases = {
        '[tool.testlane.env]\nTEST_REDIS_URL = "{redis.url}"\n': ["valkey"],
        '[tool.testlane.env]\nPGHOST = "{postgres.host}"\n': ["postgres"],
        '[tool.testlane]\nsetup = ["make db"]\n[tool.testlane.env]\nREDIS_URL = "{valkey.url}"\n': [
            "postgres",
            "valkey",
        ],
        '[tool.testlane.env]\nDB = "{mysql.url}"\nCACHE = "{valkey.url}"\n': ["valkey", "mariadb"],
        '[tool.testlane]\nservices = ["postgres", "valkey"]\n[tool.testlane.env]\nR = "{valkey.url}"\n': [
            "postgres",
            "valkey",
        ],
        "[tool.testlane]\n": ["postgres", "valkey"],
    }
    for body, services in cases.items():
        write_pyproject(tmp_path, body)
        assert load_settings(start=tmp_path, environ={}).services == services, body
    write_pyproject(tmp_path, '[tool.testlane.env]\nR = "{valkey.url}"\n')
    assert load_settings(start=tmp_path, environ={}, overrides={"services": "mariadb"}).services == ["mariadb"]


def test_join_option_values_writes_each_settings_flag_and_its_value_as_one_word() -> None:
    from testlane.core.config import join_option_values, value_flags

    assert {"--report-json", "--report-jsonl", "--digest-budget", "--isolation"} <= value_flags()
    assert "--keep-failed-db" not in value_flags()  # a flag: its next word is not its value
    args = ["-q", "--report-json", "/x/r.json", "--keep-failed-db", "tests", "--digest-budget", "900"]
    assert join_option_values(args) == [
        "-q",
        "--report-json=/x/r.json",
        "--keep-failed-db",
        "tests",
        "--digest-budget=900",
    ]
    assert join_option_values(["--report-json=/x", "--", "--report-json", "y"]) == [
        "--report-json=/x",
        "--",
        "--report-json",
        "y",
    ]
    assert join_option_values(["--report-jsonl"]) == ["--report-jsonl"]  # pytest says what is missing
