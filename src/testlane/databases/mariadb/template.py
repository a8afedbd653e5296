"""The MariaDB/MySQL template: a database migrated once per server, then cloned per test.

The template is ``tl_tpl_<hash>``; the hash (:class:`~testlane.databases.template.TemplateSpec`'s
fingerprint, shared with Postgres) covers the migration files' names and contents and the server's
product and version, so a changed file means a new template and an unchanged one is never migrated
twice on the same server.

:func:`ensure_template` builds it under a server-wide named lock (``GET_LOCK``): concurrent xdist
workers and concurrent runs sharing a server wait for one build instead of racing. The lock belongs
to the building connection, so a crashed builder releases it. The database is marked ready only
after every file succeeded — with the schema comment ``testlane: template ready`` (MariaDB 10.5+), or
an empty marker table where databases have no comments (MySQL; clones leave that table out) — so a
half-built template (a crash mid-build) is recognized, dropped and rebuilt; a failed build is dropped
and reported as a :class:`~testlane.core.errors.MigrationError`.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from testlane.core.config import Settings
from testlane.core.errors import DatabaseError
from testlane.core.redact import redact_url
from testlane.databases.mariadb.sqlfiles import apply_sql_folder, server_error
from testlane.databases.migrations import MigrationSource, SqlFolder
from testlane.databases.naming import require_testlane_database
from testlane.databases.template import TemplateSpec, dropped_on_failure

if TYPE_CHECKING:
    from testlane.services.mariadb import MariaDbServer

__all__ = [
    "READY_COMMENT",
    "READY_TABLE",
    "create_database",
    "drop_database",
    "ensure_template",
    "has_schema_comments",
    "quote",
    "spec_from_settings",
    "template_name",
    "template_state",
]

log = logging.getLogger("testlane")

READY_COMMENT = "testlane: template ready"
READY_TABLE = "_testlane_template_ready"  # MySQL only: it has no schema comments
BUILD_LOCK_TIMEOUT = 600  # seconds to wait for another process's build


def quote(identifier: str) -> str:
    """A backquoted MySQL identifier."""
    return "`" + identifier.replace("`", "``") + "`"


def spec_from_settings(settings: Settings, migrations: str | SqlFolder | None = None) -> TemplateSpec:
    """The template spec of ``mariadb.migrations`` (a folder of ``.sql`` files), or of ``migrations``."""
    value: Any = settings.mariadb.migrations if migrations is None else migrations
    sources: tuple[MigrationSource, ...] = ()
    if isinstance(value, SqlFolder):
        sources = (value,)
    elif value:
        sources = (SqlFolder(settings.resolve_path(str(value))),)
    return TemplateSpec(sources, label=", ".join(s.describe() for s in sources))


def version_key(server: MariaDbServer) -> str:
    """What of the server goes into the template's hash: product and version."""
    return f"mariadb {server.version}"


def template_name(server: MariaDbServer, spec: TemplateSpec) -> str:
    return spec.name(version_key(server))


def has_schema_comments(conn: Any) -> bool:
    """MariaDB 10.5+ keeps a comment per database; MySQL and older MariaDB do not."""
    return bool(
        _scalar(
            conn,
            "SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = 'information_schema' "
            "AND TABLE_NAME = 'SCHEMATA' AND COLUMN_NAME = 'SCHEMA_COMMENT'",
        )
    )


def _scalar(conn: Any, sql: str, args: Any = None) -> Any:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        row = cur.fetchone()
    return row[0] if row else None


def template_state(conn: Any, name: str, *, comments: bool = True) -> str:
    """``ready`` (marked after a complete build), ``partial`` (exists, not marked) or ``missing``."""
    if comments:
        row = None
        with conn.cursor() as cur:
            cur.execute("SELECT SCHEMA_COMMENT FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (name,))
            row = cur.fetchone()
        if row is None:
            return "missing"
        return "ready" if row[0] == READY_COMMENT else "partial"
    exists = _scalar(conn, "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (name,))
    if not exists:
        return "missing"
    marked = _scalar(
        conn,
        "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
        (name, READY_TABLE),
    )
    return "ready" if marked else "partial"


def create_database(conn: Any, name: str) -> None:
    """``CREATE DATABASE`` for a name testlane gives (``tl_...``)."""
    require_testlane_database(name, action="create")
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {quote(name)}")


def drop_database(conn: Any, name: str) -> None:
    """Drop a database testlane made: its connections are ended first, so the drop cannot wait on them."""
    require_testlane_database(name, action="drop")
    import pymysql

    with conn.cursor() as cur:
        cur.execute(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s AND ID <> CONNECTION_ID()",
            (name,),
        )
        for (thread_id,) in cur.fetchall():
            with contextlib.suppress(pymysql.err.MySQLError):  # already gone
                cur.execute(f"KILL CONNECTION {int(thread_id)}")
        cur.execute(f"DROP DATABASE IF EXISTS {quote(name)}")


def ensure_template(server: MariaDbServer, spec: TemplateSpec) -> str:
    """Build ``spec``'s template on ``server`` unless it is already there; return its name."""
    import pymysql

    name = template_name(server, spec)
    lock = f"testlane:{name}"
    admin = server.connect()
    try:
        comments = has_schema_comments(admin)
        if template_state(admin, name, comments=comments) == "ready":
            return name
        got = _scalar(admin, "SELECT GET_LOCK(%s, %s)", (lock, BUILD_LOCK_TIMEOUT))
        if got != 1:
            raise DatabaseError(
                f"timed out after {BUILD_LOCK_TIMEOUT} s waiting for another process to build the MariaDB template "
                f"{name} (named lock {lock!r}).",
                hint="a migration may hang; `SHOW PROCESSLIST` on the server shows what the builder does.",
            )
        try:
            state = template_state(admin, name, comments=comments)
            if state == "ready":
                return name  # built by someone else while we waited
            if state == "partial":
                log.info("dropping half-built MariaDB template %s (a previous build did not finish)", name)
                drop_database(admin, name)
            _build(server, admin, name, spec, comments=comments)
        finally:
            with contextlib.suppress(pymysql.err.MySQLError):
                _scalar(admin, "SELECT RELEASE_LOCK(%s)", (lock,))
    except pymysql.err.MySQLError as exc:
        raise DatabaseError(
            f"could not prepare the MariaDB template {name} on {redact_url(server.url)}: {server_error(exc)}",
            hint="check that the server's user may create databases (testlane creates and drops only tl_... "
            "databases).",
        ) from None
    finally:
        admin.close()
    return name


def _build(server: MariaDbServer, admin: Any, name: str, spec: TemplateSpec, *, comments: bool) -> None:
    log.debug("building MariaDB template %s from %s", name, spec.describe())
    create_database(admin, name)
    with dropped_on_failure(lambda: drop_database(admin, name), f"MariaDB template {name}"):
        conn = server.connect(name)
        try:
            for source in spec.migrations:
                if not isinstance(source, SqlFolder):  # pragma: no cover - spec_from_settings builds folders only
                    raise DatabaseError(f"MariaDB templates are built from .sql folders, not {source.describe()}")
                apply_sql_folder(conn, source)
        finally:
            conn.close()
        with admin.cursor() as cur:
            if comments:
                cur.execute(f"ALTER DATABASE {quote(name)} COMMENT = %s", (READY_COMMENT,))
            else:
                cur.execute(f"CREATE TABLE {quote(name)}.{quote(READY_TABLE)} (ready int)")
