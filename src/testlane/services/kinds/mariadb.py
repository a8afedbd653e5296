"""The ``mariadb`` service kind (MySQL's protocol; ``mysql`` is its alias): local ``mariadbd``/``mysqld``,
a container or an existing server; there is no embedded MariaDB. The engine is
:class:`~testlane.services.mariadb.MariaDbEngine`; the handle :class:`~testlane.services.mariadb.MariaDbServer`.
"""

from __future__ import annotations

import contextlib

from testlane.core.config import Settings
from testlane.core.errors import TestlaneError
from testlane.services.base import Server
from testlane.services.kinds import register
from testlane.services.kinds.kind import ContainerSpec, DoctorCheck, ServiceKind
from testlane.services.mariadb import MariaDbEngine, MariaDbServer, find_mariadb

__all__ = ["MariaDbKind"]


class MariaDbKind(ServiceKind):
    name = "mariadb"
    display = "MariaDB"
    schemes = ("mysql", "mariadb", "mysql+pymysql")
    default_port = 3306
    default_user = "root"
    default_database = ""
    engine = MariaDbEngine
    handle = MariaDbServer
    env_names = (
        "TESTLANE_MARIADB_URL",
        "TESTLANE_MARIADB_HOST",
        "TESTLANE_MARIADB_PORT",
        "TESTLANE_MARIADB_USER",
    )
    backends = ("local", "container", "url")
    backend_hint = 'use "local" (mariadbd on this machine), "container", "url" or "auto".'
    binary_key = "binary"
    default_env_driver = "mysql"
    hosts_databases = True

    def local(self, settings: Settings) -> str:
        return str(find_mariadb(settings.mariadb.binary).server)

    def container_spec(self, settings: Settings) -> ContainerSpec:
        command = ("--innodb-flush-log-at-trx-commit=0", "--skip-log-bin", "--skip-name-resolve")
        return ContainerSpec(3306, "/var/lib/mysql", {}, "root", "", "MARIADB_ROOT_PASSWORD", command)

    def doctor_checks(self, settings: Settings) -> list[DoctorCheck]:
        return _binaries_checks(settings)

    def server_version(self, server: Server) -> str:
        assert isinstance(server, MariaDbServer)
        with contextlib.closing(server.connect()) as conn, conn.cursor() as cur:
            cur.execute("SELECT VERSION()")
            row = cur.fetchone()
        return str(row[0]).split("-")[0] if row else ""


def _binaries_checks(settings: Settings) -> list[DoctorCheck]:
    try:
        found = find_mariadb(settings.mariadb.binary)
        return [DoctorCheck("ok", "mariadb (local)", f"MariaDB/MySQL {found.version} at {found.server}")]
    except TestlaneError as exc:
        status = "fail" if settings.mariadb.backend == "local" or _auto_runs_configured(settings) else "ok"
        detail = "no local mariadbd/mysqld" if status == "ok" else exc.message
        return [DoctorCheck(status, "mariadb (local)", detail, exc.hint or "" if status == "fail" else "")]


def _auto_runs_configured(settings: Settings) -> bool:
    """``auto`` runs the configured mariadb.binary (see :meth:`ServiceKind.configured_binary`): not finding
    it there is a failure, not a note."""
    return bool(settings.mariadb.binary) and (settings.mariadb.backend or settings.backend) == "auto"


register(MariaDbKind())
