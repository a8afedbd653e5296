"""The run's application database, and the mapped environment that points the application at it.

An adopted application builds its settings from its own variables (``[tool.testlane.env]``). They
point at the run's *application database* ``tl_<run id>_run_app``: a clone of the template, so it is
migrated and seeded (by ``db.migrations`` and the ``setup`` commands) like every test's database. Tests
that use testlane's fixtures still get their own databases; the application's own code paths use this one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from testlane.core.config import Settings
from testlane.core.envmap import referenced_services
from testlane.databases.leftovers import mark_owner
from testlane.databases.naming import worker_database_name
from testlane.databases.template import TemplateSpec, drop_database, ensure_template
from testlane.services.base import Server
from testlane.services.env_mapping import render_mapping

__all__ = ["app_database_name", "drop_app_databases", "ensure_app_database", "mapped_environment"]


def app_database_name(run_id: str) -> str:
    return worker_database_name(run_id, "run", "app")


def ensure_app_database(server: Any, spec: TemplateSpec, run_id: str) -> str:
    """Create the application database of the run (a clone of the template) unless it exists."""
    import psycopg
    from psycopg import sql

    name = app_database_name(run_id)
    template = ensure_template(server, spec) if not spec.empty else "template1"
    with server.connect() as admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return name
        try:
            query = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
            admin.execute(query)
        except psycopg.errors.DuplicateDatabase:
            return name  # created by a concurrent worker
        if server.instance.backend == "url":
            mark_owner(admin, name, server)
    return name


def _ensure_mariadb_app_database(server: Any, run_id: str) -> str:
    name = app_database_name(run_id)
    conn = server.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{name}`")
    finally:
        conn.close()
    return name


def mapped_environment(
    settings: Settings, servers: Mapping[str, Server], run_id: str, *, only_available: bool = False
) -> dict[str, str]:
    """``[tool.testlane.env]`` rendered for this run (creating the application databases it needs).

    ``only_available``: leave out the variables whose services are not in ``servers`` (`testlane services
    env` with only some services started) instead of raising ConfigError.
    """
    if not settings.env:
        return {}
    wanted = referenced_services(settings.env)
    databases: dict[str, str] = {}
    if "postgres" in wanted and "postgres" in servers:
        databases["postgres"] = ensure_app_database(servers["postgres"], TemplateSpec.from_settings(settings), run_id)
    if "mariadb" in wanted and "mariadb" in servers:
        databases["mariadb"] = _ensure_mariadb_app_database(servers["mariadb"], run_id)
    if "s3" in wanted and "s3" in servers:
        from testlane.databases.s3_isolation import ensure_app_bucket

        ensure_app_bucket(servers["s3"])  # type: ignore[arg-type]
    return render_mapping(settings.env, servers, databases=databases, only_available=only_available)


def drop_app_databases(servers: Mapping[str, Server], run_id: str) -> None:
    """On an existing server, drop the run's application database (testlane's own servers just go)."""
    server = servers.get("postgres")
    if server is not None and server.instance.backend == "url":
        with contextlib.suppress(Exception), server.connect() as admin:  # type: ignore[attr-defined]
            drop_database(admin, app_database_name(run_id))
    mariadb = servers.get("mariadb")
    if mariadb is not None and mariadb.instance.backend == "url":
        with contextlib.suppress(Exception):
            conn = mariadb.connect()  # type: ignore[attr-defined]
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{app_database_name(run_id)}`")
            conn.close()
    rabbitmq = servers.get("rabbitmq")
    if rabbitmq is not None and rabbitmq.instance.backend == "url":
        from testlane.services.rabbitmq_vhosts import delete_app_vhost

        with contextlib.suppress(Exception):
            delete_app_vhost(rabbitmq)  # type: ignore[arg-type]
