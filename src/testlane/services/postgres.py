"""The PostgreSQL engine: embedded or local binaries, a cached cluster, a fast start.

``initdb`` runs once per binary version and initdb arguments, into the cache
(``<cache_dir>/postgres/<key>/cluster``); each new instance copies that cluster
to its own directory on tmpfs and starts ``postgres`` on it directly. With
durability off, a small WAL segment size and no autovacuum, a warm start costs
one directory copy and the server's own start-up.

As root, the server runs as the unprivileged service user (see
:mod:`testlane.services.privileges`), and the cache is sealed against that user
(:mod:`testlane.services.cache`).

Nobody else gets in (:mod:`testlane.services.postgres_auth`): TCP needs the
run's random password (scram-sha-256), set over the instance's private Unix
socket as the first thing after start; every URL testlane hands out carries it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypedDict

from testlane.core.config import PostgresSettings
from testlane.core.errors import ServiceError, ServiceStartError
from testlane.services.base import Launch, Server
from testlane.services.binaries import PostgresBinaries, find_postgres
from testlane.services.cache import (
    LAYOUT,
    content_digest,
    copy_out,
)
from testlane.services.credentials import new_password
from testlane.services.postgres_auth import stored_password, write_hba
from testlane.services.privileges import (
    ensure_reachable,
)
from testlane.services.process import server_environment
from testlane.services.process_engine import ProcessEngine

if TYPE_CHECKING:
    import subprocess as _sp

    import psycopg

__all__ = ["PgConnInfo", "PostgresEngine", "PostgresServer", "server_flags", "server_settings"]


class PgConnInfo(TypedDict, total=False):
    """Keyword arguments for ``psycopg.connect``: ``host`` is a name, an address or a socket directory."""

    host: str
    port: int
    user: str
    dbname: str
    password: str


log = logging.getLogger("testlane")

SUPERUSER = "postgres"

# Server settings for a throwaway test server: no durability, no background work
# that tests do not need, errors logged with the statement that caused them.
EPHEMERAL_SETTINGS: dict[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "archive_mode": "off",
    "checkpoint_timeout": "1d",
    "max_wal_size": "1GB",
    "autovacuum": "off",
    "jit": "off",
    # Segments live in the data directory, so they go with it even after a SIGKILL
    # (the default, posix, leaves /dev/shm/PostgreSQL.* behind).
    "dynamic_shared_memory_type": "mmap",
    "log_checkpoints": "off",
    "log_min_messages": "warning",
    "log_min_error_statement": "error",
    "log_line_prefix": "%m [%p] %q%u@%d ",
}


def server_settings(pg: PostgresSettings, *, major: int, listen: dict[str, str] | None = None) -> dict[str, str]:
    """The server settings of every testlane Postgres, local or in a container: :data:`EPHEMERAL_SETTINGS`,
    ``listen`` (where a local server listens), ``postgres.max_connections``, SCRAM for the roles tests
    create (``major`` >= 10), then the project's ``postgres.settings`` (which may override all of these)."""
    settings = {**EPHEMERAL_SETTINGS, **(listen or {})}
    settings["max_connections"] = str(pg.max_connections)
    if major >= 10:
        settings["password_encryption"] = "scram-sha-256"  # roles the tests create match pg_hba
    settings.update(pg.settings)
    return settings


def server_flags(settings: dict[str, str]) -> list[str]:
    """``settings`` as ``postgres`` command-line flags: ``["-c", "fsync=off", ...]``."""
    return [arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]


class PostgresServer(Server):
    """A running PostgreSQL server: ``url``, ``dsn()``, ``connect()``, logs, ``stop()``."""

    engine: ClassVar[str] = "postgres"
    stop_signal: ClassVar[int] = 3  # SIGQUIT: immediate shutdown; the data is thrown away
    _socket_reachable = False  # see _own_conninfo

    @property
    def user(self) -> str:
        return self.instance.user or SUPERUSER

    @property
    def socket_dir(self) -> str | None:
        return self.instance.socket

    def dsn(self, dbname: str | None = None) -> str:
        """libpq URL for ``dbname`` (default: the maintenance database ``postgres``)."""
        return self.instance.url_for(dbname)

    def conninfo(self, dbname: str | None = None) -> PgConnInfo:
        """Keyword arguments for ``psycopg.connect`` (TCP)."""
        info: PgConnInfo = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "dbname": dbname or self.instance.database or "postgres",
        }
        if self.instance.password:
            info["password"] = self.instance.password
        return info

    def connect(self, dbname: str | None = None, *, autocommit: bool = True, **kwargs: Any) -> psycopg.Connection:
        """A new psycopg connection to ``dbname`` (autocommit by default).

        Over the private Unix socket when this process can reach it (the run's own processes), else
        TCP with the password: the socket skips the SCRAM exchange's two round trips and TCP's
        overhead, so testlane's own connections (the pool's, the fixtures') cost less than a URL's.
        """
        import psycopg

        return psycopg.connect(**self._own_conninfo(dbname), autocommit=autocommit, **kwargs)

    def ping(self, timeout: float = 2.0) -> None:
        import psycopg

        info = self._own_conninfo()
        with psycopg.connect(**info, connect_timeout=max(1, int(timeout)), autocommit=True) as conn:
            conn.execute("SELECT 1").fetchone()

    def _own_conninfo(self, dbname: str | None = None) -> PgConnInfo:
        if not self._socket_reachable:  # decided once it is (before start, or for another user, it is not)
            socket_dir = self.instance.socket
            self._socket_reachable = bool(
                socket_dir
                and self.instance.backend in ("embedded", "local")
                and os.access(socket_dir, os.X_OK)
                and os.path.exists(os.path.join(socket_dir, f".s.PGSQL.{self.port}"))
            )
        return self.socket_conninfo(dbname) if self._socket_reachable else self.conninfo(dbname)

    def socket_conninfo(self, dbname: str | None = None) -> PgConnInfo:
        """Keyword arguments for ``psycopg.connect`` over the instance's private Unix socket (no password).

        Only the user the server runs as and root can reach it (see :mod:`~testlane.services.postgres_auth`).
        Raises ServiceError when the instance has no socket (containers, existing servers).
        """
        if not self.instance.socket:
            raise ServiceError(f"{self.name} has no local socket (backend {self.instance.backend})")
        return {
            "host": self.instance.socket,
            "port": self.port,
            "user": self.user,
            "dbname": dbname or self.instance.database or "postgres",
        }

    def secure(self, stored: str, timeout: float = 2.0) -> None:
        """Connect over the private socket (a real query, so also a readiness check) and give the
        superuser the run's password, as the verifier ``stored`` (never the plaintext)."""
        import psycopg
        from psycopg import sql

        info = self.socket_conninfo()
        with psycopg.connect(**info, connect_timeout=max(1, int(timeout)), autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(self.user), sql.Literal(stored)))

    def env(self) -> dict[str, str]:
        env = {
            "TESTLANE_POSTGRES_URL": self.url,
            "TESTLANE_POSTGRES_HOST": self.host,
            "TESTLANE_POSTGRES_PORT": str(self.port),
            "TESTLANE_POSTGRES_USER": self.user,
        }
        if self.instance.password:
            env["TESTLANE_POSTGRES_PASSWORD"] = self.instance.password
        return env


@dataclass(frozen=True)
class ClusterCache:
    """An initialized cluster in the cache, copied for each new instance."""

    path: Path
    key: str


class PostgresEngine(ProcessEngine[PostgresServer]):
    """Finds binaries, keeps the cluster cache, and launches :class:`PostgresServer` instances."""

    kind = "postgres"

    def __init__(self, *args: Any, binaries: PostgresBinaries | None = None, **kwargs: Any) -> None:
        """As :class:`ProcessEngine`; ``binaries``: run these instead of finding them."""
        super().__init__(*args, **kwargs)
        self._binaries = binaries

    @property
    def pg(self) -> PostgresSettings:
        return self.settings.postgres

    # -- binaries and cache --------------------------------------------------------------
    def binaries(self) -> PostgresBinaries:
        """The binaries to run, copied somewhere reachable first when running as root."""
        if self._binaries is None:
            bins = find_postgres(self.backend, bin_dir=self.bin_dir or self.pg.bin_dir, version=self.pg.version)
            if self.user is not None and bins.copy_parts:
                # By content, like the cluster: every venv holding this build shares one copy.
                content = content_digest(bins.exe("postgres"), self.context.ensure_cache_dir())
                key = f"postgres-{bins.version}-{content[:10]}"
                base = ensure_reachable(
                    bins.copy_base,
                    list(bins.copy_parts),
                    bins.exe("postgres"),
                    self.context.ensure_cache_dir(),
                    key,
                )
                bins = bins.with_base(base)
            self._binaries = bins
        return self._binaries

    def cluster_key(self, bins: PostgresBinaries) -> str:
        """The cache key of ``bins``' base cluster: ``<version>-<10 hex>``.

        The hash covers the *content* of the ``postgres`` executable (:func:`~testlane.services.cache.content_digest`),
        not its path, so every virtual environment holding the same build shares one cluster; plus the
        initdb arguments, :data:`~testlane.services.cache.LAYOUT` and the user the server runs as.
        """
        exe = bins.exe("postgres")
        content = content_digest(exe, self.context.ensure_cache_dir())
        ident = f"{bins.version}|{content}|{' '.join(self.pg.initdb_args)}|layout {LAYOUT}"
        return f"{bins.version}-{_digest(ident + self.owner_key())}"

    def base_cluster(self) -> ClusterCache:
        """The cached, initialized cluster for these binaries; ``initdb`` runs only the first time.

        The entry is sealed (see :mod:`testlane.services.cache`); one that is not the invoking user's
        is not trusted and is built again.
        """
        bins = self.binaries()
        key = self.cluster_key(bins)
        cluster = self.cached_init(
            key,
            "cluster",
            ready=lambda path: (path / "PG_VERSION").exists(),
            build=lambda staging: self._initdb(bins, staging),
            what=f"a PostgreSQL {bins.version} cluster",
            meta={"version": bins.version, "binary": str(bins.exe("postgres"))},
        )
        return ClusterCache(cluster, key)

    def _initdb(self, bins: PostgresBinaries, target: Path) -> None:
        base_args = [
            str(bins.exe("initdb")),
            "-D",
            str(target),
            "-U",
            SUPERUSER,
            # Never used as is: every start passes its own hba_file (postgres_auth). Should a copy ever
            # start without it, nothing gets in over TCP.
            "--auth-local=trust",
            "--auth-host=reject",
            "--no-sync",
            "--no-instructions",
        ]
        if bins.major >= 11:
            base_args.append("--wal-segsize=1")  # 1 MB of WAL to copy per instance instead of 16
        if bins.major >= 16:
            # initdb's own --boot and --single backends: with initdb's default (posix) each maps segments in
            # /dev/shm that a killed initdb (an interrupted cold start) leaves there, the service user's, until
            # a reboot. In the data directory, they go with the staging directory. (`-c` is PostgreSQL 16's;
            # it also lands in postgresql.conf, which every start overrides anyway: not part of the cache key.)
            base_args += ["-c", f"dynamic_shared_memory_type={EPHEMERAL_SETTINGS['dynamic_shared_memory_type']}"]
        args = list(self.pg.initdb_args)
        proc = self.run_as_user(base_args + args, self._initdb_env())
        if proc.returncode != 0 and "locale" in proc.stdout.lower() and any(a.startswith("--locale") for a in args):
            log.debug("initdb: locale unavailable, retrying with --no-locale:\n%s", proc.stdout)
            for child in target.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
            args = [a for a in args if not a.startswith("--locale")] + ["--no-locale"]
            proc = self.run_as_user(base_args + args, self._initdb_env())
        if proc.returncode != 0:
            raise ServiceStartError(
                f"initdb failed for PostgreSQL {bins.version} ({bins.origin}) with exit code {proc.returncode}.",
                hint="check postgres.initdb_args; `testlane doctor` checks the binaries and permissions.",
                log_tail="\n".join(proc.stdout.splitlines()[-25:]),
            )

    @staticmethod
    def _initdb_env() -> dict[str, str]:
        return {**server_environment(), "LC_ALL": os.environ.get("LC_ALL", "C.UTF-8")}

    # -- instances ---------------------------------------------------------------------------
    def launch(
        self,
        name: str = "postgres",
        *,
        detached: bool = False,
        data_source: Path | None = None,
        die_with_parent: bool = True,
    ) -> PostgresLaunch:
        """A launch of a new instance (call ``.run()``, or prepare/spawn/wait yourself)."""
        bins = self.binaries()
        source = data_source or self.base_cluster().path
        instance = self.new_instance(
            name,
            detached=detached,
            backend=bins.source,
            user=SUPERUSER,
            database="postgres",
            version=bins.version,
            password=new_password(),
            # configured_backend: what the settings asked for (`auto` or a forced one), for hints given later
            # by code that only has the server (a missing extension: services.backends.missing_extensions_hint).
            extra={
                "bin_dir": str(bins.bin_dir),
                "data_source": str(source),
                "configured_backend": self.pg.backend or self.settings.backend,
            },
        )
        return PostgresLaunch(
            engine=self,
            binaries=bins,
            data_source=source,
            **self.launch_options(
                instance, fixed_port=self.pg.port, detached=detached, die_with_parent=die_with_parent
            ),
        )


class PostgresLaunch(Launch):
    """Copies the cached cluster into the instance directory and runs ``postgres`` on it."""

    def __init__(self, *, engine: PostgresEngine, binaries: PostgresBinaries, data_source: Path, **kwargs: Any):
        super().__init__(**kwargs)
        self.engine = engine
        self.binaries = binaries
        self.data_source = data_source
        self._stored_password: str | None = None

    @property
    def data_dir(self) -> Path:
        return self.instance_dir / "data"

    def prepare_data(self) -> None:
        copy_out(self.data_source, self.data_dir, self.user)
        for stale in ("postmaster.pid", "postmaster.opts"):
            (self.data_dir / stale).unlink(missing_ok=True)
        write_hba(self.instance_dir, self.binaries.major)
        # The socket goes into the instance directory: 0700, owned by the user the server runs as.
        self.instance.socket = str(self.instance_dir)

    def argv(self, port: int) -> list[str]:
        listen = {"listen_addresses": "127.0.0.1", "port": str(port), "unix_socket_directories": str(self.instance_dir)}
        settings = server_settings(self.engine.pg, major=self.binaries.major, listen=listen)
        settings.update(
            {
                # After the user's settings: who may connect is not configurable per project.
                "hba_file": str(self.instance_dir / "pg_hba.conf"),
                "unix_socket_directories": str(self.instance_dir),  # trust applies there: it stays private
                "unix_socket_permissions": "0700",
            }
        )
        return [str(self.binaries.exe("postgres")), "-D", str(self.data_dir), *server_flags(settings)]

    def make_server(self, popen: _sp.Popen[bytes]) -> Server:
        return PostgresServer(self.instance, registry=self.registry, popen=popen, owned=True)

    def check_ready(self, server: Server) -> bool:
        """Ready when the private socket answers; that first connection sets the run's password."""
        assert isinstance(server, PostgresServer) and self.instance.password
        if self._stored_password is None:
            self._stored_password = stored_password(
                self.instance.password,
                server.user,
                major=self.binaries.major,
                iterations=self.engine.pg.scram_iterations,
            )
        server.secure(self._stored_password, timeout=1.0)
        return True


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]
