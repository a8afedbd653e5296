"""MariaDB per-test isolation through the pytest plugin, on small generated projects run in subprocesses.

Backends: ``local`` (testlane starts ``mariadbd``) and ``url`` (the machine's MariaDB at 127.0.0.1:3306).
Inner runs get a fixed run id, so what they leave on the existing server can be looked up by name.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testlane.core.runtime import new_run_id
from testlane.databases.mariadb.template import drop_database
from tests.helpers import clean_env, inner_pyproject, leftovers, run_cli, run_inner, server_processes
from tests.mariadb_helpers import (
    backend_config,
    drop_existing_template,
    existing_databases,
    existing_server,
    has_local_mariadb,
)

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("inner_env")]


MIGRATION = """\
-- {nonce}
CREATE TABLE customers (id int PRIMARY KEY AUTO_INCREMENT, email varchar(100) NOT NULL UNIQUE);
CREATE TABLE orders (
  id int PRIMARY KEY AUTO_INCREMENT,
  customer_id int NOT NULL,
  total decimal(10,2) NOT NULL,
  CONSTRAINT fk_orders_customer FOREIGN KEY (customer_id) REFERENCES customers (id)
);
CREATE TABLE audit (id int PRIMARY KEY AUTO_INCREMENT, what varchar(100));
CREATE TABLE countries (code char(2) PRIMARY KEY);
INSERT INTO countries VALUES ('fr'), ('de');
CREATE VIEW order_count AS SELECT count(*) AS n FROM orders;
CREATE TRIGGER orders_audit AFTER INSERT ON orders FOR EACH ROW INSERT INTO audit (what) VALUES ('order');
CREATE PROCEDURE make_table() BEGIN CREATE TABLE IF NOT EXISTS made (id int); END;
"""

Project = Callable[..., Path]
NEEDS_LOCAL = pytest.mark.skipif(not has_local_mariadb(), reason="no local mariadbd")
LOCAL = pytest.param("local", marks=NEEDS_LOCAL)


@pytest.fixture
def run_id() -> str:
    return new_run_id()


@pytest.fixture
def inner_env(inner_env: Path, monkeypatch: pytest.MonkeyPatch, run_id: str) -> Path:
    """tests/conftest.py's, with a known run id."""
    monkeypatch.setenv("TESTLANE_RUN_ID", run_id)
    return inner_env


@pytest.fixture
def make_project(pytester: pytest.Pytester) -> Iterator[Project]:
    """``make_project(backend, extra="")`` writes the inner project; returns its migrations folder.

    On the existing server the project's template is dropped afterwards, whatever the outcome.
    """
    made: list[Path] = []

    def make(backend: str, extra: str = "") -> Path:
        if backend == "url" and existing_server() is None:
            pytest.skip("no MariaDB at 127.0.0.1:3306")
        pytester.makefile(
            ".toml",
            pyproject=inner_pyproject(
                services="[]",
                testlane=f'[tool.testlane.mariadb]\nmigrations = "migrations"\n{backend_config(backend)}\n{extra}',
            ),
        )
        migrations = pytester.path / "migrations"
        migrations.mkdir()
        (migrations / "001_schema.sql").write_text(MIGRATION.format(nonce=uuid.uuid4().hex))
        if backend == "url":
            made.append(migrations)
        return migrations

    yield make
    for migrations in made:
        drop_existing_template(migrations)


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return run_inner(pytester, *args, timeout=240)


def assert_nothing_left(backend: str, inner_env: Path, run_id: str) -> None:
    """No server process or directory of the run; on the existing server no database of the run."""
    assert server_processes(inner_env) == []
    assert leftovers(inner_env) == []
    if backend == "url":
        assert existing_databases(f"tl\\_{run_id}\\_%") == []  # templates may stay (by design)


ISOLATION_SUITE = """
import pytest
import sqlalchemy as sa

def scalar(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()[0]

def assert_fresh(conn):
    assert scalar(conn, "SELECT count(*) FROM customers") == 0
    assert scalar(conn, "SELECT count(*) FROM audit") == 0
    assert scalar(conn, "SELECT group_concat(code ORDER BY code) FROM countries") == "de,fr"
    assert scalar(conn, "SELECT count(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()"
                        " AND TABLE_NAME = 'extra'") == 0

@pytest.mark.parametrize("n", range(3))
def test_database_mode_writes_through_mysql_conn(mysql_conn, mysql_database, n):
    assert mysql_database.isolation == "database"
    assert mysql_database.name.startswith("tl_")
    assert_fresh(mysql_conn)
    with mysql_conn.cursor() as cur:
        cur.execute("INSERT INTO customers (email) VALUES ('a@example.com')")
        assert cur.lastrowid == 1  # AUTO_INCREMENT starts over
        cur.execute("INSERT INTO orders (customer_id, total) VALUES (1, 10)")
        cur.execute("DELETE FROM countries WHERE code = 'fr'")
        cur.execute("CREATE TABLE extra (id int)")
    mysql_conn.commit()
    assert scalar(mysql_conn, "SELECT n FROM order_count") == 1
    assert scalar(mysql_conn, "SELECT count(*) FROM audit") == 1  # the trigger survived cloning

def test_database_mode_writes_through_its_own_connection(mysql_url, mysql_database):
    assert mysql_url.startswith("mysql://") and mysql_url.endswith("/" + mysql_database.name)
    engine = sa.create_engine(mysql_database.sqlalchemy_url(), poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM customers")).scalar() == 0
        conn.execute(sa.text("INSERT INTO customers (email) VALUES ('own@example.com')"))
        with pytest.raises(sa.exc.IntegrityError, match="foreign key constraint fails"):
            with conn.begin_nested():
                conn.execute(sa.text("INSERT INTO orders (customer_id, total) VALUES (99, 1)"))
    engine.dispose()

@pytest.mark.isolation("transaction")
@pytest.mark.parametrize("n", range(3))
def test_transaction_mode_rolls_back_commits(mysql_conn, mysql_database, n):
    assert mysql_database.isolation == "transaction"
    assert_fresh(mysql_conn)
    with mysql_conn.cursor() as cur:
        cur.execute("INSERT INTO customers (email) VALUES ('t@example.com')")
        cur.execute("INSERT INTO orders (customer_id, total) VALUES (LAST_INSERT_ID(), 10)")
    mysql_conn.commit()
    with mysql_conn.cursor() as cur:
        cur.execute("DELETE FROM countries")
    mysql_conn.rollback()
    assert scalar(mysql_conn, "SELECT count(*) FROM countries") == 2
    assert scalar(mysql_conn, "SELECT count(*) FROM audit") == 1

def test_the_server_fixture(mariadb):
    assert mariadb.url.startswith("mysql://")
    conn = mariadb.connect()
    try:
        assert scalar(conn, "SELECT 1") == 1
    finally:
        conn.close()
"""


@pytest.mark.parametrize(
    ("backend", "workers"),
    [
        pytest.param("local", [], marks=NEEDS_LOCAL, id="local"),
        pytest.param("url", [], id="url"),
        pytest.param("local", ["-n", "2"], marks=NEEDS_LOCAL, id="local-xdist"),
        pytest.param("url", ["-n", "2"], id="url-xdist"),
    ],
)
def test_isolation_holds_in_both_modes(
    pytester: pytest.Pytester, make_project: Project, backend: str, workers: list[str], inner_env: Path, run_id: str
) -> None:
    make_project(backend)
    pytester.makepyfile(test_suite_it=ISOLATION_SUITE)  # in any order (xdist): every test must hold
    result = run(pytester, *workers)
    result.assert_outcomes(passed=8)
    assert_nothing_left(backend, inner_env, run_id)


def test_transaction_mode_refuses_and_detects_implicit_commits(
    pytester: pytest.Pytester, make_project: Project, inner_env: Path, run_id: str
) -> None:
    make_project("url", 'isolation = "transaction"')
    pytester.makepyfile(
        test_txn_it="""
        def scalar(conn, sql):
            with conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetchone()[0]

        def test_1_ddl_is_refused_even_when_swallowed(mysql_conn):
            try:
                with mysql_conn.cursor() as cur:
                    cur.execute("CREATE TABLE extra (id int)")
            except Exception:
                pass

        def test_2_ddl_in_a_procedure_escapes_and_is_reported(mysql_conn):
            with mysql_conn.cursor() as cur:
                cur.execute("INSERT INTO customers (email) VALUES ('escaped@example.com')")
                cur.execute("CALL make_table()")

        def test_3_the_next_test_starts_clean(mysql_conn):
            assert scalar(mysql_conn, "SELECT count(*) FROM customers") == 0
            assert scalar(mysql_conn, "SELECT count(*) FROM information_schema.TABLES"
                                      " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'made'") == 0

        def test_4_the_url_is_not_rolled_back(mysql_url):
            assert mysql_url.startswith("mysql://")
        """
    )
    result = run(pytester)
    result.assert_outcomes(passed=4, errors=2, warnings=1)
    result.stdout.fnmatch_lines(["*mysql_url in transaction isolation: connections you open from this URL are NOT*"])
    # ...located at the test, not at pytest's fixture code
    result.stdout.fnmatch_lines(["  */test_txn_it.py:*: UserWarning: mysql_url in transaction isolation*"])
    result.stdout.fnmatch_lines(["*test_1_ddl_is_refused_even_when_swallowed*transaction isolation refused*"])
    result.stdout.fnmatch_lines(["*'CREATE TABLE extra (id int)'*would have committed the test's transaction*"])
    result.stdout.fnmatch_lines(["*test_2_ddl*transaction isolation did not hold*The worker's database was rebuilt*"])
    assert_nothing_left("url", inner_env, run_id)


def test_an_empty_pool_clones_on_demand(
    pytester: pytest.Pytester, make_project: Project, inner_env: Path, run_id: str
) -> None:
    make_project("url", "pool_size = 0")
    pytester.makepyfile(
        test_pool_it="""
        import pytest

        @pytest.mark.parametrize("n", range(4))
        def test_gets_a_database(mysql_database, n):
            assert mysql_database.lease.on_demand
        """
    )
    run(pytester).assert_outcomes(passed=4)
    assert_nothing_left("url", inner_env, run_id)


BUILD_LOG = """\
CREATE DATABASE IF NOT EXISTS {log};
CREATE TABLE IF NOT EXISTS {log}.builds (id int PRIMARY KEY AUTO_INCREMENT, conn bigint);
INSERT INTO {log}.builds (conn) VALUES (CONNECTION_ID());
DO SLEEP(0.5);
CREATE TABLE items (id int PRIMARY KEY AUTO_INCREMENT, name varchar(20));
"""

COUNTED_SUITE = """
import pytest

@pytest.mark.parametrize("n", range(4))
def test_uses_the_template(mysql_conn, n):
    with mysql_conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM items")
        assert cur.fetchone() == (0,)
        cur.execute("INSERT INTO items (name) VALUES ('x')")
    mysql_conn.commit()
"""


def test_workers_and_runs_share_one_template_build(
    pytester: pytest.Pytester, make_project: Project, inner_env: Path, run_id: str
) -> None:
    migrations = make_project("url")
    log = f"tl_it_buildlog_{uuid.uuid4().hex[:8]}"
    (migrations / "001_schema.sql").write_text(BUILD_LOG.format(log=log))
    pytester.makepyfile(test_counted_it=COUNTED_SUITE)
    server = existing_server()
    assert server is not None

    def builds() -> int:
        with server.connect() as conn, conn.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {log}.builds")
            return int(cur.fetchone()[0])

    schema = migrations / "001_schema.sql"
    original = schema.read_text()
    try:
        run(pytester, "-n", "2").assert_outcomes(passed=4)  # two workers, one build
        assert builds() == 1
        run(pytester).assert_outcomes(passed=4)  # the existing server keeps the template: no build
        assert builds() == 1
        schema.write_text(original.replace("name varchar(20)", "name varchar(40)"))  # a changed migration
        run(pytester).assert_outcomes(passed=4)
        assert builds() == 2
        assert existing_databases(f"tl\\_{run_id}\\_%") == []
    finally:
        drop_existing_template(migrations)  # the changed one; make_project drops the first
        schema.write_text(original)
        with server.connect() as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {log}")


@pytest.mark.parametrize("backend", [LOCAL, "url"])
def test_a_broken_migration_fails_with_a_clear_message(
    pytester: pytest.Pytester, make_project: Project, backend: str, inner_env: Path, run_id: str
) -> None:
    migrations = make_project(backend)
    (migrations / "002_broken.sql").write_text("SELECT 1;\n\nALTER TABLE nope\n  ADD COLUMN x int;\n")
    pytester.makepyfile(test_x_it="def test_a(mysql_conn):\n    pass\n\ndef test_b(mysql_conn):\n    pass\n")
    result = run(pytester)
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*migration failed in *002_broken.sql: Table '*nope' doesn't exist (error 1146)*"])
    result.stdout.fnmatch_lines(["*statement (line 3):*", "*ALTER TABLE nope*"])
    assert "Traceback" not in result.stdout.str()
    assert_nothing_left(backend, inner_env, run_id)


def test_mysql_fixtures_refuse_the_unit_lane(pytester: pytest.Pytester, make_project: Project) -> None:
    make_project("url")
    # A project with lanes (here: a *_it.py file); one without is all integration lane when the lane is on.
    pytester.makepyfile(test_x="def test_x(mysql_conn):\n    pass\n", test_y_it="def test_y():\n    pass\n")
    result = run(pytester)
    result.assert_outcomes(errors=1, passed=1)
    result.stdout.fnmatch_lines(["*test_x.py::test_x is in the unit lane but uses testlane's service fixture*"])


def test_schema_isolation_is_refused_for_mariadb(pytester: pytest.Pytester, make_project: Project) -> None:
    make_project("url")
    pytester.makepyfile(
        test_x_it="import pytest\n\n@pytest.mark.isolation('schema')\ndef test_x(mysql_conn):\n    pass\n"
    )
    result = run(pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*isolation 'schema' is not available for MariaDB/MySQL*"])


# A failed test that wrote a row (kept with db.keep_failed), and a passing one.
KEPT_SUITE = """
def test_fails(mysql_conn):
    with mysql_conn.cursor() as cur:
        cur.execute("INSERT INTO countries VALUES ('it')")
    mysql_conn.commit()
    assert False, "boom"

def test_passes(mysql_conn):
    pass
"""


def test_a_failed_tests_database_is_kept_like_postgres(
    pytester: pytest.Pytester, make_project: Project, inner_env: Path
) -> None:
    """db.keep_failed keeps a failed MariaDB test's database too (one manager for both engines): the report and
    summary say so, the database outlives the run with the test's writes, and `testlane reap --kept` ends it."""
    if not has_local_mariadb():
        pytest.skip("no local mariadbd")
    make_project("local", "\n[tool.testlane.db]\nkeep_failed = true\nkeep_failed_ttl = 3600\n")
    pytester.makepyfile(test_x_it=KEPT_SUITE)
    result = run(pytester)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*database kept for inspection (database mode): mysql://*"])
    result.stdout.fnmatch_lines(["*testlane: databases kept for inspection*", "*test_fails", "    mysql --host=*"])
    command = next(line.strip() for line in result.outlines if line.strip().startswith("mysql --host="))
    options = dict(part.removeprefix("--").split("=", 1) for part in command.split()[1:4])
    name = command.split()[-1]
    records = [json.loads(p.read_text()) for p in (inner_env / "state").glob("*.json")]
    assert [r["extra"].get("kept_until") is not None for r in records] == [True]
    # The command asks for the password; the summary says where it is (never the password itself).
    where = next(line for line in result.outlines if line.startswith("The password is not printed: it is in "))
    password_file = Path(where.removeprefix("The password is not printed: it is in ").split(" (")[0])
    assert oct(password_file.stat().st_mode & 0o777) == "0o600"
    password = json.loads(password_file.read_text())["password"]
    assert password and password not in result.stdout.str()
    import pymysql

    conn = pymysql.connect(
        host=options["host"], port=int(options["port"]), user=options["user"], password=password, database=name
    )
    try:  # the server outlived the run, with the evidence
        with conn.cursor() as cur:
            cur.execute("SELECT group_concat(code ORDER BY code) FROM countries")
            assert cur.fetchone() == ("de,fr,it",)
    finally:
        conn.close()
    env = clean_env({"TESTLANE_DATA_DIR": str(inner_env)})
    reaped = run_cli(["reap", "--kept"], cwd=pytester.path, env=env)
    assert reaped.returncode == 0, reaped.stderr
    assert server_processes(inner_env) == []
    assert leftovers(inner_env) == []


def test_a_failed_tests_kept_database_survives_the_end_of_run_sweep_on_an_existing_server(
    pytester: pytest.Pytester, make_project: Project, inner_env: Path, run_id: str
) -> None:
    """On a server that outlives the run (the `url` backend) the run's sweep drops what carries its owner record:
    a failed test's database kept for inspection (db.keep_failed) is marked kept in that record, as on
    PostgreSQL, so it stays (the sweep dropped it: only Postgres databases were marked)."""
    make_project("url", "\n[tool.testlane.db]\nkeep_failed = true\nkeep_failed_ttl = 3600\npool_size = 1\n")
    pytester.makepyfile(test_x_it=KEPT_SUITE)
    try:
        result = run(pytester)
        result.assert_outcomes(passed=1, failed=1)
        left = existing_databases(f"tl\\_{run_id}\\_%")
        assert len(left) == 1, left  # the failed test's, kept for inspection; nothing else
        assert left[0] in result.stdout.str()
        server = existing_server()
        assert server is not None
        with contextlib.closing(server.connect()) as conn, conn.cursor() as cur:
            cur.execute(f"SELECT group_concat(code ORDER BY code) FROM `{left[0]}`.countries")
            assert cur.fetchone() == ("de,fr,it",)
            cur.execute("SELECT SCHEMA_COMMENT FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (left[0],))
            assert " kept=" in cur.fetchone()[0]
    finally:
        server = existing_server()
        assert server is not None
        with contextlib.closing(server.connect()) as conn:
            for name in existing_databases(f"tl\\_{run_id}\\_%"):
                drop_database(conn, name)
