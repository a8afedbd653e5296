"""Nothing outside testlane's own servers during the template build (issue 13, case 4).

A very common Alembic ``env.py`` (and seed script) reads ``DATABASE_URL`` and falls back to a local
development URL. The "developer's database" here is a throwaway database on the system PostgreSQL
(127.0.0.1:5432), created and dropped by each test. While the template is built, a connection to it
must be refused before anything is sent: the proof is that the database has no table and that
``pg_stat_database`` counts no client session to it (one is counted even when it sends no statement).
"""

from __future__ import annotations

import shutil
import socket
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testlane.core.config import load_settings
from testlane.core.errors import UnsafeDatabaseError
from testlane.databases.template import TemplateSpec, ensure_template
from tests.helpers import clean_env, leftovers, run_cli, server_processes

SYSTEM = "postgresql://postgres@127.0.0.1:5432/postgres"

pytestmark = pytest.mark.timeout(300)


@dataclass
class Decoy:
    """The developer's database: ``name`` on the system server, and how many sessions it has seen."""

    name: str

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:5432/{self.name}"

    def sessions(self) -> int:
        """Client sessions the server has counted for this database (autovacuum's are not counted)."""
        import psycopg

        with psycopg.connect(SYSTEM, autocommit=True) as conn:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            row = conn.execute("SELECT sessions FROM pg_stat_database WHERE datname = %s", (self.name,)).fetchone()
        assert row is not None
        return int(row[0])

    def tables(self) -> list[str]:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            ).fetchall()
        return [r[0] for r in rows]


@pytest.fixture
def decoy() -> Iterator[Decoy]:
    import psycopg

    try:
        admin = psycopg.connect(SYSTEM, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no system PostgreSQL on 127.0.0.1:5432 to hold a decoy database: {exc}")
    found = Decoy(f"tl_decoy_dev_{uuid.uuid4().hex[:10]}")
    with admin:
        admin.execute(f'CREATE DATABASE "{found.name}"')
        try:
            yield found
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{found.name}" WITH (FORCE)')


@pytest.fixture(autouse=True)
def _no_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "PGHOST", "PGPORT", "PGHOSTADDR", "PGDATABASE", "PGSERVICE"):
        monkeypatch.delenv(name, raising=False)


def alembic_project(root: Path, decoy: Decoy, *, mapping: str = "") -> Path:
    """An Alembic project whose env.py reads DATABASE_URL and falls back to the developer's database."""
    (root / "alembic" / "versions").mkdir(parents=True)
    (root / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s/alembic\n")
    (root / "alembic" / "env.py").write_text(
        textwrap.dedent(f"""\
            import os

            from alembic import context
            from sqlalchemy import create_engine

            url = os.environ.get("DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/{decoy.name}")
            with create_engine(url).connect() as connection:
                context.configure(connection=connection)
                with context.begin_transaction():
                    context.run_migrations()
            """)
    )
    (root / "alembic" / "versions" / "0001_things.py").write_text(
        textwrap.dedent("""\
            from alembic import op

            revision = "0001"
            down_revision = None


            def upgrade():
                op.execute("CREATE TABLE things (id int PRIMARY KEY, name text)")
                op.execute("INSERT INTO things VALUES (1, 'from the migration')")
            """)
    )
    (root / "pyproject.toml").write_text(
        '[project]\nname = "dev-app"\nversion = "0"\n\n'
        '[tool.testlane]\nservices = ["postgres"]\n\n[tool.testlane.db]\nmigrations = "alembic.ini"\n'
        + (f"\n[tool.testlane.env]\n{mapping}\n" if mapping else "")
    )
    return root


def spec_of(project: Path) -> TemplateSpec:
    return TemplateSpec.from_settings(load_settings(start=project, environ={}))


def assert_untouched(decoy: Decoy, before: int) -> None:
    assert decoy.sessions() == before, "a session reached the developer's database"
    assert decoy.tables() == []


def test_in_process_alembic_cannot_reach_the_developers_database(postgres, decoy: Decoy, tmp_path: Path) -> None:
    spec = spec_of(alembic_project(tmp_path, decoy))
    before = decoy.sessions()
    with pytest.raises(UnsafeDatabaseError) as caught:
        ensure_template(postgres, spec)
    message = str(caught.value)
    assert "tried to connect to 127.0.0.1:5432 (PostgreSQL, via libpq)" in message
    assert "The code read DATABASE_URL, which is not set" in message, message
    assert 'DATABASE_URL = "{postgres.url}"' in message
    assert "migration failed" not in message  # the migration is not what is wrong
    assert_untouched(decoy, before)


def test_the_env_mapping_applies_to_db_migrations(postgres, decoy: Decoy, tmp_path: Path) -> None:
    project = alembic_project(tmp_path, decoy, mapping='DATABASE_URL = "{postgres.url:psycopg}"')
    before = decoy.sessions()
    name = ensure_template(postgres, spec_of(project))
    import psycopg

    with psycopg.connect(**postgres.conninfo(), autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        try:
            with psycopg.connect(**postgres.conninfo(name), autocommit=True) as conn:
                assert conn.execute("SELECT name FROM things").fetchall() == [("from the migration",)]
        finally:
            admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
    assert_untouched(decoy, before)


def test_an_exported_unmapped_variable_is_named(
    postgres, decoy: Decoy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = spec_of(alembic_project(tmp_path, decoy))
    monkeypatch.setenv("DATABASE_URL", f"postgresql+psycopg://postgres@localhost:5432/{decoy.name}")
    before = decoy.sessions()
    with pytest.raises(UnsafeDatabaseError, match="DATABASE_URL in your environment points there and is not mapped"):
        ensure_template(postgres, spec)
    assert_untouched(decoy, before)


SEED_PSYCOPG = """\
import os

import psycopg

url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/{decoy}")
with psycopg.connect(url) as conn:
    conn.execute("CREATE TABLE seeded (id int)")
"""

SEED_ASYNCPG = """\
import asyncio
import os

import asyncpg


async def main():
    url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/{decoy}")
    try:
        conn = await asyncpg.connect(url)
    except OSError:
        return  # a seed script that swallows connection errors: the refusal is still reported
    await conn.execute("CREATE TABLE seeded (id int)")
    await conn.close()


asyncio.run(main())
"""


@pytest.mark.parametrize("seed", [SEED_PSYCOPG, SEED_ASYNCPG], ids=["psycopg-libpq", "asyncpg-socket"])
def test_a_python_setup_command_cannot_reach_the_developers_database(
    postgres, decoy: Decoy, tmp_path: Path, seed: str
) -> None:
    (tmp_path / "seed.py").write_text(seed.format(decoy=decoy.name))
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "dev-app"\nversion = "0"\n\n[tool.testlane]\nsetup = ["python seed.py"]\n'
    )
    before = decoy.sessions()
    with pytest.raises(UnsafeDatabaseError) as caught:
        ensure_template(postgres, spec_of(tmp_path))
    message = str(caught.value)
    assert "set-up command `python seed.py` tried to connect to 127.0.0.1:5432" in message
    assert "DATABASE_URL" in message
    assert_untouched(decoy, before)


def test_a_psycopg_connection_in_a_callable_migration_is_refused(postgres, decoy: Decoy, tmp_path: Path) -> None:
    from testlane.databases.migrations import CallableMigrations

    def migrate(conn: object) -> None:  # ignores the connection it is given, as a careless one would
        import os

        import psycopg

        with psycopg.connect(os.environ.get("DATABASE_URL", decoy.url)) as own:
            own.execute("CREATE TABLE from_callable (id int)")

    before = decoy.sessions()
    with pytest.raises(UnsafeDatabaseError, match=r"callable tests:migrate tried to connect to 127\.0\.0\.1:5432"):
        ensure_template(postgres, TemplateSpec((CallableMigrations("tests:migrate", migrate),)))
    assert_untouched(decoy, before)


def test_a_python_socket_never_reaches_a_foreign_listener(postgres, tmp_path: Path) -> None:
    """Below any driver: a plain TCP connect from a set-up command is refused before the handshake."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0)
    port = listener.getsockname()[1]
    (tmp_path / "poke.py").write_text(
        f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port})).sendall(b'DROP')\n"
        "except OSError:\n    pass\n"
    )
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\nversion = "0"\n\n[tool.testlane]\nsetup = ["python poke.py"]\n'
    )
    try:
        with pytest.raises(UnsafeDatabaseError, match=f"tried to connect to 127.0.0.1:{port}"):
            ensure_template(postgres, spec_of(tmp_path))
        with pytest.raises(BlockingIOError):
            listener.accept()  # no connection was ever made
    finally:
        listener.close()


def test_testlane_run_refuses_and_then_runs_with_the_mapping(data_dir: Path, decoy: Decoy, tmp_path: Path) -> None:
    project = alembic_project(tmp_path / "app", decoy)
    (project / "test_things_it.py").write_text(
        "from sqlalchemy import text\n\n\ndef test_things(db_session):\n"
        "    assert db_session.execute(text('SELECT name FROM things')).scalar() == 'from the migration'\n"
    )
    cache = data_dir.parent / f"{data_dir.name}-cache"
    env = clean_env({"TESTLANE_DATA_DIR": str(data_dir), "TESTLANE_CACHE_DIR": str(cache)})
    for name in ("DATABASE_URL", "PGHOST", "PGPORT", "PGDATABASE"):
        env.pop(name, None)
    before = decoy.sessions()
    try:
        refused = run_cli(["run", "--", "-q", "-p", "no:cacheprovider"], cwd=project, env=env)
        output = refused.stdout + refused.stderr
        assert refused.returncode != 0, output
        assert "tried to connect to 127.0.0.1:5432" in output and "DATABASE_URL" in output, output
        assert "Traceback" not in output
        # The verdict names the template (it said "a service could not be started": the server had started).
        assert "FAILED — the migrated template could not be built; no tests ran (exit 3)" in output, output
        assert_untouched(decoy, before)
        before = decoy.sessions()

        pyproject = project / "pyproject.toml"
        pyproject.write_text(pyproject.read_text() + '\n[tool.testlane.env]\nDATABASE_URL = "{postgres.url:psycopg}"\n')
        passed = run_cli(["run", "--", "-q", "-p", "no:cacheprovider"], cwd=project, env=env)
        assert passed.returncode == 0, passed.stdout + passed.stderr
        assert "1 passed" in passed.stdout
        assert_untouched(decoy, before)
        assert leftovers(data_dir) == []
        assert server_processes(data_dir) == []
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def template_tables(postgres, name: str) -> list[str]:
    import psycopg

    with psycopg.connect(**postgres.conninfo(), autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        try:
            with psycopg.connect(**postgres.conninfo(name), autocommit=True) as conn:
                rows = conn.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
                ).fetchall()
        finally:
            admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
    return sorted(r[0] for r in rows)


@pytest.mark.skipif(shutil.which("psql") is None, reason="needs psql, a program that is not Python")
def test_a_program_that_is_not_python_gets_libpq_defaults_for_the_template_and_is_watched(
    postgres, decoy: Decoy, tmp_path: Path
) -> None:
    # Bare psql: PGHOST/PGPORT/PGUSER/PGDATABASE point at the template being built.
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\nversion = "0"\n\n[tool.testlane]\n'
        "setup = [\"psql -X -v ON_ERROR_STOP=1 -c 'CREATE TABLE from_psql (id int)'\"]\n"
    )
    assert template_tables(postgres, ensure_template(postgres, spec_of(tmp_path))) == ["from_psql"]

    # psql to the developer's database: it cannot be refused (not Python), but it is seen and the build stops.
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\nversion = "0"\n\n[tool.testlane]\n'
        f'setup = ["psql -X -d \\"${{DATABASE_URL:-{decoy.url}}}\\" -c \'SELECT pg_sleep(0.5)\'"]\n'
    )
    spec = spec_of(tmp_path)
    with pytest.raises(UnsafeDatabaseError, match=r"connected to 127\.0\.0\.1:5432 \(from a program that is not Py"):
        ensure_template(postgres, spec)
    import psycopg

    with psycopg.connect(**postgres.conninfo(), autocommit=True) as admin:
        assert (
            admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (spec.name(postgres.version),)).fetchone()
            is None
        )
