"""The MariaDB/MySQL engine: local ``mariadbd``/``mysqld`` binaries, a cached data directory.

There is no MariaDB wheel, so the ``local`` backend uses the machine's server (``mariadb.binary``,
else ``mariadbd``/``mysqld`` on PATH or in /usr/sbin). As with Postgres, the data directory is
initialized once per binary version (``mariadb-install-db``) into the cache and copied for each
instance: a tmpfs directory, a free port on 127.0.0.1 and a Unix socket in the instance's private
directory, durability off, no binary log, and — as root — the unprivileged service user (see
:mod:`testlane.services.privileges`). Ready means ``SELECT 1`` answered (PyMySQL). As for Postgres,
the cache is sealed against the service user (:mod:`testlane.services.cache`): each instance starts
from its own copy, and nothing a server does can change what a later run starts from.

Nobody else gets in: ``root`` (the only account) gets a random password per instance, set by an
``--init-file`` (mode 0600, see :mod:`testlane.services.credentials`) that the server runs before it
accepts its first connection, so the password never appears on a command line and there is no
moment when ``root`` has none. Every URL testlane hands out carries it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypedDict

from testlane.core.config import MariaDbSettings, Settings
from testlane.core.errors import BinaryNotFoundError, ServiceStartError
from testlane.services.base import Launch, Server
from testlane.services.binaries import reported_version
from testlane.services.cache import (
    LAYOUT,
    content_digest,
    copy_out,
)
from testlane.services.credentials import new_password, write_private
from testlane.services.process_engine import ProcessEngine

if TYPE_CHECKING:
    import pymysql.connections

__all__ = [
    "INIT_FILE",
    "MariaDbBinaries",
    "MariaDbEngine",
    "MariaDbServer",
    "MysqlConnInfo",
    "find_mariadb",
    "init_sql",
]


class MysqlConnInfo(TypedDict, total=False):
    """Keyword arguments for ``pymysql.connect``."""

    host: str
    port: int
    user: str
    password: str
    database: str
    ssl_disabled: bool


INIT_FILE = "init.sql"
# The accounts of a fresh data directory that can log in: root on the socket, and over TCP on the
# loopback addresses (``--skip-name-resolve`` matches clients by address only).
ROOT_HOSTS = ("localhost", "127.0.0.1", "::1")

# Small redo log and system tablespace: the cached directory is copied per instance.
INIT_OPTIONS = ["--innodb-log-file-size=4M", "--innodb-data-file-path=ibdata1:4M:autoextend"]
LOOPBACK = ("127.0.0.1", "localhost", "::1")
SERVER_OPTIONS = [
    *INIT_OPTIONS,
    "--skip-name-resolve",
    "--skip-log-bin",
    "--innodb-flush-log-at-trx-commit=0",
    "--innodb-doublewrite=0",
    "--sync-binlog=0",
    "--innodb-fast-shutdown=2",
    "--innodb-buffer-pool-size=64M",
    "--performance-schema=OFF",
    "--max-connections=300",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_unicode_ci",
]


@dataclass(frozen=True)
class MariaDbBinaries:
    """A MariaDB/MySQL installation: the server and its data-directory initializer."""

    server: Path
    install_db: Path
    origin: str = "mariadb.binary"  # where it was found, for messages: the setting, or "mariadbd on PATH"

    @functools.cached_property
    def version(self) -> str:
        """e.g. ``"10.11.6"`` of ``mariadbd  Ver 10.11.6-MariaDB-...`` (MySQL: ``mysqld  Ver 8.0.36 for
        Linux``); raises BinaryNotFoundError naming :attr:`origin` when ``--version`` says something else."""
        return reported_version(
            self.server,
            r"\bVer\s+(\d[^\s-]*)",
            what="MariaDB/MySQL server",
            origin=self.origin,
            setting="mariadb.binary",
        )


def find_mariadb(binary: str = "") -> MariaDbBinaries:
    """The local server binaries (``binary``, else PATH, else /usr/sbin), their version read and checked.

    Raises BinaryNotFoundError listing every place looked when none is there, or naming where the server
    was found (``mariadb.binary`` when ``binary`` is given) and what it printed when its ``--version`` is
    not a MariaDB/MySQL server's.
    """
    looked: list[str] = []
    candidates = [(Path(binary).expanduser(), "mariadb.binary")] if binary else []
    if not binary:
        for name in ("mariadbd", "mysqld"):
            hit = shutil.which(name)
            looked.append(f"{name} on PATH" + ("" if hit else " (not found)"))
            if hit:
                candidates.append((Path(hit), f"{name} on PATH"))
            candidates.append((Path("/usr/sbin") / name, str(Path("/usr/sbin") / name)))
    for server, origin in candidates:
        looked.append(f"{server} (mariadb.binary)" if binary else str(server))
        if server.is_file() and os.access(server, os.X_OK):
            for name in ("mariadb-install-db", "mysql_install_db"):
                for directory in (server.parent, server.parent.parent / "bin", Path("/usr/bin")):
                    init = directory / name
                    if init.is_file():
                        found = MariaDbBinaries(server, init, origin)
                        found.version  # noqa: B018 -- read and checked before anything is named after it
                        return found
            looked.append(f"mariadb-install-db next to {server} (not found)")
    places = "\n".join(f"  - {p}" for p in dict.fromkeys(looked))
    where = " at mariadb.binary" if binary else ""
    raise BinaryNotFoundError(
        f"no local MariaDB/MySQL server found{where}. Looked in:\n{places}",
        hint="install one (apt-get install mariadb-server), set mariadb.binary to mariadbd's path, or use the "
        "container or url backend (mariadb.backend).",
    )


def init_sql(password: str) -> str:
    """The ``--init-file`` statements that give ``root`` the instance's ``password``.

    ``mariadb-install-db`` also creates ``root@<host name>``; it is dropped, so no account without
    the password remains. ``password`` comes from :func:`~testlane.services.credentials.new_password`
    (URL-safe characters: nothing to escape in a SQL string).
    """
    hosts = ", ".join(f"'{host}'" for host in ROOT_HOSTS)
    accounts = ", ".join(f"'root'@'{host}' IDENTIFIED BY '{password}'" for host in ROOT_HOSTS)
    return (
        f"DELETE FROM mysql.global_priv WHERE User = 'root' AND Host NOT IN ({hosts});\n"
        "FLUSH PRIVILEGES;\n"
        f"ALTER USER {accounts};\n"
    )


class MariaDbServer(Server):
    """A running MariaDB/MySQL server: ``url``, ``connect(db)``, logs, ``stop()``."""

    engine: ClassVar[str] = "mariadb"
    stop_signal: ClassVar[int] = 15

    @property
    def user(self) -> str:
        return self.instance.user or "root"

    def conninfo(self, database: str | None = None) -> MysqlConnInfo:
        """Keyword arguments for ``pymysql.connect`` (TCP)."""
        info: MysqlConnInfo = {"host": self.host, "port": self.port, "user": self.user}
        if self.host in LOOPBACK:
            # PyMySQL >= 1.2 tries TLS by default and builds an SSL context per connection (~20 ms:
            # it loads the system CA store); on the loopback TLS buys nothing, so a connection costs 0.4 ms.
            info["ssl_disabled"] = True
        if self.instance.password:
            info["password"] = self.instance.password
        if database:
            info["database"] = database
        return info

    def connect(
        self, database: str | None = None, *, autocommit: bool = True, **kwargs: Any
    ) -> pymysql.connections.Connection:
        """A PyMySQL connection (autocommit by default)."""
        import pymysql

        return pymysql.connect(**self.conninfo(database), autocommit=autocommit, **kwargs)

    def dsn(self, database: str | None = None) -> str:
        return self.instance.url_for(database or "")

    def ping(self, timeout: float = 2.0) -> None:
        conn = self.connect(connect_timeout=max(1, int(timeout)))
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                cur.fetchone()
        finally:
            conn.close()

    def env(self) -> dict[str, str]:
        return {
            "TESTLANE_MARIADB_URL": self.instance.url_for(""),
            "TESTLANE_MARIADB_HOST": self.host,
            "TESTLANE_MARIADB_PORT": str(self.port),
            "TESTLANE_MARIADB_USER": self.user,
        }


class MariaDbEngine(ProcessEngine[MariaDbServer]):
    """Keeps the initialized data directory cached; launches :class:`MariaDbServer` instances."""

    kind = "mariadb"

    _binaries: MariaDbBinaries | None = None

    def default_backend(self, settings: Settings) -> str:
        return "local"  # there is no embedded MariaDB

    @property
    def md(self) -> MariaDbSettings:
        return self.settings.mariadb

    def binaries(self) -> MariaDbBinaries:
        if self._binaries is None:
            self._binaries = find_mariadb(self.md.binary)
        return self._binaries

    def datadir_key(self, bins: MariaDbBinaries) -> str:
        """The cache key of ``bins``' data directory: version, the server binary's content (not its path),
        options, :data:`LAYOUT`, service user."""
        content = content_digest(bins.server, self.context.ensure_cache_dir())
        ident = f"{bins.version}|{content}|{INIT_OPTIONS}|layout {LAYOUT}"
        return f"{bins.version}-{hashlib.sha256((ident + self.owner_key()).encode()).hexdigest()[:10]}"

    def base_datadir(self) -> Path:
        """The cached, initialized data directory (``mariadb-install-db`` runs only the first time).

        The entry is sealed (see :mod:`testlane.services.cache`): as root, owned by root and read-only to
        the service user. One that is not the invoking user's is not trusted and is built again.
        Raises ServiceStartError when ``mariadb-install-db`` or the copy into the cache fails.
        """
        bins = self.binaries()
        return self.cached_init(
            self.datadir_key(bins),
            "data",
            ready=lambda path: (path / "mysql").is_dir(),
            build=lambda staging: self._install_db(bins, staging),
            what=f"a MariaDB {bins.version} data directory",
            meta={"version": bins.version, "binary": str(bins.server)},
            sparse=True,  # ibdata1: 70 MB, mostly zeros
        )

    def _install_db(self, bins: MariaDbBinaries, target: Path) -> None:
        argv = [
            str(bins.install_db),
            "--no-defaults",
            f"--datadir={target}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--skip-name-resolve",
            *INIT_OPTIONS,
        ]
        proc = self.run_as_user(argv)
        if proc.returncode != 0:
            raise ServiceStartError(
                f"mariadb-install-db failed with exit code {proc.returncode}.",
                hint="`testlane doctor` checks the MariaDB binaries.",
                log_tail="\n".join(proc.stdout.splitlines()[-25:]),
            )

    def launch(
        self,
        name: str = "mariadb",
        *,
        detached: bool = False,
        die_with_parent: bool = True,
        data_source: Path | None = None,
    ) -> MariaDbLaunch:
        bins = self.binaries()
        source = data_source or self.base_datadir()
        instance = self.new_instance(
            name,
            detached=detached,
            backend="local",
            user="root",
            password=new_password(),
            database="",
            version=bins.version,
            extra={"binary": str(bins.server)},
        )
        return MariaDbLaunch(
            binaries=bins,
            data_source=source,
            **self.launch_options(
                instance, fixed_port=self.md.port, detached=detached, die_with_parent=die_with_parent
            ),
        )


class MariaDbLaunch(Launch):
    def __init__(self, *, binaries: MariaDbBinaries, data_source: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.binaries = binaries
        self.data_source = data_source

    def prepare_data(self) -> None:
        copy_out(self.data_source, self.instance_dir / "data", self.user)
        self.instance.socket = str(self.instance_dir / "mysqld.sock")
        assert self.instance.password is not None
        write_private(self.instance_dir / INIT_FILE, init_sql(self.instance.password), self.user)

    def argv(self, port: int) -> list[str]:
        return [
            str(self.binaries.server),
            "--no-defaults",
            f"--datadir={self.instance_dir / 'data'}",
            f"--socket={self.instance_dir / 'mysqld.sock'}",
            f"--pid-file={self.instance_dir / 'mysqld.pid'}",
            f"--tmpdir={self.instance_dir}",
            f"--init-file={self.instance_dir / INIT_FILE}",
            f"--port={port}",
            "--bind-address=127.0.0.1",
            *SERVER_OPTIONS,
        ]

    def make_server(self, popen: subprocess.Popen[bytes]) -> Server:
        return MariaDbServer(self.instance, registry=self.registry, popen=popen, owned=True)
