"""Migration sources, templates, the pool and the guard, on a real server (the run's Postgres)."""

from __future__ import annotations

import textwrap
import threading
import uuid
from pathlib import Path

import pytest

from testlane import db
from testlane.core.errors import ConfigError, ExtensionMissingError, LaneError, MigrationError, UnsafeDatabaseError
from testlane.databases.guard import current_lane
from testlane.databases.migrations import CallableMigrations, MetadataMigrations, SqlFolder
from testlane.databases.pool import ClonePool
from testlane.databases.postgres_engine import PostgresDatabaseEngine
from testlane.databases.template import TemplateSpec, ensure_template, template_state


def sql_spec(tmp_path: Path, *files: tuple[str, str]) -> TemplateSpec:
    folder = tmp_path / "migrations"
    folder.mkdir(exist_ok=True)
    for name, text in files:
        (folder / name).write_text(textwrap.dedent(text))
    return TemplateSpec((SqlFolder(folder),))


def test_sql_folder_template_is_built_once_and_marked(postgres, tmp_path: Path) -> None:
    spec = sql_spec(tmp_path, ("001_items.sql", "CREATE TABLE items (id serial PRIMARY KEY, name text);"))
    name = ensure_template(postgres, spec)
    assert ensure_template(postgres, spec) == name
    with postgres.connect() as admin:
        assert template_state(admin, name) == "ready"
        row = admin.execute("SELECT datallowconn FROM pg_database WHERE datname = %s", (name,)).fetchone()
        assert row == (False,)


def test_a_changed_migration_file_means_a_new_template(postgres, tmp_path: Path) -> None:
    spec = sql_spec(tmp_path, ("001.sql", "CREATE TABLE a (id int);"))
    first = ensure_template(postgres, spec)
    changed = sql_spec(tmp_path, ("001.sql", "CREATE TABLE a (id int, extra text);"))
    second = ensure_template(postgres, changed)
    assert first != second
    with db.database(postgres, migrations=str(tmp_path / "migrations")) as clone, clone.connect() as conn:
        cols = [
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'a' ORDER BY 1"
            ).fetchall()
        ]
    assert cols == ["extra", "id"]


def test_half_built_template_is_dropped_and_rebuilt(postgres, tmp_path: Path) -> None:
    from psycopg import sql

    spec = sql_spec(tmp_path, ("001.sql", "CREATE TABLE t (id int);"))
    name = spec.name(postgres.version)
    with postgres.connect() as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))  # a crash mid-build
        assert template_state(admin, name) == "partial"
    assert ensure_template(postgres, spec) == name
    with postgres.connect() as admin:
        assert template_state(admin, name) == "ready"


def test_broken_migration_names_file_line_statement_and_error(postgres, tmp_path: Path) -> None:
    spec = sql_spec(
        tmp_path,
        ("001_ok.sql", "CREATE TABLE ok (id int);"),
        (
            "002_broken.sql",
            """\
            CREATE TABLE users (id int);

            INSERT INTO users (id, nme) VALUES (1, 'x');
            """,
        ),
    )
    with pytest.raises(MigrationError) as info:
        ensure_template(postgres, spec)
    message = str(info.value)
    assert "002_broken.sql" in message
    assert "line 3" in message
    assert "INSERT INTO users (id, nme)" in message
    assert 'column "nme" of relation "users" does not exist' in message
    with postgres.connect() as admin:
        assert template_state(admin, spec.name(postgres.version)) == "missing"  # nothing half-built left


def test_extensions_are_created_and_missing_ones_are_named(postgres, tmp_path: Path) -> None:
    spec = TemplateSpec(extensions=("pg_trgm",))
    with db.database(postgres, migrations=[], extensions=["pg_trgm"]) as clone, clone.connect() as conn:
        assert conn.execute("SELECT similarity('testlane', 'testlane')").fetchone() == (1.0,)
    assert ensure_template(postgres, spec)
    with postgres.connect() as conn:
        available = {r[0] for r in conn.execute("SELECT name FROM pg_available_extensions")}
    if "uuid-ossp" in available:
        pytest.skip("these binaries ship uuid-ossp")
    with pytest.raises(ExtensionMissingError) as info:
        ensure_template(postgres, TemplateSpec(extensions=("uuid-ossp",)))
    assert "uuid-ossp" in str(info.value)
    # The server runs on `auto`, which never saw this spec's extensions (a template given in code): the hint
    # names an installation that ships them, to be declared, or says that none does (issue 15, seen 7).
    assert 'backend = "auto"' not in str(info.value)
    assert 'ships them: declare them in [tool.testlane] (extensions = ["uuid-ossp"]' in str(info.value) or (
        'backend "auto" found no binaries on this machine that ship them' in str(info.value)
    )


def test_missing_extension_in_a_migration_is_named(postgres, tmp_path: Path) -> None:
    with postgres.connect() as conn:
        available = {r[0] for r in conn.execute("SELECT name FROM pg_available_extensions")}
    if "uuid-ossp" in available:
        pytest.skip("these binaries ship uuid-ossp")
    spec = sql_spec(tmp_path, ("001.sql", 'CREATE EXTENSION IF NOT EXISTS "uuid-ossp";'))
    with pytest.raises(ExtensionMissingError) as info:
        ensure_template(postgres, spec)
    assert "001.sql" in str(info.value)
    assert "'uuid-ossp' extension" in str(info.value)


def test_alembic_metadata_and_callable_sources(postgres, tmp_path: Path) -> None:
    import sqlalchemy as sa

    project = tmp_path / "alembic_project"
    versions = project / "alembic" / "versions"
    versions.mkdir(parents=True)
    (project / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s/alembic\n")
    (project / "alembic" / "env.py").write_text(
        textwrap.dedent("""
        from alembic import context
        from sqlalchemy import engine_from_config, pool

        config = context.config
        connectable = engine_from_config(config.get_section(config.config_ini_section), prefix="sqlalchemy.",
                                         poolclass=pool.NullPool)
        with connectable.connect() as connection:
            context.configure(connection=connection)
            with context.begin_transaction():
                context.run_migrations()
        """)
    )
    (versions / "0001_notes.py").write_text(
        textwrap.dedent("""
        revision = "0001"
        down_revision = None
        from alembic import op
        import sqlalchemy as sa

        def upgrade():
            op.create_table("notes", sa.Column("id", sa.Integer, primary_key=True), sa.Column("body", sa.Text))
        """)
    )
    with db.database(postgres, migrations=str(project / "alembic.ini")) as clone, clone.connect() as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == ("0001",)
        conn.execute("INSERT INTO notes (body) VALUES ('hello')")

    metadata = sa.MetaData()
    sa.Table("widgets", metadata, sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.Text))
    source = MetadataMigrations("test:metadata", metadata)
    with db.database(postgres, migrations=source) as clone, clone.connect() as conn:
        assert conn.execute("SELECT count(*) FROM widgets").fetchone() == (0,)

    def migrate(conn):  # type: ignore[no-untyped-def]
        conn.execute("CREATE TABLE from_callable (id int)")

    with db.database(postgres, migrations=CallableMigrations("test:migrate", migrate)) as clone, clone.connect() as c:
        assert c.execute("SELECT to_regclass('from_callable') IS NOT NULL").fetchone() == (True,)


def test_alembic_env_that_ignores_the_given_url_is_reported(postgres, tmp_path: Path) -> None:
    project = tmp_path / "rogue"
    (project / "alembic" / "versions").mkdir(parents=True)
    (project / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s/alembic\n")
    (project / "alembic" / "env.py").write_text("from alembic import context\n")  # connects nowhere
    with pytest.raises(MigrationError, match="no alembic_version table"):
        ensure_template(postgres, TemplateSpec((db.spec(migrations=str(project / "alembic.ini")).migrations[0],)))


def test_guard_refuses_outside_the_lane_and_foreign_servers(postgres) -> None:
    token = current_lane.set("unit")
    try:
        with pytest.raises(LaneError, match="unit lane"), db.database(postgres):
            pass
    finally:
        current_lane.reset(token)
    with (
        pytest.raises(UnsafeDatabaseError, match="not a Postgres server testlane knows"),
        db.database("postgresql://postgres@127.0.0.1:5432/postgres"),
    ):
        pass
    from testlane.databases.naming import require_testlane_database

    with pytest.raises(UnsafeDatabaseError, match="refusing to use database 'myapp'"):
        require_testlane_database("myapp")
    # A URL of a server testlane started is accepted.
    with db.database(postgres.url) as clone:
        assert clone.name.startswith("tl_")


def test_pool_under_load_degrades_to_on_demand_clones(postgres, tmp_path: Path) -> None:
    spec = sql_spec(tmp_path, ("001.sql", "CREATE TABLE t (id serial PRIMARY KEY);"))
    template = ensure_template(postgres, spec)
    pool = ClonePool(PostgresDatabaseEngine(postgres), template, run_id="0badf00d", worker="load", size=1, workers=1)
    pool.start()
    got: list[str] = []
    errors: list[BaseException] = []

    def take() -> None:
        try:
            lease = pool.acquire(wait=0.0)
            got.append(lease.name)
        except BaseException as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    try:
        threads = [threading.Thread(target=take) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    finally:
        pool.close()
    assert errors == []
    assert len(set(got)) == 8
    assert pool.stats.on_demand > 0


def test_pool_connections_come_with_warm_caches_and_reset_databases_stay_exact(postgres, tmp_path: Path) -> None:
    spec = sql_spec(tmp_path, ("001.sql", "CREATE TABLE t (id serial PRIMARY KEY, name text NOT NULL);"))
    template = ensure_template(postgres, spec)
    pool = ClonePool(
        PostgresDatabaseEngine(postgres),
        template,
        run_id="0badf00d",
        worker="warm",
        size=1,
        workers=1,
        drop_at_close=True,
    )
    # An index's relcache entry shows as a memory context named after it once the backend has opened it.
    loaded = "SELECT count(*) FROM pg_backend_memory_contexts WHERE ident = 't_pkey'"
    held = []
    try:
        pool.start()
        lease = pool.acquire(wait=5.0)
        assert lease.conn is not None
        with lease.connection(lambda: pytest.fail("no connection opened ahead")) as conn:
            assert conn.execute(loaded).fetchone() == (1,)  # warmed before the test
            conn.execute("INSERT INTO t (name) VALUES ('written')")
            conn.commit()
        assert lease.conn is conn  # handed back: the reset reuses it
        pool.release(lease)
        for _ in range(5):  # the fresh clone that refilled the pool may come first
            lease = pool.acquire(wait=5.0)
            held.append(lease)
            if lease.reused:
                break
        assert lease.reused and pool.stats.reused_truncated == 1, pool.stats
        assert lease.conn is not None
        with lease.connection(lambda: pytest.fail("no connection opened ahead")) as conn:
            assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
            assert conn.execute("INSERT INTO t (name) VALUES ('again') RETURNING id").fetchone() == (1,)
            conn.rollback()
    finally:
        for lease in held:
            pool.release(lease)
        pool.close()


def test_pools_of_one_process_never_name_two_clones_alike(postgres, tmp_path: Path) -> None:
    # A session holds a pool per template, and testlane.db helpers make their own, all with the
    # same run id and worker name: their clone names must not collide.
    templates = []
    for table in ("a", "b"):
        (tmp_path / table).mkdir()
        templates.append(
            ensure_template(postgres, sql_spec(tmp_path / table, ("001.sql", f"CREATE TABLE {table} (id int);")))
        )
    pools = [
        ClonePool(
            PostgresDatabaseEngine(postgres, preconnect=False),
            template,
            run_id="0badf00d",
            worker="twin",
            size=0,
            drop_at_close=True,
        )
        for template in templates
    ]
    leases = []
    try:
        for pool in pools:
            pool.start()
            leases += [(pool, pool.acquire()) for _ in range(2)]
        assert len({lease.name for _, lease in leases}) == 4
    finally:
        for pool, lease in leases:
            pool.release(lease)
        for pool in pools:
            pool.close()


def test_transaction_helper_rolls_back_commits(postgres, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "1.sql").write_text("CREATE TABLE t (id int);")
    with db.transaction(postgres, migrations=str(folder)) as conn:
        conn.execute("INSERT INTO t VALUES (1)")
        conn.commit()
        conn.execute("INSERT INTO t VALUES (2)")
        conn.rollback()  # back to the last "commit", not to the start
        assert conn.execute("SELECT array_agg(id) FROM t").fetchone() == ([1],)
        name = conn.info.dbname
    with postgres.connect() as admin:
        assert admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None


def test_schema_helper_migrates_into_a_throwaway_schema(postgres, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "1.sql").write_text("CREATE TABLE things (id int);")
    with db.schema(postgres, migrations=str(folder)) as schema_db:
        with schema_db.connect() as conn:
            conn.execute("INSERT INTO things VALUES (1)")
            conn.commit()
            row = conn.execute("SELECT table_schema FROM information_schema.tables WHERE table_name = 'things'")
            assert row.fetchone() == (schema_db.schema,)
        database, schema = schema_db.database, schema_db.schema
    with postgres.connect() as admin:
        assert admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is None
    assert schema.startswith("tl_s_")


def test_redis_helper_leases_a_flushed_database(valkey) -> None:
    with db.redis(valkey) as first, db.redis(valkey) as second:
        assert first.db != second.db and 0 not in (first.db, second.db)
        first.client().set("k", "v")
        assert second.client().get("k") is None
        lease_db = first.db
    client = valkey.client(db=lease_db)
    assert client.dbsize() == 0
    assert valkey.client().get(f"testlane:lease:{lease_db}") is None


ENV_NEEDING_INI = """\
from alembic import context

config = context.config
assert config.config_file_name  # the user's env.py; the fastapi template's calls fileConfig(config.config_file_name)
context.configure(connection=config.attributes["connection"], target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
"""

REVISION = """\
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.execute("CREATE TABLE {table} (id serial PRIMARY KEY)")
"""


def test_an_alembic_folder_whose_env_needs_the_ini_uses_it_or_says_to_name_it(postgres, tmp_path: Path) -> None:
    """db.migrations = "app/alembic" (docs/configuration.md accepts the folder): the env.py read
    config.config_file_name, None without the ini, and failed as "fix the migration"."""
    from testlane.databases.migrations import source_from_spec

    table = f"t_{uuid.uuid4().hex[:12]}"  # its own template (a fingerprint no other run shares)
    folder = tmp_path / "app" / "alembic"
    (folder / "versions").mkdir(parents=True)
    (folder / "env.py").write_text(ENV_NEEDING_INI)
    (folder / "versions" / "0001_t.py").write_text(REVISION.format(table=table))
    with pytest.raises(ConfigError) as info:
        ensure_template(postgres, TemplateSpec((source_from_spec("app/alembic", root=tmp_path),)))
    message = str(info.value)
    assert "its env.py needs an ini file" in message
    assert 'point db.migrations at the project\'s alembic.ini (db.migrations = "alembic.ini")' in message
    assert "fix the migration" not in message
    (tmp_path / "alembic.ini").write_text("[alembic]\nscript_location = app/alembic\n")
    name = ensure_template(postgres, TemplateSpec((source_from_spec("app/alembic", root=tmp_path),)))
    with postgres.connect() as admin:
        assert template_state(admin, name) == "ready"


def test_a_seed_sql_file_is_applied_after_the_migrations(postgres, tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "001.sql").write_text("CREATE TABLE t (id int);")
    seed = tmp_path / "seed.sql"
    seed.write_text("INSERT INTO t VALUES (7);")
    name = ensure_template(postgres, TemplateSpec((SqlFolder(folder),), seed=(SqlFolder(seed),)))
    with postgres.connect() as admin:
        admin.execute(f'CREATE DATABASE "{name}_copy" TEMPLATE "{name}"')
    try:
        with postgres.connect(dbname=f"{name}_copy") as conn:
            assert conn.execute("SELECT id FROM t").fetchall() == [(7,)]
    finally:
        with postgres.connect() as admin:
            admin.execute(f'DROP DATABASE "{name}_copy"')
