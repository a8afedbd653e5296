"""The MQTT engine: a local Mosquitto broker (``mosquitto``, or ``mqtt.binary``).

Mosquitto cannot pick a free port itself (``listener 0`` is refused), so the port comes from
testlane's reservation (:mod:`testlane.services.ports`) and a port taken between reservation and
bind is retried like every other kind's. The configuration file (written when the port is known):
``per_listener_settings false``, one ``listener <port> 127.0.0.1``, ``allow_anonymous false``,
``persistence false`` (nothing is written but the security file), ``set_tcp_nodelay true``,
``log_dest stderr`` (the instance's log; stdout would be block-buffered there). Ready means a CONNECT
answered with CONNACK 0 using the run's credentials (paho-mqtt); that takes about 10-20 ms after spawning.

Nobody else gets in: the only account, ``testlane``, has a random password per instance. Its
PBKDF2-SHA512 hash (101 iterations: what ``mosquitto_passwd`` writes) is computed here and written
to a 0600 file owned by the server's user; the password itself is never written to disk nor put on
a command line (``mosquitto_passwd -b`` would put it there; ``-U`` on a plaintext file costs a
process, 3.7 ms, and leaves the plaintext on disk until it runs; hashing here: 0.06 ms). As root the
broker runs as the service user (see :mod:`testlane.services.privileges`).

The account lives in Mosquitto's *dynamic security* plugin (``mosquitto_dynamic_security.so``,
shipped with Mosquitto 2), when the plugin is found next to the broker: the plugin's JSON file holds
the account (role ``admin``: every topic, and ``$CONTROL/dynamic-security/#``), and per-test users
confined to their own subtree are created at run time (see :mod:`testlane.services.mqtt_isolation`).
Without the plugin the account is in a ``password_file`` and per-test isolation is a topic prefix.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import glob
import hashlib
import importlib.util
import json
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from testlane.core.config import MqttSettings, Settings
from testlane.core.errors import BinaryNotFoundError, ServiceError
from testlane.services.base import Launch, Server
from testlane.services.binaries import reported_version, search_local
from testlane.services.credentials import new_password, write_private
from testlane.services.privileges import ensure_reachable
from testlane.services.process_engine import ProcessEngine

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

__all__ = [
    "ADMIN_ROLE",
    "ADMIN_USER",
    "CONFIG_FILE",
    "CONTROL_TOPIC",
    "MosquittoBinary",
    "MqttEngine",
    "MqttServer",
    "close_client",
    "connect_client",
    "dynsec_config",
    "find_mosquitto",
    "password_line",
]

CONFIG_FILE = "mosquitto.conf"
DYNSEC_FILE = "dynamic-security.json"
PASSWORD_FILE = "passwd"
ADMIN_USER = "testlane"
ADMIN_ROLE = "admin"  # the name `mosquitto_ctrl dynsec init` gives it (the container backend uses that)
CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
PLUGIN_NAME = "mosquitto_dynamic_security.so"
ITERATIONS = 101  # mosquitto_passwd's and the plugin's own

# What the run's account may do: everything (``#`` does not match ``$`` topics: the plugin's control topic
# is listed on its own).
ADMIN_ACLS: tuple[dict[str, Any], ...] = tuple(
    {"acltype": acltype, "topic": topic, "allow": True}
    for topic in ("#", "$CONTROL/dynamic-security/#")
    for acltype in ("publishClientSend", "publishClientReceive", "subscribePattern", "unsubscribePattern")
)


@dataclass(frozen=True)
class MosquittoBinary:
    """A Mosquitto broker on this machine, and its dynamic-security plugin (None: not found)."""

    path: Path
    origin: str  # where it was found, for messages: "mqtt.binary", "mosquitto on PATH", "/usr/sbin/mosquitto"
    version: str
    plugin: Path | None


def _plugin_near(exe: Path) -> Path | None:
    """The dynamic-security plugin of the installation ``exe`` belongs to (Debian: the multiarch lib dir)."""
    prefix = exe.resolve().parent.parent
    for where in ("lib/*", "lib", "lib/mosquitto"):
        pattern = f"{prefix}/{where}/{PLUGIN_NAME}"
        hits = sorted(glob.glob(pattern))
        if hits:
            return Path(hits[0])
    return None


def find_mosquitto(binary: str = "") -> MosquittoBinary:
    """The local broker (``binary``, else ``mosquitto`` on PATH, else /usr/sbin, /usr/local/sbin), its
    version read and checked (``mosquitto version 2.0.11``). Raises :class:`BinaryNotFoundError` naming
    ``mqtt.binary`` and what the program printed when it is not Mosquitto, or every place looked."""
    fixed = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
    hit, looked = search_local(binary, "mqtt.binary", ("mosquitto",), fixed)
    if hit is not None:
        exe, origin = hit
        version = reported_version(
            exe, r"mosquitto version (\d[^\s]*)", what="Mosquitto broker", origin=origin, setting="mqtt.binary"
        )
        return MosquittoBinary(exe, origin, version, _plugin_near(exe))
    places = "\n".join(f"  - {p}" for p in dict.fromkeys(looked))
    where = " at mqtt.binary" if binary else ""
    raise BinaryNotFoundError(
        f"no local Mosquitto broker found{where}. Looked in:\n{places}",
        hint="install it (apt-get install mosquitto), set mqtt.binary to mosquitto's path, or use the container "
        "or url backend (mqtt.backend).",
    )


# -- credentials ------------------------------------------------------------------------------------
def _pbkdf2(password: str, salt: bytes) -> bytes:
    return hashlib.pbkdf2_hmac("sha512", password.encode(), salt, ITERATIONS)


def password_line(user: str, password: str) -> str:
    """A ``password_file`` line in Mosquitto 2's ``$7$`` format (PBKDF2-SHA512), as ``mosquitto_passwd``
    writes it."""
    salt = secrets.token_bytes(12)
    b64 = base64.b64encode
    return f"{user}:$7${ITERATIONS}${b64(salt).decode()}${b64(_pbkdf2(password, salt)).decode()}\n"


def dynsec_config(user: str, password: str) -> str:
    """The dynamic-security plugin's file: ``user`` (hash only) with the role :data:`ADMIN_ROLE`; nobody
    else, and nothing allowed by default."""
    salt = secrets.token_bytes(12)
    b64 = base64.b64encode
    config = {
        "clients": [
            {
                "username": user,
                "textName": "testlane's run account",
                "password": b64(_pbkdf2(password, salt)).decode(),
                "salt": b64(salt).decode(),
                "iterations": ITERATIONS,
                "roles": [{"rolename": ADMIN_ROLE}],
            }
        ],
        "groups": [],
        "roles": [{"rolename": ADMIN_ROLE, "acls": list(ADMIN_ACLS)}],
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": False,
            "subscribe": False,
            "unsubscribe": True,
        },
    }
    return json.dumps(config, indent=1) + "\n"


# -- clients ------------------------------------------------------------------------------------------
PAHO_MISSING = "paho-mqtt (the MQTT client testlane's mqtt service uses) is not installed"
PAHO_HINT = "pip install 'testlane[mqtt]' (or paho-mqtt)."


def require_paho() -> None:
    """Raise :class:`ServiceError` saying what to install when paho-mqtt is missing (before a broker starts:
    its readiness check needs it)."""
    if importlib.util.find_spec("paho") is None:
        raise ServiceError(f"{PAHO_MISSING}.", hint=PAHO_HINT)


@functools.cache
def _client_class() -> type[mqtt.Client]:
    """paho's Client, usable as a context manager (paho 2's is not): ``with server.client() as c:`` disconnects
    it and stops its network thread on exit (without that, testlane's leak check reports the thread)."""
    import paho.mqtt.client as mqtt

    class Client(mqtt.Client):
        def __enter__(self) -> Client:
            return self

        def __exit__(self, *_exc: object) -> None:
            close_client(self)

    Client.__module__ = __name__
    Client.__qualname__ = "Client"
    return Client


def _new_client(client_id: str, user: str | None, password: str | None, **kwargs: Any) -> mqtt.Client:
    require_paho()
    from paho.mqtt.enums import CallbackAPIVersion

    client = _client_class()(CallbackAPIVersion.VERSION2, client_id=client_id, **kwargs)
    if user:
        client.username_pw_set(user, password)
    return client


def connect_client(
    host: str,
    port: int,
    *,
    user: str | None,
    password: str | None,
    client_id: str = "",
    timeout: float = 5.0,
    **kwargs: Any,
) -> mqtt.Client:
    """A paho-mqtt client connected to ``host:port`` (CONNACK 0 received), its network loop running in a
    thread; close it with :func:`close_client`. Raises ``ConnectionError`` saying what the broker answered."""
    client = _new_client(client_id or f"tl-{secrets.token_hex(6)}", user, password, **kwargs)
    answered = threading.Event()
    codes: list[Any] = []

    def on_connect(_c: Any, _u: Any, _flags: Any, reason: Any, _props: Any = None) -> None:
        codes.append(reason)
        answered.set()

    client.on_connect = on_connect
    client.connect(host, port, keepalive=30)
    _no_delay(client)
    client.loop_start()
    if not answered.wait(timeout) or codes[0].is_failure:
        close_client(client)
        said = f"CONNACK {codes[0]}" if codes else f"no CONNACK within {timeout:g}s"
        raise ConnectionError(f"the MQTT broker at {host}:{port} refused the connection: {said}")
    client.on_connect = None
    return client


def _no_delay(client: mqtt.Client) -> None:
    # paho leaves Nagle's algorithm on, and so does Mosquitto unless `set_tcp_nodelay`: a small packet written
    # while the previous one's ACK is delayed waits ~40 ms (measured: a test's namespace took 44 ms to make
    # and remove; 0.6 ms with both ends' TCP_NODELAY).
    sock = client.socket()
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def close_client(client: mqtt.Client) -> None:
    """Disconnect ``client`` and stop its network loop (nothing raised)."""
    try:
        client.disconnect()
    finally:
        client.loop_stop()


def handshake(host: str, port: int, user: str | None, password: str | None, timeout: float) -> None:
    """CONNECT and wait for CONNACK in the calling thread (no loop thread: the readiness check);
    raises unless it is 0."""
    client = _new_client(f"tl-ping-{secrets.token_hex(6)}", user, password)
    codes: list[Any] = []
    client.on_connect = lambda _c, _u, _f, reason, _p=None: codes.append(reason)
    client.connect(host, port, keepalive=10)
    try:
        deadline = time.monotonic() + timeout
        while not codes:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no CONNACK within {timeout:g}s")
            if client.loop(timeout=0.05) != 0 and not codes:
                raise ConnectionError("the broker closed the connection before answering CONNECT")
        if codes[0].is_failure:
            raise ConnectionError(f"CONNACK {codes[0]}")
    finally:
        client.disconnect()


def control(client: mqtt.Client, commands: Sequence[dict[str, Any]], *, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Send ``commands`` to the dynamic-security plugin on ``client`` (connected, loop running, allowed
    on ``$CONTROL``) and return its responses. Raises ``TimeoutError`` when no response comes, and
    ``ConnectionError`` as soon as the broker closes the connection first (the plugin disconnects every client
    of a role it changes, the sender's own included: its answer is lost)."""
    key = secrets.token_hex(8)
    answered = threading.Event()
    found: list[dict[str, Any]] = []
    previous_disconnect = client.on_disconnect

    def on_disconnect(*args: Any) -> None:
        answered.set()
        if previous_disconnect is not None:
            previous_disconnect(*args)

    def on_response(_c: Any, _u: Any, message: Any) -> None:
        try:
            responses = json.loads(message.payload).get("responses", [])
        except ValueError:
            return
        if responses and responses[0].get("correlationData") == key:
            found.extend(responses)
            answered.set()

    response_topic = f"{CONTROL_TOPIC}/response"
    client.message_callback_add(response_topic, on_response)
    client.on_disconnect = on_disconnect
    try:
        subscribed = threading.Event()
        previous = client.on_subscribe
        client.on_subscribe = lambda *_a: subscribed.set()
        client.subscribe(response_topic, qos=1)
        subscribed.wait(timeout)
        client.on_subscribe = previous
        first, *rest = commands
        payload = {"commands": [{**first, "correlationData": key}, *rest]}
        client.publish(CONTROL_TOPIC, json.dumps(payload), qos=1)
        if not answered.wait(timeout):
            raise TimeoutError(f"the dynamic-security plugin did not answer within {timeout:g}s")
        if not found:
            raise ConnectionError("the broker closed the connection before the dynamic-security plugin answered")
    finally:
        client.on_disconnect = previous_disconnect
        client.message_callback_remove(response_topic)
    return found


# -- the handle -----------------------------------------------------------------------------------------
class MqttServer(Server):
    """A running MQTT broker: ``url``, ``client()``, ``topic_prefix`` (the run's application's), ``stop()``."""

    engine: ClassVar[str] = "mqtt"
    stop_signal: ClassVar[int] = 15

    @property
    def user(self) -> str | None:
        return self.instance.user

    @property
    def password(self) -> str | None:
        return self.instance.password

    @property
    def isolation(self) -> str:
        """``acl`` (a dynamic-security user per test) or ``prefix`` (a topic prefix only): an existing broker's
        is a prefix, the image's has the plugin, a local one's depends on the plugin being found."""
        if self.instance.backend == "container":
            return "acl"
        return str(self.instance.extra.get("isolation", "prefix"))

    @property
    def topic_prefix(self) -> str:
        """The run's application's own topics: ``tl/<run id>/app/`` (never a test's)."""
        return f"tl/{self.instance.run_id}/app/"

    def client(self, client_id: str = "", **kwargs: Any) -> mqtt.Client:
        """A connected paho-mqtt client with the run's credentials, its loop running. Use it as a context
        manager (``with mqtt.client() as c:``: disconnected and its loop stopped on exit), or call
        ``c.disconnect(); c.loop_stop()`` when done."""
        return connect_client(
            self.host, self.port, user=self.user, password=self.password, client_id=client_id, **kwargs
        )

    def ping(self, timeout: float = 2.0) -> None:
        handshake(self.host, self.port, self.user, self.password, timeout)
        if self.instance.backend == "container" and not self.instance.extra.get("granted"):
            self._grant_admin(timeout)

    def _grant_admin(self, timeout: float) -> None:
        # `mosquitto_ctrl dynsec init` does not give its account every topic (publishing to `#` is missing):
        # the rest is granted here, once (a repeated grant answers "already exists"). Changing the account's
        # own role makes the plugin disconnect the account's client before it answers: then the grant is sent
        # again on a new connection, where it changes nothing and is answered (without that, every container
        # start waited for the readiness check's timeout and a second check).
        commands = [{"command": "addRoleACL", "rolename": ADMIN_ROLE, "priority": -1, **acl} for acl in ADMIN_ACLS]
        # and nobody else receives anything unless granted (the init's default lets everyone receive)
        access = [{"acltype": "publishClientReceive", "allow": False}]
        commands.append({"command": "setDefaultACLAccess", "acls": access})
        for attempt in (1, 2):
            # no reconnection after the plugin's disconnection (paho waits a second first, and close_client too)
            client = self.client(reconnect_on_failure=False)
            try:
                control(client, commands, timeout=timeout)
                break
            except ConnectionError:
                if attempt == 2:
                    raise
            finally:
                close_client(client)
        self.instance.extra["granted"] = True

    def env(self) -> dict[str, str]:
        return {
            "TESTLANE_MQTT_URL": self.url,
            "TESTLANE_MQTT_HOST": self.host,
            "TESTLANE_MQTT_PORT": str(self.port),
        }


class MqttEngine(ProcessEngine[MqttServer]):
    """Launches :class:`MqttServer` instances from the local Mosquitto."""

    kind = "mqtt"

    _binary: MosquittoBinary | None = None

    def default_backend(self, settings: Settings) -> str:
        return "local"  # there is no embedded Mosquitto

    @property
    def mq(self) -> MqttSettings:
        return self.settings.mqtt

    def binary(self) -> MosquittoBinary:
        """The broker, copied somewhere the service user can run it first when needed (as root)."""
        if self._binary is None:
            exe = find_mosquitto(self.mq.binary)
            if self.user is not None:
                folder = exe.path.parent
                key = f"mosquitto-{hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:10]}"
                base = ensure_reachable(
                    folder.parent, [Path(folder.name)], exe.path, self.context.ensure_cache_dir(), key
                )
                exe = dataclasses.replace(exe, path=base / folder.name / exe.path.name)
            self._binary = exe
        return self._binary

    def launch(
        self,
        name: str = "mqtt",
        *,
        detached: bool = False,
        die_with_parent: bool = True,
        data_source: Path | None = None,
    ) -> MqttLaunch:
        require_paho()
        exe = self.binary()
        instance = self.new_instance(
            name,
            detached=detached,
            backend="local",
            user=ADMIN_USER,
            password=new_password(),
            database="",
            version=exe.version,
            extra={
                "binary": str(exe.path),
                "plugin": str(exe.plugin or ""),
                "isolation": "acl" if exe.plugin else "prefix",
            },
        )
        return MqttLaunch(
            binary=exe,
            **self.launch_options(
                instance, fixed_port=self.mq.port, detached=detached, die_with_parent=die_with_parent
            ),
        )


class MqttLaunch(Launch):
    def __init__(self, *, binary: MosquittoBinary, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.binary = binary

    def prepare_data(self) -> None:
        # The password is hashed here: neither it nor a plaintext file is ever on disk or a command line.
        password = self.instance.password
        assert password is not None
        if self.binary.plugin is not None:
            write_private(self.instance_dir / DYNSEC_FILE, dynsec_config(ADMIN_USER, password), self.user)
        else:
            write_private(self.instance_dir / PASSWORD_FILE, password_line(ADMIN_USER, password), self.user)

    def argv(self, port: int) -> list[str]:
        lines = [
            "per_listener_settings false",
            f"listener {port} 127.0.0.1",
            "allow_anonymous false",
            "persistence false",
            "set_tcp_nodelay true",  # see _no_delay: without it a request now and then waits ~40 ms
            # stderr, not stdout: stdout is block-buffered into the log file (nothing there until exit)
            "log_dest stderr",
        ]
        if self.binary.plugin is not None:
            lines += [f"plugin {self.binary.plugin}", f"plugin_opt_config_file {self.instance_dir / DYNSEC_FILE}"]
        else:
            lines.append(f"password_file {self.instance_dir / PASSWORD_FILE}")
        config = self.instance_dir / CONFIG_FILE
        write_private(config, "\n".join(lines) + "\n", self.user)  # holds no secret; the port changes on retry
        return [str(self.binary.path), "-c", str(config)]

    def make_server(self, popen: subprocess.Popen[bytes]) -> Server:
        return MqttServer(self.instance, registry=self.registry, popen=popen, owned=True)
