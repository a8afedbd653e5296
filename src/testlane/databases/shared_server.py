"""What testlane tells the user about an existing server it shares (the ``url`` backend).

On such a server testlane creates and drops only its own ``tl_`` databases (see
:mod:`testlane.databases.leftovers` and :mod:`testlane.databases.owner`). When the server also holds
other databases — a developer's, an application's — the run says so once, so nobody is surprised to
see testlane's databases come and go next to theirs: :func:`shared_server_notices`, printed by
``testlane run`` after the banner and by the pytest process that owns the run (never by xdist
workers).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from typing import Any

from testlane.core.config import Settings
from testlane.services.backends import choose_backend
from testlane.services.base import Server
from testlane.services.external import instance_from_url, server_class

__all__ = ["configured_url_servers", "foreign_databases", "shared_server_notices"]

log = logging.getLogger("testlane")

# Databases every server has: not anyone's data.
SYSTEM_DATABASES = {
    "postgres": {"postgres"},
    "mariadb": {"information_schema", "mysql", "performance_schema", "sys"},
}
SHOWN = 5  # names listed in the notice
CONNECT_TIMEOUT = 5  # seconds: a notice must not hold up a run on a server that does not answer


def foreign_databases(server: Server) -> list[str]:
    """Databases on ``server`` that are neither testlane's (``tl_``) nor the server's own (sorted)."""
    if server.engine == "postgres":
        with server.connect(connect_timeout=CONNECT_TIMEOUT) as conn:  # type: ignore[attr-defined]
            rows = conn.execute(
                "SELECT datname FROM pg_database WHERE NOT datistemplate AND datname NOT LIKE 'tl\\_%'"
            ).fetchall()
    else:
        conn = server.connect(connect_timeout=CONNECT_TIMEOUT)  # type: ignore[attr-defined]
        with contextlib.closing(conn), conn.cursor() as cur:
            cur.execute("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME NOT LIKE 'tl\\_%'")
            rows = cur.fetchall()
    system = SYSTEM_DATABASES.get(server.engine, set())
    return sorted(str(row[0]) for row in rows if str(row[0]) not in system)


def shared_server_notices(servers: Iterable[Server]) -> list[str]:
    """One line per existing Postgres/MariaDB server that holds databases other than testlane's.

    A server that cannot be asked is skipped (the run itself reports it unreachable)."""
    notices = []
    for server in servers:
        if server.instance.backend != "url" or server.engine not in SYSTEM_DATABASES:
            continue
        try:
            names = foreign_databases(server)
        except Exception as exc:
            log.debug("could not list the databases of %s: %s", server.instance.extra.get("url"), exc)
            continue
        if not names:
            continue
        shown = ", ".join(names[:SHOWN]) + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")
        notices.append(
            f"the existing {server.engine} server at {server.instance.host}:{server.instance.port} holds "
            f"databases that are not testlane's ({shown}); testlane only creates and drops its own tl_ "
            "databases there and leaves every other database alone."
        )
    return notices


def configured_url_servers(settings: Settings, services: Iterable[str]) -> list[Any]:
    """Handles (nothing started) on the existing Postgres/MariaDB servers that ``services`` use by URL."""
    handles = []
    for service in services:
        if service not in SYSTEM_DATABASES:
            continue
        url = str(getattr(settings, service).url)
        if not url or choose_backend(service, settings).backend != "url":
            continue
        instance = instance_from_url(service, url, run_id="notice", name=service)
        handles.append(server_class(service)(instance))
    return handles
