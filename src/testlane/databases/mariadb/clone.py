"""Cloning a MariaDB/MySQL template into a test's database.

MySQL has no ``CREATE DATABASE ... TEMPLATE``. Measured alternatives (``bench/mariadb_clone.py``,
figures in docs/benchmarks.md): ``mariadb-dump | mariadb`` costs two process starts and a text
round trip per clone; ``CREATE TABLE ... LIKE`` does not copy foreign keys (nor views, triggers or
routines); replaying the template's own DDL in the server is the fastest correct way, so that is
what :class:`CloneScript` does:

1. once per template, read its DDL: ``SHOW CREATE TABLE``/``SEQUENCE``/``VIEW``/``TRIGGER``/
   ``PROCEDURE``/``FUNCTION``; the template's schema name is taken out of view definitions and
   ``DEFINER`` clauses are dropped (the clone's objects belong to the user that clones); which
   tables have rows, and their insertable (non-generated) columns;
2. per clone, one multi-statement round trip: ``CREATE DATABASE`` with the template's character
   set, its tables with ``foreign_key_checks = 0`` (any order works), ``INSERT ... SELECT`` only for
   tables that have rows in the template, sequences moved to the template's position, then
   routines, views (in dependency order) and triggers — after the rows, so copying fires none —
   each trigger and routine under the ``sql_mode`` it was created with.

Not copied: events (``CREATE EVENT``), and the history rows of system-versioned tables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from testlane.core.errors import DatabaseError
from testlane.databases.mariadb.sqlfiles import server_error
from testlane.databases.mariadb.template import READY_TABLE, has_schema_comments, quote
from testlane.databases.naming import require_testlane_database

__all__ = ["CloneScript", "DbObject", "build_body", "order_views", "strip_definer", "unqualify"]

_DEFINER = re.compile(r"\s*\bDEFINER\s*=\s*(?:`(?:[^`]|``)*`|'[^']*'|[\w.$-]+)@(?:`(?:[^`]|``)*`|'[^']*'|[\w.%$-]+)")
_GENERATED = re.compile(r"\b(VIRTUAL|STORED|PERSISTENT) GENERATED\b|\bROW (START|END)\b", re.IGNORECASE)


@dataclass(frozen=True)
class DbObject:
    """One object of the template: kind (``table``, ``sequence``, ``view``, ``trigger``, ``procedure``,
    ``function``), name, DDL as the server shows it, and what the copy needs."""

    kind: str
    name: str
    ddl: str
    sql_mode: str | None = None  # triggers and routines run under the mode they were created with
    columns: tuple[str, ...] = ()  # tables with rows: the columns an INSERT may set
    next_value: int | None = None  # sequences: the template's next value


def strip_definer(ddl: str) -> str:
    """The DDL without its ``DEFINER=user@host`` clause (the cloning user becomes the definer)."""
    return _DEFINER.sub("", ddl, count=1)


def unqualify(ddl: str, schema: str) -> str:
    """Take ```schema`.`` qualifiers out: the clone's objects refer to the clone's tables."""
    return ddl.replace(quote(schema) + ".", "")


def order_views(views: list[DbObject]) -> list[DbObject]:
    """Views after the views they select from (found by their quoted names in the definition)."""
    pending = sorted(views, key=lambda v: v.name)
    deps = {v.name: {o.name for o in pending if o.name != v.name and quote(o.name) in v.ddl} for v in pending}
    done: list[DbObject] = []
    placed: set[str] = set()
    while pending:
        ready = [v for v in pending if deps[v.name] <= placed] or pending[:1]  # a false dependency cycle
        for view in ready:
            done.append(view)
            placed.add(view.name)
        pending = [v for v in pending if v.name not in placed]
    return done


def build_body(template: str, objects: list[DbObject], rows: set[str]) -> list[str]:
    """The statements that fill a new, current (``USE``) database with a copy of ``template``."""
    tables = [o for o in objects if o.kind in ("table", "sequence")]
    statements = ["SET @testlane_sql_mode = @@SESSION.sql_mode, SESSION foreign_key_checks = 0"]
    statements += [unqualify(o.ddl, template) for o in tables]
    for table in tables:
        if table.kind == "table" and table.name in rows:
            cols = ", ".join(quote(c) for c in table.columns)
            statements.append(
                f"INSERT INTO {quote(table.name)} ({cols}) SELECT {cols} FROM {quote(template)}.{quote(table.name)}"
            )
        elif table.kind == "sequence" and table.next_value is not None:
            statements.append(f"DO SETVAL({quote(table.name)}, {int(table.next_value)}, 0)")
    statements.append("SET SESSION foreign_key_checks = 1")
    mode: str | None = None
    later = [o for o in objects if o.kind in ("procedure", "function")]
    later += order_views([o for o in objects if o.kind == "view"])
    later += [o for o in objects if o.kind == "trigger"]
    for obj in later:
        if obj.sql_mode is not None and obj.sql_mode != mode:
            statements.append("SET SESSION sql_mode = '" + obj.sql_mode.replace("'", "''") + "'")
            mode = obj.sql_mode
        statements.append(unqualify(strip_definer(obj.ddl), template))
    statements.append("SET SESSION sql_mode = @testlane_sql_mode")
    # Leave the clone: dropping a database ends the connections using it, this one included.
    statements.append("USE information_schema")
    return statements


@dataclass
class CloneScript:
    """The template's DDL, read once; :meth:`run` makes one clone in one round trip."""

    template: str
    charset: str
    collation: str
    body: list[str] = field(default_factory=list)
    objects: list[DbObject] = field(default_factory=list)
    comments: bool = True  # the server keeps database comments (the owner of a clone on a shared server)

    @classmethod
    def read(cls, conn: Any, template: str) -> CloneScript:
        """Read ``template``'s objects through the PyMySQL connection ``conn``."""
        with conn.cursor() as cur:
            cur.execute(
                "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA "
                "WHERE SCHEMA_NAME = %s",
                (template,),
            )
            row = cur.fetchone()
            if row is None:
                raise DatabaseError(f"the MariaDB template {template} does not exist (dropped during the run?).")
            charset, collation = row
            objects = _read_tables(cur, template)
            objects += _read_routines(cur, template)
            objects += _read_triggers(cur, template)
        rows = {o.name for o in objects if o.kind == "table" and o.columns}
        body = build_body(template, objects, rows)
        return cls(template, charset, collation, body, objects, comments=has_schema_comments(conn))

    @property
    def tables_with_rows(self) -> list[str]:
        return [o.name for o in self.objects if o.kind == "table" and o.columns]

    def statements(self, clone: str, comment: str | None = None) -> list[str]:
        """Every statement of one clone, ``CREATE DATABASE`` first (with ``comment`` where comments exist)."""
        create = f"CREATE DATABASE {quote(clone)} CHARACTER SET {self.charset} COLLATE {self.collation}"
        if comment and self.comments:
            create += " COMMENT '" + comment.replace("\\", "\\\\").replace("'", "''") + "'"
        return [create, f"USE {quote(clone)}", *self.body]

    def sql(self, clone: str, comment: str | None = None) -> str:
        """The whole clone as one multi-statement text."""
        return ";\n".join(self.statements(clone, comment))

    def run(self, conn: Any, clone: str, comment: str | None = None) -> None:
        """Create ``clone`` through ``conn`` (opened with ``CLIENT.MULTI_STATEMENTS``), commented ``comment``.

        On failure raises :class:`DatabaseError` naming the statement; the half-made clone is the
        caller's to drop, and ``conn``'s session settings are undefined (close it).
        """
        import pymysql

        require_testlane_database(clone, action="create")
        statements = self.statements(clone, comment)
        done = 0
        try:
            with conn.cursor() as cur:
                cur.execute(";\n".join(statements))
                done = 1
                while cur.nextset():
                    done += 1
        except pymysql.err.MySQLError as exc:
            failed = statements[done] if done < len(statements) else "?"
            raise DatabaseError(
                f"could not clone the MariaDB template {self.template} into {clone}: {server_error(exc)}\n"
                f"statement {done + 1} of {len(statements)}:\n    {failed[:500]}",
                hint="the template may have been dropped, or it holds an object testlane cannot copy; "
                "docs/mariadb.md lists what is copied.",
            ) from None


def _read_tables(cur: Any, template: str) -> list[DbObject]:
    cur.execute(
        "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s ORDER BY TABLE_NAME",
        (template,),
    )
    listed = [(name, kind) for name, kind in cur.fetchall() if name != READY_TABLE]
    source = quote(template)
    tables: list[DbObject] = []
    views: list[DbObject] = []
    for name, kind in listed:
        if kind == "VIEW":
            cur.execute(f"SHOW CREATE VIEW {source}.{quote(name)}")
            views.append(DbObject("view", name, cur.fetchone()[1]))
        elif kind == "SEQUENCE":
            cur.execute(f"SHOW CREATE SEQUENCE {source}.{quote(name)}")
            ddl = cur.fetchone()[1]
            cur.execute(f"SELECT next_not_cached_value FROM {source}.{quote(name)}")
            tables.append(DbObject("sequence", name, ddl, next_value=int(cur.fetchone()[0])))
        else:  # BASE TABLE, SYSTEM VERSIONED
            cur.execute(f"SHOW CREATE TABLE {source}.{quote(name)}")
            tables.append(DbObject("table", name, cur.fetchone()[1]))
    base = [t for t in tables if t.kind == "table"]
    if base:
        probe = " UNION ALL ".join(
            f"SELECT {i}, EXISTS(SELECT 1 FROM {source}.{quote(t.name)})" for i, t in enumerate(base)
        )
        cur.execute(probe)
        with_rows = {base[i].name for i, present in cur.fetchall() if present}
        if with_rows:
            cur.execute(
                "SELECT TABLE_NAME, COLUMN_NAME, EXTRA FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s "
                "ORDER BY TABLE_NAME, ORDINAL_POSITION",
                (template,),
            )
            columns: dict[str, list[str]] = {}
            for table, column, extra in cur.fetchall():
                if table in with_rows and not _GENERATED.search(extra or ""):
                    columns.setdefault(table, []).append(column)
            tables = [
                DbObject(t.kind, t.name, t.ddl, columns=tuple(columns.get(t.name, ()))) if t.name in with_rows else t
                for t in tables
            ]
    return tables + views


def _read_routines(cur: Any, template: str) -> list[DbObject]:
    cur.execute(
        "SELECT ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = %s "
        "ORDER BY ROUTINE_TYPE, ROUTINE_NAME",
        (template,),
    )
    out = []
    for name, kind in cur.fetchall():
        cur.execute(f"SHOW CREATE {kind} {quote(template)}.{quote(name)}")
        row = cur.fetchone()
        if row[2] is None:
            raise DatabaseError(
                f"cannot read the definition of {kind.lower()} {name} in the MariaDB template {template}.",
                hint="the connecting user needs the privileges to see routines it created (SHOW CREATE ROUTINE).",
            )
        out.append(DbObject(kind.lower(), name, row[2], sql_mode=row[1]))
    return out


def _read_triggers(cur: Any, template: str) -> list[DbObject]:
    cur.execute(
        "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s "
        "ORDER BY EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION, ACTION_ORDER",
        (template,),
    )
    out = []
    for (name,) in cur.fetchall():
        cur.execute(f"SHOW CREATE TRIGGER {quote(template)}.{quote(name)}")
        row = cur.fetchone()
        out.append(DbObject("trigger", name, row[2], sql_mode=row[1]))
    return out
