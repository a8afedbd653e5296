"""The ``url`` backend: an existing server (CI service containers, a compose file, a shared test server).

Nothing is started. The instance is recorded like any other (so the guard recognizes the server and
the reaper forgets the record when the run is gone), checked with a real query, and described to
tests the same way. testlane only ever creates and drops its own ``tl_`` databases on such a server
and leaves everything else alone; see :mod:`testlane.databases.leftovers` for how a dead run's
leftovers are found there.
"""

from __future__ import annotations

import subprocess
from typing import Any

from testlane.core.config import Settings
from testlane.core.errors import ConfigError, UnreachableError
from testlane.core.redact import redact_url
from testlane.core.runtime import RunContext
from testlane.core.urls import ServiceUrl
from testlane.core.waiting import WaitTimeout, wait_until
from testlane.services.base import Launch, Server
from testlane.services.instance import Instance
from testlane.services.process import ProcessRef
from testlane.services.registry import Registry

__all__ = ["UrlEngine", "instance_from_url"]

SCHEMES = {
    "postgres": ("postgresql", "postgres"),
    "valkey": ("redis", "rediss", "valkey"),
    "mariadb": ("mysql", "mariadb", "mysql+pymysql"),
}
DEFAULTS = {"postgres": (5432, "postgres", "postgres"), "valkey": (6379, None, "0"), "mariadb": (3306, "root", "")}


def instance_from_url(engine: str, url: str, *, run_id: str, name: str) -> Instance:
    """An instance describing the server at ``url`` (defaults: the engine's usual port and user)."""
    try:
        parsed = ServiceUrl.parse(url)
    except ValueError as exc:
        raise ConfigError(f"{engine}.url: {exc}.", hint=f"use a URL starting with {SCHEMES[engine][0]}://") from None
    if parsed.scheme not in SCHEMES[engine]:
        raise ConfigError(
            f"{engine}.url {redact_url(url)!r} does not look like a {engine} URL (scheme {parsed.scheme!r}).",
            hint=f"use a URL starting with {SCHEMES[engine][0]}://",
        )
    port, user, database = DEFAULTS[engine]
    return Instance(
        run_id=run_id,
        name=name,
        engine=engine,
        backend="url",
        host=parsed.host or "127.0.0.1",
        port=parsed.port or port,
        user=parsed.user or user,
        password=parsed.password or None,
        database=parsed.database or database,
        extra={"url": redact_url(url)},
    )


def server_class(engine: str) -> type[Server]:
    if engine == "postgres":
        from testlane.services.postgres import PostgresServer

        return PostgresServer
    if engine == "valkey":
        from testlane.services.valkey import ValkeyServer

        return ValkeyServer
    from testlane.services.mariadb import MariaDbServer

    return MariaDbServer


def server_version(server: Server) -> str:
    """The version the server reports about itself."""
    if server.engine == "postgres":
        with server.connect() as conn:  # type: ignore[attr-defined]
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]).split()[0] if row else ""
    if server.engine == "valkey":
        client = server.client()  # type: ignore[attr-defined]
        try:
            info = client.info("server")
        finally:
            client.close()
        return str(info.get("valkey_version") or info.get("redis_version") or "")
    conn = server.connect()  # type: ignore[attr-defined]
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT VERSION()")
            row = cur.fetchone()
    finally:
        conn.close()
    return str(row[0]).split("-")[0] if row else ""


class UrlLaunch(Launch):
    """Attach to an existing server: record it, then wait (briefly) for a real query."""

    def prepare(self) -> None:
        self.registry.save(self.instance)

    def spawn(self) -> None:
        pass  # nothing to start

    def argv(self, port: int) -> list[str]:  # pragma: no cover - never spawned
        raise NotImplementedError

    def make_server(self, popen: subprocess.Popen[bytes] | None) -> Server:
        return server_class(self.instance.engine)(self.instance, registry=self.registry, owned=True)

    def wait(self) -> Server:
        server = self.make_server(None)
        try:
            wait_until(
                lambda: server.ping(timeout=2.0) or True,
                timeout=min(self.start_timeout, 10.0),
                what=f"the existing {self.instance.engine} server at {self.instance.extra.get('url')}",
                interval=0.05,
                max_interval=0.5,
                transient=(Exception,),
            )
            self.instance.version = server_version(server)
        except (WaitTimeout, Exception) as exc:
            cause = exc.last_error if isinstance(exc, WaitTimeout) and exc.last_error else exc
            raise UnreachableError(
                f"the existing {self.instance.engine} server at {self.instance.extra.get('url')} did not answer: "
                f"{str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__}",
                hint=f"check that it runs and that {self.instance.engine}.url (user, password, port) is right; or "
                "use another backend.",
            ) from None
        self.registry.save(self.instance)
        return server

    def abort(self) -> None:
        self.registry.remove(self.instance)


class UrlEngine:
    """Launches attachments to the configured existing server of one service."""

    def __init__(self, engine: str, settings: Settings, context: RunContext, registry: Registry) -> None:
        self.engine_name = engine
        self.settings = settings
        self.context = context
        self.registry = registry
        self.url = str(getattr(getattr(settings, engine), "url", ""))
        if not self.url:
            raise ConfigError(
                f'{engine}.backend is "url" but {engine}.url is empty.',
                hint=f"set {engine}.url (TESTLANE_{engine.upper()}_SERVER_URL) to the existing server's URL.",
            )

    def launch(
        self, name: str | None = None, *, detached: bool = False, die_with_parent: bool = True, **_: Any
    ) -> UrlLaunch:
        instance = instance_from_url(
            self.engine_name, self.url, run_id=self.context.run_id, name=name or self.engine_name
        )
        owner = None if detached else self.context.owner_pid
        ref = ProcessRef.of(owner) if owner is not None else None
        instance.owner_pid, instance.owner_create_time = owner, ref.create_time if ref else None
        return UrlLaunch(
            context=self.context,
            registry=self.registry,
            instance=instance,
            user=None,
            start_timeout=self.settings.start_timeout,
        )
