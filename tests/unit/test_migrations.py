"""Migration sources: choosing the kind, ordering, fingerprints (no database involved)."""

from __future__ import annotations

from pathlib import Path

import pytest

from testlane.core.errors import ConfigError
from testlane.databases.migrations import AlembicMigrations, SqlFolder, Target, source_from_spec
from testlane.databases.template import TemplateSpec


def test_sql_files_apply_in_natural_order(tmp_path: Path) -> None:
    for name in ("10_last.sql", "2_second.sql", "1_first.sql"):
        (tmp_path / name).write_text("select 1;")
    assert [p.name for p in SqlFolder(tmp_path).files()] == ["1_first.sql", "2_second.sql", "10_last.sql"]


def test_fingerprint_follows_content_not_time(tmp_path: Path) -> None:
    (tmp_path / "001.sql").write_text("create table a(id int);")
    first = SqlFolder(tmp_path).fingerprint()
    (tmp_path / "001.sql").write_text("create table a(id int);")
    assert SqlFolder(tmp_path).fingerprint() == first
    (tmp_path / "001.sql").write_text("create table a(id bigint);")
    assert SqlFolder(tmp_path).fingerprint() != first


def test_template_name_depends_on_server_version(tmp_path: Path) -> None:
    (tmp_path / "001.sql").write_text("create table a(id int);")
    spec = TemplateSpec((SqlFolder(tmp_path),))
    assert spec.name("15.4") != spec.name("18.1")
    assert spec.name("15.4").startswith("tl_tpl_")


def test_kind_is_guessed_from_the_value(tmp_path: Path) -> None:
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "001.sql").write_text("create table a(id int);")
    assert isinstance(source_from_spec("migrations", root=tmp_path), SqlFolder)
    alembic = tmp_path / "alembic"
    (alembic / "versions").mkdir(parents=True)
    (alembic / "env.py").write_text("")
    (tmp_path / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s/alembic\n")
    source = source_from_spec("alembic.ini", root=tmp_path)
    assert isinstance(source, AlembicMigrations)
    assert source.script_location == alembic


def test_missing_migration_folder_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        source_from_spec("nowhere", root=tmp_path)


def test_bad_object_spec_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot import 'no_such_module_xyz'"):
        source_from_spec("no_such_module_xyz:metadata", root=tmp_path)


def test_schema_target_urls() -> None:
    target = Target("postgresql://postgres@127.0.0.1:5432/tl_x", schema="tl_s_1")
    assert target.sqlalchemy_url() == (
        "postgresql+psycopg://postgres@127.0.0.1:5432/tl_x?options=-csearch_path%3Dtl_s_1%2Cpublic"
    )


def _keys(spec: TemplateSpec) -> list[str]:
    return [step.key for step in spec.steps()]


def test_steps_share_keys_exactly_as_far_as_their_content_is_shared(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    for n in range(1, 5):
        (folder / f"{n:03d}.sql").write_text(f"create table t{n}(id int);")
    before = _keys(TemplateSpec((SqlFolder(folder),)))
    assert len(before) == 4 and len(set(before)) == 4
    (folder / "003.sql").write_text("create table t3(id bigint);")
    after = _keys(TemplateSpec((SqlFolder(folder),)))
    assert after[:2] == before[:2] and not set(after[2:]) & set(before)
    (folder / "005.sql").write_text("create table t5(id int);")
    assert _keys(TemplateSpec((SqlFolder(folder),)))[:4] == after
    # What comes before the first step is in every key.
    assert not set(_keys(TemplateSpec((SqlFolder(folder),), extensions=("pg_trgm",)))) & set(after)
    assert not set(_keys(TemplateSpec((SqlFolder(folder),), env=(("DATABASE_URL", "{postgres.url}"),)))) & set(after)


def test_an_alembic_history_is_one_step_per_revision_and_env_py_is_in_each(tmp_path: Path) -> None:
    versions = tmp_path / "alembic" / "versions"
    versions.mkdir(parents=True)
    (tmp_path / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s/alembic\n")
    (tmp_path / "alembic" / "env.py").write_text("# env\n")
    for n in (1, 2, 3):
        down = f'"{n - 1:04d}"' if n > 1 else "None"
        (versions / f"{n:04d}_r.py").write_text(f'revision = "{n:04d}"\ndown_revision = {down}\ndef upgrade(): pass\n')
    source = AlembicMigrations(tmp_path / "alembic.ini")
    assert [rev for rev, _ in source.chain() or []] == ["0001", "0002", "0003"]
    first = source.step_keys()
    assert len(first) == 3
    (versions / "0003_r.py").write_text('revision = "0003"\ndown_revision = "0002"\ndef upgrade(): return 3\n')
    edited = AlembicMigrations(tmp_path / "alembic.ini").step_keys()
    assert edited[:2] == first[:2] and edited[2] != first[2]
    (tmp_path / "alembic" / "env.py").write_text("# env, edited\n")
    assert not set(AlembicMigrations(tmp_path / "alembic.ini").step_keys()) & set(edited)
    # A branch: the whole project is one step.
    (versions / "0004_b.py").write_text('revision = "0004"\ndown_revision = "0002"\ndef upgrade(): pass\n')
    branched = AlembicMigrations(tmp_path / "alembic.ini", revision="0003")
    assert branched.chain() is None and branched.step_keys() == [branched.fingerprint()]


def test_the_alembic_history_is_read_without_importing_the_revision_files(tmp_path: Path) -> None:
    """Found on mealie: its revision files import the project's settings, which, imported before the build
    applied [tool.testlane.env], cached a SQLite URL that env.py then migrated. The chain is read from the
    files' text; a revision file is only imported by Alembic, inside the build."""
    versions = tmp_path / "alembic" / "versions"
    versions.mkdir(parents=True)
    (tmp_path / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s/alembic\n")
    (tmp_path / "alembic" / "env.py").write_text("# env\n")
    marker = tmp_path / "imported"
    side_effect = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('yes')\n"
    (versions / "__init__.py").write_text("")
    (versions / "0001_a.py").write_text(
        side_effect + 'revision: str = "0001"\ndown_revision: str | None = None\ndef upgrade(): pass\n'
    )
    (versions / "0002_b.py").write_text(side_effect + 'revision = "0002"\ndown_revision = "0001"\n')
    source = AlembicMigrations(tmp_path / "alembic.ini")
    assert [rev for rev, _ in source.chain() or []] == ["0001", "0002"]
    assert len(source.step_keys()) == 2
    assert not marker.exists(), "a revision file was imported to read the history"
    assert [rev for rev, _ in AlembicMigrations(tmp_path / "alembic.ini", revision="0001").chain() or []] == ["0001"]
    # What the text does not say plainly (a merge's tuple, a computed id): the project is one step.
    (versions / "0003_m.py").write_text('revision = "0003"\ndown_revision = ("0001", "0002")\n')
    assert AlembicMigrations(tmp_path / "alembic.ini").chain() is None
    (versions / "0003_m.py").write_text('import uuid\nrevision = uuid.uuid4().hex\ndown_revision = "0002"\n')
    assert AlembicMigrations(tmp_path / "alembic.ini").chain() is None
    assert not marker.exists()


def test_the_template_follows_the_environment_mapping(tmp_path: Path) -> None:
    """Found on a real project: with `POSTGRES_PORT = "{postgres.port}"` removed from [tool.testlane.env], the
    template built with it was reused (its snapshot's key left the mapping out) and the tests went on to the
    app's default, a developer's server on 5432; a build with the new mapping is refused by the build's guard."""
    (tmp_path / "001.sql").write_text("create table a(id int);")
    mapped = (("POSTGRES_SERVER", "{postgres.host}"), ("POSTGRES_PORT", "{postgres.port}"))
    with_port = TemplateSpec((SqlFolder(tmp_path),), env=mapped)
    without_port = TemplateSpec((SqlFolder(tmp_path),), env=mapped[:1])
    assert with_port.fingerprint("18.1") != without_port.fingerprint("18.1")
    assert with_port.name("18.1") != without_port.name("18.1")
    assert with_port.fingerprint("18.1") == TemplateSpec((SqlFolder(tmp_path),), env=mapped).fingerprint("18.1")


def _raised(code: str) -> BaseException:
    try:
        exec(code, {"os": __import__("os")})
    except BaseException as exc:  # the exception with its traceback, as a build sees it
        return exc
    raise AssertionError("did not raise")


def test_a_failure_reading_the_environment_or_settings_is_told_apart_from_any_other() -> None:
    """What decides "map it in [tool.testlane.env]" over "fix the migration" (mealie's env.py)."""
    from testlane.databases.migrations import settings_failure

    missing = _raised("os.environ['TL_SURELY_UNSET_VARIABLE']")
    assert settings_failure(missing) == "the environment variable TL_SURELY_UNSET_VARIABLE is not set"
    wrapped = _raised(
        "try:\n    os.environ['TL_SURELY_UNSET_VARIABLE']\nexcept KeyError as e:\n    raise RuntimeError('x') from e"
    )
    assert settings_failure(wrapped) == "the environment variable TL_SURELY_UNSET_VARIABLE is not set"
    improperly = _raised("class ImproperlyConfigured(Exception): pass\nraise ImproperlyConfigured('Set SECRET_KEY')")
    assert settings_failure(improperly) == "the app's settings are incomplete (ImproperlyConfigured: Set SECRET_KEY)"
    assert settings_failure(_raised("{}['TL_SURELY_UNSET_VARIABLE']")) is None  # a dict's KeyError: code's
    assert settings_failure(_raised("1 / 0")) is None


def test_a_setup_command_that_died_reading_the_environment_is_told_apart() -> None:
    from testlane.databases.migrations import settings_failure_in_output

    died = (
        "Traceback (most recent call last):\n"
        '  File "/src/app/settings.py", line 3, in <module>\n'
        '    SECRET = os.environ["APP_SECRET"]\n'
        '  File "/usr/lib/python3.12/os.py", line 714, in __getitem__\n'
        "    raise KeyError(key) from None\n"
        "KeyError: 'APP_SECRET'\n"
    )
    assert settings_failure_in_output(died) == "the environment variable APP_SECRET is not set"
    frozen = died.replace("/usr/lib/python3.12/os.py", "<frozen os>")  # as a standard interpreter prints it
    assert settings_failure_in_output(frozen) == "the environment variable APP_SECRET is not set"
    pydantic = "pydantic_core._pydantic_core.ValidationError: 1 validation error for Settings\nsecret\n  Field required"
    assert settings_failure_in_output(pydantic) is not None
    assert settings_failure_in_output("KeyError: 'orders'\n") is None
    assert settings_failure_in_output('psycopg.errors.UndefinedTable: relation "x" does not exist') is None


def test_a_metadata_module_whose_settings_lack_a_variable_is_a_config_error_naming_the_env_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`db.migrations = "app.models:metadata"` whose import reads settings: a KeyError with a traceback before."""
    from testlane.databases.migrations import load_object

    (tmp_path / "tl_app_needing_a_secret.py").write_text(
        "import os\nSECRET = os.environ['TL_APP_SECRET']\nmetadata = 1\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("TL_APP_SECRET", raising=False)
    with pytest.raises(ConfigError) as info:
        load_object("tl_app_needing_a_secret:metadata", what="db.migrations")
    assert "the environment variable TL_APP_SECRET is not set" in str(info.value)
    assert "[tool.testlane.env]" in str(info.value)


def _alembic_project(root: Path, *, ini_at: str | None, env_py: str = "") -> Path:
    """An Alembic folder at app/alembic (the fastapi template's layout), its ini at ``ini_at`` if given."""
    folder = root / "app" / "alembic"
    (folder / "versions").mkdir(parents=True)
    (folder / "env.py").write_text(env_py)
    if ini_at is not None:
        (root / ini_at).write_text("[alembic]\nscript_location = app/alembic\n")
    return folder


def test_an_alembic_folder_uses_the_projects_ini_that_names_it(tmp_path: Path) -> None:
    """fastapi template: db.migrations = "app/alembic" ran env.py without the ini beside app/, and its
    `assert config.config_file_name` failed as "fix the migration"."""
    folder = _alembic_project(tmp_path, ini_at="alembic.ini")
    source = source_from_spec("app/alembic", root=tmp_path)
    assert isinstance(source, AlembicMigrations)
    assert source.ini == tmp_path / "alembic.ini"
    assert source.script_location == folder
    assert source._config(None).config_file_name == str(tmp_path / "alembic.ini")


def test_an_ini_naming_another_folder_is_not_used(tmp_path: Path) -> None:
    _alembic_project(tmp_path, ini_at=None)
    (tmp_path / "alembic.ini").write_text("[alembic]\nscript_location = other\n")
    source = source_from_spec("app/alembic", root=tmp_path)
    assert isinstance(source, AlembicMigrations)
    assert source.ini is None


def test_a_folder_without_sql_files_is_a_configuration_error(tmp_path: Path) -> None:
    """It was "sql folder (0 files)": an empty template, found later as the seed's missing table."""
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "README.md").write_text("not SQL")
    with pytest.raises(ConfigError) as info:
        source_from_spec("migrations", root=tmp_path)
    assert str(info.value).startswith("db.migrations: migrations holds no .sql files")
    assert "point db.migrations at a folder of .sql files, an alembic.ini" in str(info.value)


REVISION = 'from alembic import op\n\nrevision = "0001"\ndown_revision = None\n\n\ndef upgrade() -> None:\n    pass\n'


@pytest.mark.parametrize(("ini_at", "use"), [("alembic.ini", "alembic.ini"), (None, "app/alembic")])
def test_a_folder_of_alembic_revisions_names_the_ini_or_folder_to_use(
    tmp_path: Path, ini_at: str | None, use: str
) -> None:
    """fastapi template: db.migrations = "app/alembic/versions" built an empty schema; the seed then failed with
    `relation "user" does not exist`."""
    folder = _alembic_project(tmp_path, ini_at=ini_at)
    (folder / "versions" / "0001_initial.py").write_text(REVISION)
    with pytest.raises(ConfigError) as info:
        source_from_spec("app/alembic/versions", root=tmp_path)
    message = str(info.value)
    assert message.startswith("db.migrations: app/alembic/versions holds Alembic revision files (1 .py")
    assert f'db.migrations = "{use}"' in message
    for kind in ("auto", "sql"):
        with pytest.raises(ConfigError, match="holds Alembic revision files"):
            source_from_spec("app/alembic/versions", root=tmp_path, kind=kind)


def test_a_seed_or_migration_can_be_one_sql_file(tmp_path: Path) -> None:
    """docs/isolation.md's `db.seed = ["tests/fixtures/seed.sql"]` was refused ("migration folder ... does not
    exist", found by a fresh user): one .sql file is a source of one step; another file is refused by name."""
    from testlane.core.config import load_settings

    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "001.sql").write_text("create table t(id int);")
    (tmp_path / "tests" / "fixtures").mkdir(parents=True)
    seed = tmp_path / "tests" / "fixtures" / "seed.sql"
    seed.write_text("insert into t values (1);")
    (tmp_path / "pyproject.toml").write_text(
        '[tool.testlane.db]\nmigrations = "migrations"\nseed = ["tests/fixtures/seed.sql"]\n'
    )
    spec = TemplateSpec.from_settings(load_settings(start=tmp_path, environ={}))
    (source,) = spec.seed
    assert source.files() == [seed] and len(source.step_keys()) == 1
    first = spec.fingerprint("18.1")
    seed.write_text("insert into t values (2);")
    assert TemplateSpec.from_settings(load_settings(start=tmp_path, environ={})).fingerprint("18.1") != first
    assert source_from_spec("migrations/001.sql", root=tmp_path).files() == [tmp_path / "migrations" / "001.sql"]
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match=r"notes\.txt is a file but not a \.sql file"):
        SqlFolder(tmp_path / "notes.txt")
