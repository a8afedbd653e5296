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
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypedDict

from testlane.core.config import Settings
from testlane.core.errors import ServiceError, ServiceStartError
from testlane.core.runtime import RunContext, is_root
from testlane.services.backends import configured_backend
from testlane.services.base import Launch, Progress, Server
from testlane.services.binaries import PostgresBinaries, find_postgres
from testlane.services.cache import (
    LAYOUT,
    building,
    content_digest,
    copy_out,
    staging_path,
    store,
    sweep_staging,
    touch,
    trusted,
    write_meta,
)
from testlane.services.credentials import new_password
from testlane.services.instance import Instance
from testlane.services.postgres_auth import stored_password, write_hba
from testlane.services.privileges import (
    ServiceUser,
    ensure_reachable,
    require_traversable,
    resolve_service_user,
)
from testlane.services.process import ProcessRef, server_environment
from testlane.services.registry import Registry

if TYPE_CHECKING:
    import subprocess as _sp

    import psycopg

__all__ = ["PgConnInfo", "PostgresEngine", "PostgresServer"]


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


class PostgresEngine:
    """Finds binaries, keeps the cluster cache, and launches :class:`PostgresServer` instances."""

    def __init__(
        self,
        settings: Settings,
        context: RunContext,
        registry: Registry,
        *,
        progress: Progress | None = None,
        binaries: PostgresBinaries | None = None,
        backend: str | None = None,
        bin_dir: str = "",
    ) -> None:
        self.settings = settings
        self.pg = settings.postgres
        self.backend = backend or (self.pg.backend if self.pg.backend in ("embedded", "local") else "embedded")
        self.bin_dir = bin_dir or self.pg.bin_dir
        self.context = context
        self.registry = registry
        self.progress = progress or (lambda message: None)
        self._binaries = binaries
        self.user: ServiceUser | None = None
        if is_root():
            self.user = resolve_service_user(settings.service_user, context.ensure_cache_dir())
            log.debug("running as root: PostgreSQL will run as user %r (uid %d)", self.user.name, self.user.uid)
            require_traversable(context.cache_dir, "cache directory", "cache_dir", self.user)
            require_traversable(context.data_root, "data directory", "data_dir", self.user)

    # -- binaries and cache --------------------------------------------------------------
    def binaries(self) -> PostgresBinaries:
        """The binaries to run, copied somewhere reachable first when running as root."""
        if self._binaries is None:
            bins = find_postgres(self.backend, bin_dir=self.bin_dir, version=self.pg.version)
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
        owner = self.user.name if self.user else str(os.getuid())
        return f"{bins.version}-{_digest(ident + owner)}"

    def base_cluster(self) -> ClusterCache:
        """The cached, initialized cluster for these binaries; ``initdb`` runs only the first time.

        The entry is sealed (see :mod:`testlane.services.cache`); one that is not the invoking user's
        is not trusted and is built again.
        """
        bins = self.binaries()
        key = self.cluster_key(bins)
        root = self.context.ensure_cache_dir() / "postgres" / key
        cluster = root / "cluster"
        if (cluster / "PG_VERSION").exists() and trusted(cluster):
            touch(root)
            return ClusterCache(cluster, key)
        sweep_staging(self.context.cache_dir)
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root.parent, 0o755 if is_root() else 0o700)
        if self.user is not None:
            os.chown(root, os.getuid(), self.user.gid)
        os.chmod(root, 0o750 if self.user is not None else 0o700)  # the service user may enter, not write
        with building(root, timeout=300):
            if (cluster / "PG_VERSION").exists() and trusted(cluster):
                return ClusterCache(cluster, key)
            self.progress(
                f"initializing a PostgreSQL {bins.version} cluster in {root} (first run for these binaries only)"
            )
            # initdb runs as the service user, so what it writes is that user's until stored: the
            # cache gets a copy made by us (new files no process of that user holds open), sealed.
            staging = staging_path(root / "initdb")
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(mode=0o700)
            try:
                if self.user is not None:
                    os.chown(staging, self.user.uid, self.user.gid)
                self._initdb(bins, staging)
                # meta first: an entry killed before its data is in place lists as incomplete, not stale
                write_meta(root, "postgres", version=bins.version, binary=str(bins.exe("postgres")))
                store(staging, cluster, self.user)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
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
        args = list(self.pg.initdb_args)
        proc = self._run_as_user(base_args + args)
        if proc.returncode != 0 and "locale" in proc.stdout.lower() and any(a.startswith("--locale") for a in args):
            log.debug("initdb: locale unavailable, retrying with --no-locale:\n%s", proc.stdout)
            for child in target.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
            args = [a for a in args if not a.startswith("--locale")] + ["--no-locale"]
            proc = self._run_as_user(base_args + args)
        if proc.returncode != 0:
            raise ServiceStartError(
                f"initdb failed for PostgreSQL {bins.version} ({bins.origin}) with exit code {proc.returncode}.",
                hint="check postgres.initdb_args; `testlane doctor` checks the binaries and permissions.",
                log_tail="\n".join(proc.stdout.splitlines()[-25:]),
            )

    def _run_as_user(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
            user=self.user.uid if self.user else None,
            group=self.user.gid if self.user else None,
            extra_groups=[] if self.user else None,
            env={**server_environment(), "LC_ALL": os.environ.get("LC_ALL", "C.UTF-8")},
            cwd="/",
        )

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
        owner = None if detached else self.context.owner_pid
        ref = ProcessRef.of(owner) if owner is not None else None
        instance = Instance(
            run_id=self.context.run_id,
            name=name,
            engine="postgres",
            backend=bins.source,
            user=SUPERUSER,
            database="postgres",
            version=bins.version,
            owner_pid=owner,
            owner_create_time=ref.create_time if ref else None,
            os_user=self.user.name if self.user else None,
            password=new_password(),
            # configured_backend: what the settings asked for (`auto` or a forced one), for hints given later
            # by code that only has the server (a missing extension: services.backends.missing_extensions_hint).
            extra={
                "bin_dir": str(bins.bin_dir),
                "data_source": str(source),
                "configured_backend": configured_backend(self.settings, "postgres"),
            },
        )
        return PostgresLaunch(
            engine=self,
            binaries=bins,
            data_source=source,
            context=self.context,
            registry=self.registry,
            instance=instance,
            user=self.user,
            start_timeout=self.settings.start_timeout,
            fixed_port=self.pg.port,
            die_with_parent=die_with_parent and not detached,
        )

    def start(self, name: str = "postgres", **kwargs: Any) -> PostgresServer:
        server = self.launch(name, **kwargs).run()
        assert isinstance(server, PostgresServer)
        return server


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
        settings = dict(EPHEMERAL_SETTINGS)
        settings.update(
            {
                "listen_addresses": "127.0.0.1",
                "port": str(port),
                "unix_socket_directories": str(self.instance_dir),
                "max_connections": str(self.engine.pg.max_connections),
            }
        )
        if self.binaries.major >= 10:
            settings["password_encryption"] = "scram-sha-256"  # roles the tests create match pg_hba
        settings.update(self.engine.pg.settings)
        # After the user's settings: who may connect is not configurable per project.
        settings["hba_file"] = str(self.instance_dir / "pg_hba.conf")
        settings["unix_socket_directories"] = str(self.instance_dir)  # trust applies there: it stays private
        settings["unix_socket_permissions"] = "0700"
        argv = [str(self.binaries.exe("postgres")), "-D", str(self.data_dir)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        return argv

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
