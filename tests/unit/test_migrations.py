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
