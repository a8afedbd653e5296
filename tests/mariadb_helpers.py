"""Helpers for the MariaDB tests: this machine's servers, and what is left on the existing one."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pymysql

from testlane.databases.mariadb.template import drop_database, spec_from_settings, template_name
from testlane.databases.migrations import SqlFolder
from testlane.services.external import instance_from_url, server_version
from testlane.services.mariadb import MariaDbServer, find_mariadb

EXISTING_URL = "mysql://root@127.0.0.1:3306/"


def has_local_mariadb() -> bool:
    """True when this machine has ``mariadbd`` (the ``local`` backend)."""
    try:
        find_mariadb()
    except Exception:
        return False
    return True


def existing_server() -> MariaDbServer | None:
    """A handle on the machine's running MariaDB (127.0.0.1:3306, root), or None when it does not answer."""
    server = MariaDbServer(instance_from_url("mariadb", EXISTING_URL, run_id="tests", name="mariadb"), owned=False)
    try:
        server.instance.version = server_version(server)
    except pymysql.err.MySQLError:
        return None
    return server


def existing_databases(pattern: str) -> list[str]:
    """Databases on the existing server whose names match a LIKE pattern (``tl\\_abcd1234\\_%``)."""
    server = existing_server()
    assert server is not None
    with contextlib.closing(server.connect()) as conn, conn.cursor() as cur:
        cur.execute("SHOW DATABASES LIKE %s", (pattern,))
        return sorted(row[0] for row in cur.fetchall())


def drop_existing_template(migrations: Path) -> str:
    """Drop the template of ``migrations`` (as they are now) from the existing server; return its name."""
    from testlane.core.config import load_settings

    server = existing_server()
    assert server is not None
    name = template_name(server, spec_from_settings(load_settings(environ={}), SqlFolder(migrations)))
    with contextlib.closing(server.connect()) as conn:
        drop_database(conn, name)
    return name


def backend_config(backend: str) -> str:
    """The ``[tool.testlane.mariadb]`` lines that choose ``backend``."""
    if backend == "url":
        return f'backend = "url"\nurl = "{EXISTING_URL}"'
    return f'backend = "{backend}"'
