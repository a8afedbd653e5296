"""MariaDB/MySQL isolation, the parts without a server: splitting scripts, clone scripts, implicit commits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from testlane.core.config import load_settings
from testlane.core.errors import ConfigError
from testlane.databases.leftovers import classify
from testlane.databases.mariadb.clone import CloneScript, DbObject, build_body, order_views, strip_definer, unqualify
from testlane.databases.mariadb.engine import clone_name
from testlane.databases.mariadb.sqlfiles import Statement, is_empty_statement, migration_error, split_script
from testlane.databases.mariadb.template import spec_from_settings
from testlane.databases.mariadb.testdb import MysqlTestDatabase
from testlane.databases.mariadb.transaction import implicit_commit
from testlane.databases.naming import is_testlane_name, run_id_of
from testlane.databases.owner import OwnerRecord

SCRIPT = """\
-- customers
CREATE TABLE a (id int); -- trailing comment

/* a block comment */ CREATE TRIGGER trg BEFORE INSERT ON a FOR EACH ROW
BEGIN
  SET NEW.id = NEW.id + 1;
END;
DELIMITER //
CREATE FUNCTION f() RETURNS int
BEGIN RETURN 1; END//
CREATE PROCEDURE p() BEGIN SELECT 1; SELECT 2; END //
DELIMITER ;
/*!40101 SET NAMES utf8mb4 */;
# nothing but a comment;
INSERT INTO a VALUES (1);
-- the end
"""


def test_scripts_split_into_statements_with_their_lines() -> None:
    statements = split_script(SCRIPT)
    assert [s.line for s in statements] == [2, 4, 9, 11, 13, 15]
    assert statements[0].sql.startswith("CREATE TABLE a (id int)")
    assert statements[1].sql.endswith("SET NEW.id = NEW.id + 1;\nEND")  # the body stays whole
    assert statements[2].sql == "CREATE FUNCTION f() RETURNS int\nBEGIN RETURN 1; END"
    assert statements[3].sql == "CREATE PROCEDURE p() BEGIN SELECT 1; SELECT 2; END"
    assert statements[4].sql == "/*!40101 SET NAMES utf8mb4 */"  # executable comments are statements
    assert statements[5].sql == "INSERT INTO a VALUES (1)"


def test_empty_statements() -> None:
    assert is_empty_statement("  -- only a comment\n/* and another */ ;")
    assert is_empty_statement("# hash comment")
    assert not is_empty_statement("/*!50003 CREATE TRIGGER x */")
    assert not is_empty_statement("/*M!100100 SET x = 1 */")
    assert split_script("\n-- nothing here\n") == []


def test_migration_errors_name_file_line_statement_and_server_error(tmp_path: Path) -> None:
    error = migration_error(
        Exception(1146, "Table 'tl_tpl_x.nope' doesn't exist"),
        tmp_path / "002_broken.sql",
        Statement(3, "ALTER TABLE nope\n  ADD COLUMN x int"),
    )
    text = str(error)
    assert (
        f"migration failed in {tmp_path / '002_broken.sql'}: Table 'tl_tpl_x.nope' doesn't exist (error 1146)" in text
    )
    assert "statement (line 3):\n    ALTER TABLE nope\n      ADD COLUMN x int" in text
    assert "hint:" in text


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TABLE x (id int)",
        "  create index i on t (a)",
        "/* why */ ALTER TABLE t ADD c int",
        "-- note\nDROP TABLE t",
        "DROP VIEW v",
        "CREATE OR REPLACE TABLE t (id int)",
        "RENAME TABLE a TO b",
        "TRUNCATE t",
        "TRUNCATE TABLE t",
        "BEGIN",
        "begin work",
        "START TRANSACTION",
        "COMMIT",
        "ROLLBACK",
        "SET autocommit = 1",
        "set @@autocommit=ON",
        "SET SESSION autocommit = 1",
        "LOCK TABLES t WRITE",
        "GRANT SELECT ON *.* TO x",
        "ANALYZE TABLE t",
        "OPTIMIZE TABLE t",
        "FLUSH PRIVILEGES",
        b"CREATE DATABASE x",
    ],
)
def test_statements_that_commit_implicitly_are_recognized(sql: str | bytes) -> None:
    assert implicit_commit(sql) is not None


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM t",
        "INSERT INTO t VALUES (1)",
        "UPDATE t SET a = 'CREATE TABLE x'",
        "DELETE FROM t",
        "CREATE TEMPORARY TABLE tmp (id int)",
        "CREATE OR REPLACE TEMPORARY TABLE tmp (id int)",
        "DROP TEMPORARY TABLE tmp",
        "SAVEPOINT s",
        "ROLLBACK TO SAVEPOINT s",
        "rollback work to s",
        "RELEASE SAVEPOINT s",
        "SET autocommit = 0",
        "SET @x = 1",
        "WITH c AS (SELECT 1) SELECT * FROM c",
        "CALL p()",
        "SELECT 'TRUNCATE'",
    ],
)
def test_other_statements_pass(sql: str) -> None:
    assert implicit_commit(sql) is None


def test_long_statements_are_shortened_in_messages() -> None:
    words = implicit_commit("CREATE TABLE " + "x" * 100 + " (id int)")
    assert words is not None
    assert words.endswith("...")
    assert len(words) == 60


def test_definers_and_the_template_schema_are_taken_out() -> None:
    ddl = (
        "CREATE ALGORITHM=UNDEFINED DEFINER=`root`@`127.0.0.1` SQL SECURITY DEFINER VIEW `v` AS "
        "select `tl_tpl_1`.`t`.`id` AS `id` from `tl_tpl_1`.`t`"
    )
    cleaned = unqualify(strip_definer(ddl), "tl_tpl_1")
    assert cleaned == "CREATE ALGORITHM=UNDEFINED SQL SECURITY DEFINER VIEW `v` AS select `t`.`id` AS `id` from `t`"
    assert strip_definer("CREATE DEFINER='app'@'%' TRIGGER t") == "CREATE TRIGGER t"
    assert unqualify("select `other_db`.`t`.`id`", "tl_tpl_1") == "select `other_db`.`t`.`id`"


def test_views_come_after_the_views_they_use() -> None:
    views = [
        DbObject("view", "a_total", "CREATE VIEW `a_total` AS select count(0) from `z_base`"),
        DbObject("view", "m_double", "CREATE VIEW `m_double` AS select * from `a_total` join `z_base`"),
        DbObject("view", "z_base", "CREATE VIEW `z_base` AS select 1 from `t`"),
    ]
    assert [v.name for v in order_views(views)] == ["z_base", "a_total", "m_double"]
    cyclic = [DbObject("view", "x", "`y`"), DbObject("view", "y", "`x`")]  # false dependencies: still all there
    assert sorted(v.name for v in order_views(cyclic)) == ["x", "y"]


def test_clone_body_order() -> None:
    objects = [
        DbObject("table", "orders", "CREATE TABLE `orders` (... REFERENCES `customers` ...)"),
        DbObject("table", "countries", "CREATE TABLE `countries` (...)", columns=("code", "name")),
        DbObject("sequence", "numbers", "CREATE SEQUENCE `numbers`", next_value=1001),
        DbObject("view", "v", "CREATE DEFINER=`root`@`%` VIEW `v` AS select 1 from `tpl`.`orders`"),
        DbObject("trigger", "trg", "CREATE DEFINER=`root`@`%` TRIGGER trg ...", sql_mode="STRICT_TRANS_TABLES"),
        DbObject("function", "f", "CREATE DEFINER=`root`@`%` FUNCTION `f`() ...", sql_mode="STRICT_TRANS_TABLES"),
    ]
    body = build_body("tpl", objects, {"countries"})
    assert body[0].startswith("SET @testlane_sql_mode = @@SESSION.sql_mode, SESSION foreign_key_checks = 0")
    assert body[1:4] == [objects[0].ddl, objects[1].ddl, objects[2].ddl]
    assert body[4] == "INSERT INTO `countries` (`code`, `name`) SELECT `code`, `name` FROM `tpl`.`countries`"
    assert body[5] == "DO SETVAL(`numbers`, 1001, 0)"
    assert body[6] == "SET SESSION foreign_key_checks = 1"
    assert body[7] == "SET SESSION sql_mode = 'STRICT_TRANS_TABLES'"
    assert body[8:11] == [
        "CREATE FUNCTION `f`() ...",
        "CREATE VIEW `v` AS select 1 from `orders`",
        "CREATE TRIGGER trg ...",
    ]
    assert body[-2:] == ["SET SESSION sql_mode = @testlane_sql_mode", "USE information_schema"]
    assert not any("INSERT INTO `orders`" in s for s in body)  # no rows in the template: no copy


def test_clone_names_are_recognized_as_testlane_databases() -> None:
    name = clone_name("0a1b2c3d", "gw1", 7)
    assert name == "tl_0a1b2c3d_gw1_m7"
    assert is_testlane_name(name)
    assert run_id_of(name) == "0a1b2c3d"


def test_template_spec_follows_files_and_server_version(tmp_path: Path) -> None:
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "001.sql").write_text("CREATE TABLE a (id int);")
    settings = load_settings(start=tmp_path, environ={}, overrides={"mariadb.migrations": "migrations"})
    spec = spec_from_settings(settings)
    first = spec.name("mariadb 10.11.19")
    assert first.startswith("tl_tpl_")
    assert spec.name("mariadb 11.4.2") != first
    (tmp_path / "migrations" / "001.sql").write_text("CREATE TABLE a (id bigint);")
    assert spec_from_settings(settings).name("mariadb 10.11.19") != first
    assert spec_from_settings(load_settings(start=tmp_path, environ={})).empty
    with pytest.raises(ConfigError, match="does not exist"):
        spec_from_settings(settings, migrations="nowhere")


def test_sqlalchemy_url_uses_pymysql() -> None:
    tdb = MysqlTestDatabase("tl_x", "mysql://root@127.0.0.1:3306/tl_x", server=None)
    assert tdb.sqlalchemy_url() == "mysql+pymysql://root@127.0.0.1:3306/tl_x"
    assert tdb.sqlalchemy_url("mysqldb") == "mysql+mysqldb://root@127.0.0.1:3306/tl_x"


def test_clones_on_shared_servers_carry_their_owner_where_the_server_keeps_comments() -> None:
    script = CloneScript("tl_tpl_1", "utf8mb4", "utf8mb4_unicode_ci", ["SET x = 1"])
    create = script.statements("tl_0a1b2c3d_main_m1", "testlane:v1 run=0a1b2c3d host=h pid=1 ctime=- created=1")[0]
    assert create == (
        "CREATE DATABASE `tl_0a1b2c3d_main_m1` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci "
        "COMMENT 'testlane:v1 run=0a1b2c3d host=h pid=1 ctime=- created=1'"
    )
    assert "COMMENT" not in script.statements("tl_x", None)[0]
    assert script.statements("tl_x", "it's")[0].endswith("COMMENT 'it''s'")
    script.comments = False  # MySQL: no database comments
    assert "COMMENT" not in script.statements("tl_x", "testlane run=...")[0]


def test_leftover_verdicts_follow_the_complete_owner_record() -> None:
    host = "this-host"
    now = 1_800_000_000.0
    name = "tl_0a1b2c3d_main_m1"
    dead = 2**22 + 12345  # above the default pid_max: no such process

    def verdict(comment: str, *, other_hosts_older_than: float | None = None) -> str | None:
        return classify(name, comment, now=now, host=host, other_hosts_older_than=other_hosts_older_than).reason

    def record(*, on: str = host, pid: int = dead, created: int = int(now) - 10, run: str = "0a1b2c3d") -> str:
        return OwnerRecord(run, on, pid, None, created).render()

    assert verdict("") is None
    assert verdict("someone else's comment") is None
    assert verdict(record()) == f"its owner (pid {dead} on this host) is gone"
    assert verdict(record(pid=os.getpid())) is None  # alive
    assert verdict(" " + record()) is None  # anything around the record: not testlane's
    assert verdict(record() + "\n") is None
    assert verdict("copy of " + record()) is None
    assert verdict(record(run="ffffffff")) is None  # the name belongs to another run
    assert verdict(record().replace(f" pid={dead}", "")) is None
    old = record(on="other", created=int(now) - 7200)
    assert verdict(old) is None  # another host's owner cannot be checked: never by default
    assert verdict(old, other_hosts_older_than=3600) == "made on other more than 1 h ago (--other-hosts-older-than)"
    assert verdict(record(on="other"), other_hosts_older_than=3600) is None  # young
    parsed = OwnerRecord.parse(record())
    assert parsed is not None and parsed.render() == record() and parsed.names(name)
