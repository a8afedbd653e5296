"""MariaDB: the engine itself, and per-test isolation through the library, on real servers.

Two backends: ``local`` (a server testlane starts from this machine's ``mariadbd``) and ``url`` (the
machine's running MariaDB at 127.0.0.1:3306, as root without a password). Tests on the existing server
use unique template contents and run ids, and drop what they made.
"""

from __future__ import annotations

import contextlib
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pymysql
import pytest

from testlane import db
from testlane.core.errors import LaneError, MigrationError, UnsafeDatabaseError
from testlane.core.runtime import RunContext, is_root, new_run_id
from testlane.databases.guard import current_lane
from testlane.databases.leftovers import find_mysql_leftovers
from testlane.databases.mariadb import template as template_module
from testlane.databases.mariadb.engine import MariaDbDatabaseEngine, admin_connection
from testlane.databases.mariadb.template import (
    READY_COMMENT,
    READY_TABLE,
    drop_database,
    ensure_template,
    spec_from_settings,
    template_name,
    template_state,
)
from testlane.databases.mariadb.transaction import ImplicitCommitError, MysqlSavepointConnection
from testlane.databases.owner import OwnerRecord, this_host
from testlane.databases.pool import ClonePool
from testlane.services.mariadb import MariaDbEngine
from testlane.services.registry import Registry
from testlane.services.stack import ServiceStack
from tests.helpers import clean_env, owner_decoys, run_cli, server_processes
from tests.mariadb_helpers import EXISTING_URL, existing_databases, existing_server, has_local_mariadb

SCHEMA = """\
-- {nonce}
CREATE TABLE customers (
  id int PRIMARY KEY AUTO_INCREMENT,
  email varchar(100) NOT NULL UNIQUE,
  domain varchar(100) AS (substring_index(email, '@', -1)) VIRTUAL
);
CREATE TABLE orders (
  id int PRIMARY KEY AUTO_INCREMENT,
  customer_id int NOT NULL,
  total decimal(10,2) NOT NULL DEFAULT 0,
  CONSTRAINT fk_orders_customer FOREIGN KEY (customer_id) REFERENCES customers (id) ON DELETE CASCADE
);
CREATE TABLE audit (id int PRIMARY KEY AUTO_INCREMENT, what varchar(100) NOT NULL);
CREATE TABLE countries (code char(2) PRIMARY KEY, name varchar(50) NOT NULL);
INSERT INTO countries VALUES ('fr', 'France'), ('de', 'Germany');
CREATE VIEW big_orders AS
  SELECT o.id, c.email FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.total > 100;
CREATE VIEW big_order_count AS SELECT count(*) AS n FROM big_orders;
CREATE TRIGGER orders_audit AFTER INSERT ON orders
  FOR EACH ROW INSERT INTO audit (what) VALUES (CONCAT('order ', NEW.id));
DELIMITER //
CREATE FUNCTION with_tax(x decimal(10,2)) RETURNS decimal(10,2) DETERMINISTIC
BEGIN
  RETURN x * 1.2;
END//
DELIMITER ;
"""


BACKENDS = [
    pytest.param("local", marks=pytest.mark.skipif(not has_local_mariadb(), reason="no local mariadbd")),
    "url",
]


@pytest.fixture
def run_id() -> str:
    return new_run_id()


@pytest.fixture(params=BACKENDS)
def server(request: pytest.FixtureRequest, settings_for: Any, run_id: str, data_dir: Path) -> Iterator[Any]:
    """A MariaDB server on each backend, with a private run; stopped (or detached) afterwards."""
    backend = request.param
    if backend == "url" and existing_server() is None:
        pytest.skip("no MariaDB at 127.0.0.1:3306")
    settings = settings_for(mariadb__backend=backend, mariadb__url=EXISTING_URL if backend == "url" else "")
    context = RunContext.from_settings(settings, run_id=run_id, owner=os.getpid())
    with ServiceStack(settings, context) as stack:
        stack.start(["mariadb"])
        yield stack.servers["mariadb"]
    assert server_processes(data_dir) == []
    if backend == "url":
        assert existing_databases(f"tl\\_{run_id}\\_%") == [], "a clone was left on the existing server"


@pytest.fixture
def migrations(tmp_path: Path) -> Path:
    """A migration folder with unique contents (a fresh template even on a shared server)."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "001_schema.sql").write_text(SCHEMA.format(nonce=uuid.uuid4().hex))
    return folder


@pytest.fixture
def spec(server: Any, migrations: Path, settings_for: Any) -> Iterator[Any]:
    """The template spec of ``migrations``; its templates are dropped afterwards."""
    settings = settings_for()
    built = spec_from_settings(settings, migrations=str(migrations))
    yield built
    with contextlib.closing(server.connect()) as admin:
        drop_database(admin, template_name(server, spec_from_settings(settings, migrations=str(migrations))))
        drop_database(admin, template_name(server, built))


def scalar(conn: Any, sql: str, args: Any = None) -> Any:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        row = cur.fetchone()
    return row[0] if row is not None else None


# --------------------------------------------------------------------------- the engine


@pytest.mark.skipif(not has_local_mariadb(), reason="no local mariadbd")
def test_mariadb_start_query_stop(settings_for: Any, data_dir: Path) -> None:
    """Start, query, stop (beyond test_backends_it: the service user, a private directory, the record)."""
    settings = settings_for(mariadb__backend="local")
    context = RunContext.from_settings(settings, run_id=new_run_id(), owner=os.getpid())
    context.ensure_dirs()
    with MariaDbEngine(settings, context, Registry(context)).start() as server:
        conn = server.connect()
        try:
            assert scalar(conn, "SELECT @@bind_address") == "127.0.0.1"
            assert scalar(conn, "SELECT @@innodb_flush_log_at_trx_commit") == 0
            assert server.version in scalar(conn, "SELECT VERSION()")
        finally:
            conn.close()
        instance_dir = Path(server.instance.instance_dir or "")
        assert str(instance_dir).startswith(str(data_dir))
        assert stat.S_IMODE(instance_dir.stat().st_mode) == 0o700
        pid = server.pid
        assert pid is not None
        if is_root():
            assert psutil.Process(pid).username() == settings.service_user, "as root, MariaDB runs unprivileged"
        assert Registry(context).find(context.run_id, "mariadb") is not None
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not instance_dir.exists()
    assert Registry(context).find(context.run_id, "mariadb") is None
    assert server_processes(data_dir) == []


# --------------------------------------------------------------------------- templates and clones


def test_clones_keep_foreign_keys_views_triggers_and_seeded_rows(server: Any, spec: Any, run_id: str) -> None:
    template = ensure_template(server, spec)
    pool = ClonePool(MariaDbDatabaseEngine(server), template, run_id=run_id, worker="main", size=0, drop_at_close=True)
    lease = pool.acquire()
    try:
        conn = server.connect(lease.name)
        try:
            assert scalar(conn, "SELECT group_concat(code ORDER BY code) FROM countries") == "de,fr"
            with conn.cursor() as cur:
                cur.execute("INSERT INTO customers (email) VALUES ('ann@example.com')")
                cur.execute("INSERT INTO orders (customer_id, total) VALUES (LAST_INSERT_ID(), 250)")
                with pytest.raises(pymysql.err.IntegrityError, match="foreign key constraint fails"):
                    cur.execute("INSERT INTO orders (customer_id, total) VALUES (999, 1)")
            assert scalar(conn, "SELECT what FROM audit") == "order 1"  # the trigger fired
            assert scalar(conn, "SELECT n FROM big_order_count") == 1  # a view on a view
            assert scalar(conn, "SELECT domain FROM customers") == "example.com"  # generated column
            assert scalar(conn, "SELECT with_tax(10)") == pytest.approx(12)  # a function
            with conn.cursor() as cur:
                cur.execute("DELETE FROM customers")
            assert scalar(conn, "SELECT count(*) FROM orders") == 0  # ON DELETE CASCADE
        finally:
            conn.close()
        with contextlib.closing(server.connect()) as admin:
            assert scalar(
                admin, "SELECT count(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (lease.name,)
            )
            assert scalar(admin, f"SELECT count(*) FROM `{template}`.customers") == 0  # the template is untouched
    finally:
        pool.release(lease)
        pool.close()


def test_template_is_built_once_and_rebuilt_when_half_built(server: Any, spec: Any) -> None:
    name = ensure_template(server, spec)
    with contextlib.closing(server.connect()) as admin:
        assert template_state(admin, name) == "ready"
        assert scalar(admin, "SELECT SCHEMA_COMMENT FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (name,))
        with admin.cursor() as cur:
            cur.execute(f"INSERT INTO `{name}`.audit (what) VALUES ('marker')")
        assert ensure_template(server, spec) == name  # ready: not built again
        assert scalar(admin, f"SELECT count(*) FROM `{name}`.audit") == 1
        # A crash mid-build leaves the database without the ready comment.
        with admin.cursor() as cur:
            cur.execute(f"ALTER DATABASE `{name}` COMMENT = ''")
        assert template_state(admin, name) == "partial"
        assert ensure_template(server, spec) == name
        assert template_state(admin, name) == "ready"
        assert scalar(admin, f"SELECT count(*) FROM `{name}`.audit") == 0  # rebuilt from scratch
        assert (
            scalar(admin, "SELECT SCHEMA_COMMENT FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (name,))
            == READY_COMMENT
        )


def test_a_changed_migration_is_a_new_template(server: Any, spec: Any, migrations: Path, settings_for: Any) -> None:
    first = ensure_template(server, spec)
    (migrations / "002_more.sql").write_text("ALTER TABLE customers ADD COLUMN phone varchar(20);\n")
    changed = spec_from_settings(settings_for(), migrations=str(migrations))
    second = ensure_template(server, changed)
    try:
        assert second != first
        with contextlib.closing(server.connect()) as admin:
            assert template_state(admin, first) == "ready"
            assert scalar(
                admin,
                "SELECT count(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND COLUMN_NAME = 'phone'",
                (second,),
            )
    finally:
        with contextlib.closing(server.connect()) as admin:
            drop_database(admin, second)


def test_a_broken_migration_names_file_line_statement_and_error(server: Any, spec: Any, migrations: Path) -> None:
    broken = migrations / "002_broken.sql"
    broken.write_text("ALTER TABLE customers ADD COLUMN a int;\n\nALTER TABLE nope\n  ADD COLUMN x int;\n")
    with pytest.raises(MigrationError) as info:
        ensure_template(server, spec)
    text = str(info.value)
    assert f"migration failed in {broken}:" in text
    assert "nope' doesn't exist (error 1146)" in text
    assert "statement (line 3):\n    ALTER TABLE nope\n      ADD COLUMN x int" in text
    with contextlib.closing(server.connect()) as admin:  # the failed build is gone, not half-built
        assert template_state(admin, template_name(server, spec)) == "missing"


def test_servers_without_schema_comments_mark_templates_with_a_table(
    server: Any, spec: Any, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MySQL (and MariaDB before 10.5) has no database comments: a marker table, left out of clones."""
    monkeypatch.setattr(template_module, "has_schema_comments", lambda conn: False)
    name = ensure_template(server, spec)
    with contextlib.closing(server.connect()) as admin:
        assert template_state(admin, name, comments=False) == "ready"
        assert (
            scalar(admin, "SELECT SCHEMA_COMMENT FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (name,))
            == ""
        )
        pool = ClonePool(MariaDbDatabaseEngine(server), name, run_id=run_id, worker="main", size=0, drop_at_close=True)
        lease = pool.acquire()
        try:
            tables = "SELECT count(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s"
            assert scalar(admin, tables, (lease.name, READY_TABLE)) == 0
            assert scalar(admin, tables, (lease.name, "customers")) == 1
        finally:
            pool.release(lease)
            pool.close()
        with admin.cursor() as cur:  # a build that died before the marker
            cur.execute(f"DROP TABLE `{name}`.`{READY_TABLE}`")
        assert template_state(admin, name, comments=False) == "partial"
        assert ensure_template(server, spec) == name
        assert template_state(admin, name, comments=False) == "ready"


# --------------------------------------------------------------------------- the pool


def test_an_exhausted_pool_clones_on_demand(server: Any, spec: Any, run_id: str) -> None:
    template = ensure_template(server, spec)
    pool = ClonePool(
        MariaDbDatabaseEngine(server), template, run_id=run_id, worker="main", size=1, workers=1, drop_at_close=True
    ).start()
    leases = [pool.acquire() for _ in range(4)]
    try:
        names = [lease.name for lease in leases]
        assert len(set(names)) == 4
        assert all(name.startswith(f"tl_{run_id}_main_m") for name in names)
        assert pool.stats.on_demand >= 2  # at most the one ready ahead, and one on its way
        assert pool.stats.handed_out == 4
        for lease in leases:
            with contextlib.closing(server.connect(lease.name)) as conn:
                assert scalar(conn, "SELECT count(*) FROM countries") == 2
    finally:
        for lease in leases:
            pool.release(lease)
        pool.close()
    with contextlib.closing(server.connect()) as admin:
        left = scalar(
            admin, "SELECT count(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE %s", (f"tl\\_{run_id}\\_%",)
        )
    assert left == 0, "the pool must drop every clone it made, ready ones included"


def test_dropping_ends_connections_left_open(server: Any, spec: Any, run_id: str) -> None:
    template = ensure_template(server, spec)
    pool = ClonePool(MariaDbDatabaseEngine(server), template, run_id=run_id, worker="main", size=0, drop_at_close=True)
    lease = pool.acquire()
    leaked = server.connect(lease.name, autocommit=False)
    with leaked.cursor() as cur:
        cur.execute("INSERT INTO customers (email) VALUES ('open@transaction')")  # holds a metadata lock
    pool.release(lease)  # not started: dropped now, without waiting for the open transaction
    pool.close()
    with contextlib.closing(server.connect()) as admin:
        assert template_state(admin, lease.name) == "missing"
    with pytest.raises(pymysql.err.MySQLError), leaked.cursor() as cur:
        cur.execute("SELECT 1")
    with contextlib.suppress(Exception):
        leaked.close()


# --------------------------------------------------------------------------- existing servers


def test_on_a_shared_server_clones_name_their_owner(server: Any, spec: Any, run_id: str) -> None:
    template = ensure_template(server, spec)
    pool = ClonePool(MariaDbDatabaseEngine(server), template, run_id=run_id, worker="main", size=0, drop_at_close=True)
    lease = pool.acquire()
    try:
        with contextlib.closing(server.connect()) as admin:
            comment = scalar(
                admin, "SELECT SCHEMA_COMMENT FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (lease.name,)
            )
    finally:
        pool.release(lease)
        pool.close()
    if server.instance.backend == "url":
        record = OwnerRecord.parse(comment)
        assert record is not None and record.render() == comment
        assert (record.run_id, record.host, record.pid) == (run_id, this_host(), os.getpid())
    else:
        assert comment == ""  # a server testlane throws away takes its databases with it


def test_reap_drops_only_complete_owner_records_of_dead_owners_on_this_host(project: Path, data_dir: Path) -> None:
    server = existing_server()
    if server is None:
        pytest.skip("no MariaDB at 127.0.0.1:3306")
    reaped, decoys, other_host = owner_decoys("m1")
    everything = {**reaped, **decoys, **other_host}
    with contextlib.closing(server.connect()) as admin, admin.cursor() as cur:
        for name, comment in everything.items():
            cur.execute(f"CREATE DATABASE `{name}` COMMENT = %s", (comment,))

    def existing() -> set[str]:
        with contextlib.closing(server.connect()) as conn, conn.cursor() as cur:
            cur.execute("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'tl\\_%'")
            return {row[0] for row in cur.fetchall()} & set(everything)

    try:
        env = clean_env({"TESTLANE_DATA_DIR": str(data_dir), "TESTLANE_MARIADB_SERVER_URL": EXISTING_URL})
        result = run_cli(["reap"], cwd=project, env=env)
        assert result.returncode == 0, result.stderr
        for name in reaped:
            assert f"dropped database {name}" in result.stderr + result.stdout
        assert existing() == {*decoys, *other_host}, "a decoy was dropped"
        with contextlib.closing(server.connect()) as admin:
            found = find_mysql_leftovers(admin)
        assert not any(lo.name.startswith("tl_tpl_") for lo in found)  # templates are never leftovers
        assert [lo.name for lo in found if lo.reason and lo.name in everything] == []
        result = run_cli(["reap", "--other-hosts-older-than", "1"], cwd=project, env=env)
        assert result.returncode == 0, result.stderr
        assert existing() == set(decoys)
    finally:
        with contextlib.closing(server.connect()) as admin, admin.cursor() as cur:
            for name in everything:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


# --------------------------------------------------------------------------- transaction isolation


def test_savepoint_connection_rolls_back_commits_and_refuses_ddl(server: Any, spec: Any, run_id: str) -> None:
    template = ensure_template(server, spec)
    pool = ClonePool(MariaDbDatabaseEngine(server), template, run_id=run_id, worker="main", size=0, drop_at_close=True)
    lease = pool.acquire()
    try:
        conn = MysqlSavepointConnection(**server.conninfo(lease.name), autocommit=False)
        conn.begin_test()
        with conn.cursor() as cur:
            cur.execute("INSERT INTO customers (email) VALUES ('kept@until.rollback')")
        conn.commit()  # a savepoint, not a commit
        with conn.cursor() as cur:
            cur.execute("INSERT INTO customers (email) VALUES ('undone@by.rollback')")
        conn.rollback()
        assert scalar(conn, "SELECT group_concat(email) FROM customers") == "kept@until.rollback"
        with pytest.raises(ImplicitCommitError, match="refused 'CREATE TABLE extra"), conn.cursor() as cur:
            cur.execute("CREATE TABLE extra (id int)")
        with pytest.raises(ImplicitCommitError, match="autocommit"):
            conn.autocommit(True)
        assert conn.end_test() is True
        with contextlib.closing(server.connect(lease.name)) as other:
            assert scalar(other, "SELECT count(*) FROM customers") == 0
            assert scalar(other, "SELECT count(*) FROM information_schema.TABLES WHERE TABLE_NAME = 'extra'") == 0
        # What the connection cannot see — DDL inside a procedure — is detected afterwards.
        with contextlib.closing(server.connect(lease.name)) as admin, admin.cursor() as cur:
            cur.execute("CREATE PROCEDURE sneaky() BEGIN CREATE TABLE sneaky_t (id int); END")
        conn.begin_test()
        with conn.cursor() as cur:
            cur.execute("INSERT INTO customers (email) VALUES ('escaped@commit')")
            cur.execute("CALL sneaky()")
        assert conn.end_test() is False
        conn.close()
        with contextlib.closing(server.connect(lease.name)) as other:
            assert scalar(other, "SELECT count(*) FROM customers") == 1  # committed by the DDL: it escaped
    finally:
        pool.release(lease)
        pool.close()


# --------------------------------------------------------------------------- testlane.db


def test_plain_python_helpers(
    server: Any, migrations: Path, settings_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TESTLANE_IT", "1")
    settings = settings_for()
    with db.mysql_database(server, migrations=str(migrations), settings=settings) as test_db:
        assert test_db.name.startswith("tl_")
        assert test_db.sqlalchemy_url().startswith("mysql+pymysql://")
        with contextlib.closing(test_db.connect()) as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO customers (email) VALUES ('a@b.c')")
            conn.commit()
        name = test_db.name
    with contextlib.closing(server.connect()) as admin:
        assert template_state(admin, name) == "missing"
    with db.mysql_transaction(server, migrations=str(migrations), settings=settings) as conn:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO customers (email) VALUES ('x@y.z')")
        conn.commit()
        assert scalar(conn, "SELECT count(*) FROM customers") == 1
    with contextlib.closing(server.connect()) as admin:
        drop_database(admin, template_name(server, spec_from_settings(settings, migrations=str(migrations))))
    token = current_lane.set("unit")  # as in a unit-lane test
    try:
        with pytest.raises(LaneError), db.mysql_database(server, migrations=str(migrations), settings=settings):
            pass
    finally:
        current_lane.reset(token)


def test_helpers_refuse_servers_testlane_does_not_know(monkeypatch: pytest.MonkeyPatch, settings_for: Any) -> None:
    monkeypatch.setenv("TESTLANE_IT", "1")
    monkeypatch.setenv("TESTLANE_DATA_DIR", str(settings_for().data_dir))
    with (
        pytest.raises(UnsafeDatabaseError, match="not a MariaDB server testlane knows"),
        db.mysql_database("mysql://root@127.0.0.1:3306/", settings=settings_for()),
    ):
        pass


def test_admin_connections_can_send_several_statements(server: Any) -> None:
    with contextlib.closing(admin_connection(server)) as admin, admin.cursor() as cur:
        cur.execute("SELECT 1; SELECT 2")
        assert cur.fetchall() == ((1,),)
        assert cur.nextset()
        assert cur.fetchall() == ((2,),)
