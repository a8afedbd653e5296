"""The RabbitMQ engine: a private node from the system's ``rabbitmq-server`` (Debian's package).

The node touches nothing of a system node: it runs ``/usr/lib/rabbitmq/bin/rabbitmq-server`` (not the
``/usr/sbin`` wrappers, which switch to the ``rabbitmq`` user and read ``/etc/rabbitmq``) with an
environment of its own only (``env -i``): ``HOME`` in the instance directory with a random Erlang
cookie (0400), an empty ``rabbitmq-env.conf``, its own ``rabbitmq.conf``/``advanced.config``/enabled
plugins, data and logs in the instance directory (tmpfs), a unique node name ``tl<id>@localhost``, and
its own ``epmd`` on a port of its own (``ERL_EPMD_PORT``; the system's epmd on 4369 is never asked).
AMQP, the management API, the distribution port and that epmd listen on 127.0.0.1 only.

The node's epmd is started by the node's own start command (``setpriv --pdeathsig KILL`` makes it die
with the node) in the node's process group, so stopping the node (``killpg``) or killing its owner
(the parent-death signal) leaves nothing behind. ``RUNNING_UNDER_SYSTEMD=true`` makes the start script
``exec`` the VM: the recorded PID is ``beam.smp``'s.

Nobody else gets in: the node's only user is random per run (``default_user``/``default_pass`` in the
0600 ``rabbitmq.conf``), ``guest`` does not exist. Ready means an AMQP connection opened with the
run's credentials *and* the management API answering (per-test virtual hosts are made through it:
:mod:`testlane.services.rabbitmq_vhosts`).

A cold start takes 7-12 s on this machine (Erlang boot, the management plugin); caching the data
directory did not shorten it, so none is cached: the stack spawns the node with the other services
and waits for it last, and a run pays it once.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import socket
import ssl
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from testlane.core.config import RabbitMqSettings
from testlane.core.errors import BinaryNotFoundError, ServiceError
from testlane.services.base import Launch, Server
from testlane.services.binaries import VERSION_TOKEN
from testlane.services.credentials import new_password, write_private
from testlane.services.ports import PortReservation, reserve_port
from testlane.services.process_engine import ProcessEngine

if TYPE_CHECKING:
    import httpx
    import pika

__all__ = ["DEFAULT_BINARY", "RabbitMqEngine", "RabbitMqServer", "find_rabbitmq", "vhost_url"]

DEFAULT_BINARY = "/usr/lib/rabbitmq/bin/rabbitmq-server"

# The node's start command: its own epmd (dying with the node), a bounded wait for it to answer, then
# the server (exec: same PID, same process group).
START_SCRIPT = (
    'setpriv --pdeathsig KILL -- "$1" -port "$2" -address 127.0.0.1 &\n'
    "i=0\n"
    'until "$1" -port "$2" -names >/dev/null 2>&1; do\n'
    "  i=$((i + 1)); [ $i -ge 500 ] && break\n"
    "  sleep 0.01\n"
    "done\n"
    'exec "$3"\n'
)


def find_rabbitmq(binary: str = "") -> tuple[Path, Path]:
    """``rabbitmq-server`` (``rabbitmq.binary``, else Debian's) and ``epmd``, both checked: the server is
    the ``rabbitmq-server`` script of a RabbitMQ installation (``.../rabbitmq_server-<version>/sbin``, its
    ``rabbitmq-env`` and ``rabbitmqctl`` next to it: running it to ask would start a node), epmd is
    Erlang's port mapper (its usage says so). Raises :class:`BinaryNotFoundError` naming the key."""
    server = Path(binary).expanduser() if binary else Path(DEFAULT_BINARY)
    hint = (
        "install it (apt-get install -y rabbitmq-server), or set rabbitmq.binary to "
        "the rabbitmq-server script (e.g. /usr/lib/rabbitmq/bin/rabbitmq-server); or use "
        'rabbitmq.backend = "container" or "url".'
    )
    if not server.is_file():
        raise BinaryNotFoundError(
            f"rabbitmq.binary: no rabbitmq-server at {server}."
            if binary
            else f"rabbitmq-server is not installed (looked for {server}).",
            hint=hint,
        )
    if not rabbitmq_version(server):
        origin = "rabbitmq.binary" if binary else "the default"
        real = server.resolve()
        raise BinaryNotFoundError(
            f"{server} ({origin}) is not a RabbitMQ server: "
            + (f"it is {real}, " if real != server else "")
            + "not the rabbitmq-server script of a RabbitMQ installation (rabbitmq_server-<version>/sbin, "
            "with rabbitmq-env and rabbitmqctl next to it).",
            hint="set rabbitmq.binary to the rabbitmq-server script (e.g. /usr/lib/rabbitmq/bin/rabbitmq-server), "
            "or leave it empty for the system package's."
            if binary
            else hint,
        )
    epmd = shutil.which("epmd", path=START_PATH) or shutil.which("epmd", path="/usr/lib/erlang/bin")
    if epmd is None:
        raise BinaryNotFoundError(
            "epmd (Erlang's port mapper, which the RabbitMQ node needs) not found on PATH "
            f"({START_PATH}) or in /usr/lib/erlang/bin.",
            hint='install erlang-base, or use rabbitmq.backend = "container" or "url".',
        )
    _check_epmd(Path(epmd))
    if shutil.which("setpriv") is None:
        raise BinaryNotFoundError("setpriv (util-linux) not found.", hint="install util-linux.")
    return server, Path(epmd)


# The node's PATH (its start script finds erl and epmd there): the epmd testlane starts is the one it uses.
START_PATH = "/usr/local/bin:/usr/bin:/bin"


def _check_epmd(epmd: Path) -> None:
    """``epmd -help`` prints Erlang's usage (and exits 1): anything else is not the port mapper."""
    try:
        proc = subprocess.run([str(epmd), "-help"], capture_output=True, text=True, timeout=10, check=False)
        out = proc.stdout + proc.stderr
    except (OSError, subprocess.SubprocessError) as exc:
        out, failed = "", f"`epmd -help` failed: {exc}"
    else:
        failed = ""
    if "usage: epmd" not in out or "Erlang" not in out:
        first = repr(out.splitlines()[0].strip()) if out.strip() else "nothing"
        said = failed or f"`epmd -help` printed {first}"
        raise BinaryNotFoundError(
            f"{epmd} (epmd on PATH, which the RabbitMQ node needs) is not Erlang's port mapper: {said}.",
            hint="install erlang-base (the epmd of the Erlang rabbitmq-server runs on), "
            'or use rabbitmq.backend = "container" or "url".',
        )


def rabbitmq_version(server: Path) -> str:
    """The version of the RabbitMQ installation ``server`` is the ``rabbitmq-server`` script of (its real
    path ``.../rabbitmq_server-X/sbin/rabbitmq-server``, or ``<dir>/rabbitmq-server`` with
    ``<dir>/../lib/rabbitmq_server-X``); ``""`` when it is not one."""
    real = server.resolve()
    if real.name != "rabbitmq-server" or not real.is_file():
        return ""
    if not all((real.parent / sibling).is_file() for sibling in ("rabbitmq-env", "rabbitmqctl")):
        return ""
    base = real.parent.parent
    candidates = [base] if base.name.startswith("rabbitmq_server-") and real.parent.name == "sbin" else []
    if (base / "lib").is_dir():
        candidates += sorted((base / "lib").glob("rabbitmq_server-*"))
    for found in reversed(candidates):
        version = found.name.split("-", 1)[1]
        if VERSION_TOKEN.fullmatch(version):
            return version
    return ""


def vhost_url(base: str, vhost: str) -> str:
    """``base`` (``amqp://u:p@h:port``, any path) with its path set to ``vhost`` (quoted: ``/`` is ``%2F``)."""
    head = base.split("://", 1)
    rest = head[1].split("/", 1)[0]
    return f"{head[0]}://{rest}/{quote(vhost, safe='')}"


@functools.lru_cache(maxsize=1)
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context for every management client: httpx builds a new one per client
    otherwise (loading the CA bundle: about 100 ms, ten times a vhost's creation)."""
    return ssl.create_default_context()


class RabbitMqServer(Server):
    """A running RabbitMQ node: ``url``, ``management_url``, ``connect()``, ``management()``, ``stop()``."""

    engine: ClassVar[str] = "rabbitmq"
    stop_signal: ClassVar[int] = 9  # its data is on tmpfs and thrown away: SIGTERM took 1-6 s

    @property
    def vhost(self) -> str:
        return self.instance.database or "/"

    @property
    def url(self) -> str:
        return self.url_for_vhost(self.vhost)

    def url_for_vhost(self, vhost: str, *, scheme: str = "amqp") -> str:
        inst = self.instance
        creds = f"{quote(inst.user or '', safe='')}:{quote(inst.password or '', safe='')}@" if inst.user else ""
        return f"{scheme}://{creds}{inst.host}:{inst.port}/{quote(vhost, safe='')}"

    @property
    def management_url(self) -> str:
        """The management HTTP API's base URL (no credentials: :meth:`management` authenticates)."""
        configured = str(self.instance.extra.get("management_url") or "")
        if configured:
            return configured.rstrip("/")
        extra = self.instance.extra
        port = extra.get("management_port") or extra.get("port_15672") or 15672
        return f"http://{self.instance.host}:{port}"

    def management(self, timeout: float = 5.0) -> httpx.Client:
        """An httpx client on the management API, authenticated as the run's user."""
        import httpx

        return httpx.Client(
            base_url=self.management_url,
            auth=(self.instance.user or "", self.instance.password or ""),
            timeout=timeout,
            verify=_tls_context(),
        )

    def connection_parameters(self, vhost: str | None = None, **kwargs: Any) -> pika.ConnectionParameters:
        import pika

        return pika.ConnectionParameters(
            host=self.host,
            port=self.port,
            virtual_host=self.vhost if vhost is None else vhost,
            credentials=pika.PlainCredentials(self.instance.user or "", self.instance.password or ""),
            **kwargs,
        )

    def connect(self, vhost: str | None = None, **kwargs: Any) -> pika.BlockingConnection:
        """A pika ``BlockingConnection`` to ``vhost`` (default: the server's own)."""
        import pika

        return pika.BlockingConnection(self.connection_parameters(vhost, **kwargs))

    def rabbitmqctl(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``rabbitmqctl`` against testlane's own node (``local`` backend only: its cookie, epmd and
        node name), as the node's user; its output. About 0.4-2 s a call (an Erlang VM each time): not
        per test. Raises :class:`~testlane.core.errors.ServiceError` when it fails."""
        import pwd

        inst = self.instance
        if inst.backend != "local" or not inst.instance_dir:
            raise ServiceError(
                f"rabbitmqctl runs only against testlane's own node, not a {inst.backend} backend's.",
                hint='use rabbitmq.backend = "local" for this test.',
            )
        folder = Path(inst.instance_dir)
        ctl = Path(str(inst.extra.get("binary") or DEFAULT_BINARY)).with_name("rabbitmqctl")
        erl_args = "-kernel inet_dist_use_interface {127,0,0,1} -start_epmd false"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ctl_port = probe.getsockname()[1]
        env = {
            "PATH": START_PATH,
            "HOME": str(folder / "home"),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "RABBITMQ_CONF_ENV_FILE": str(folder / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": str(inst.extra["node"]),
            "ERL_EPMD_PORT": str(inst.extra["epmd_port"]),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_CTL_ERL_ARGS": erl_args,
            # its own distribution port (the default range, 35672-35682, is the system's rabbitmqctl's)
            "RABBITMQ_CTL_DIST_PORT_MIN": str(ctl_port),
            "RABBITMQ_CTL_DIST_PORT_MAX": str(ctl_port),
            "RABBITMQ_MNESIA_BASE": str(folder / "mnesia"),
            "RABBITMQ_LOG_BASE": str(folder / "log"),
        }
        user = pwd.getpwnam(inst.os_user) if inst.os_user else None
        proc = subprocess.run(
            [str(ctl), *args],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            extra_groups=[] if user else None,
            cwd="/",
        )
        if proc.returncode != 0:
            detail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
            raise ServiceError(
                f"rabbitmqctl {args[0] if args else ''} failed: {detail[-1] if detail else proc.returncode}"
            )
        return proc.stdout

    def ping(self, timeout: float = 2.0) -> None:
        # The management API first, and a bare TCP connect before pika: pika logs every refused attempt.
        with self.management(timeout=timeout) as api:
            api.get("/api/overview").raise_for_status()
        socket.create_connection((self.host, self.port), timeout=timeout).close()
        # stack_timeout too: pika's default (15 s) bounds the AMQP handshake, and a port held by something that
        # accepts but never speaks AMQP (a node's port taken before it bound it) held each readiness check 15 s.
        conn = self.connect(
            socket_timeout=timeout,
            stack_timeout=timeout,
            blocked_connection_timeout=timeout,
            connection_attempts=1,
        )
        conn.close()

    def env(self) -> dict[str, str]:
        return {
            "TESTLANE_RABBITMQ_URL": self.url,
            "TESTLANE_RABBITMQ_HOST": self.host,
            "TESTLANE_RABBITMQ_PORT": str(self.port),
            "TESTLANE_RABBITMQ_MANAGEMENT_URL": self.management_url,
        }


class RabbitMqEngine(ProcessEngine[RabbitMqServer]):
    """Launches private :class:`RabbitMqServer` nodes (``local`` backend; there is no embedded RabbitMQ)."""

    kind = "rabbitmq"

    def default_backend(self, settings: Any) -> str:
        return "local"

    @property
    def rs(self) -> RabbitMqSettings:
        return self.settings.rabbitmq

    def launch(
        self,
        name: str = "rabbitmq",
        *,
        detached: bool = False,
        die_with_parent: bool = True,
        data_source: Path | None = None,
    ) -> RabbitMqLaunch:
        server, epmd = find_rabbitmq(self.rs.binary)
        instance = self.new_instance(
            name,
            detached=detached,
            backend="local",
            user=f"tl_{secrets.token_hex(4)}",
            password=new_password(),
            database="/",
            version=rabbitmq_version(server),
            extra={"binary": str(server), "node": f"tl{secrets.token_hex(6)}@localhost"},
        )
        options = self.launch_options(
            instance, fixed_port=self.rs.port, detached=detached, die_with_parent=die_with_parent
        )
        return RabbitMqLaunch(server=server, epmd=epmd, management_port=self.rs.management_port, **options)


class RabbitMqLaunch(Launch):
    # A port taken before the node bound it: its AMQP or management listener fails with these (Erlang's
    # words), and the node exits; the retry reserves all its ports again (spawn).
    bind_failure_markers: ClassVar[tuple[str, ...]] = (
        *Launch.bind_failure_markers,
        "could_not_start_listener",
        "eaddrinuse",
    )

    def __init__(self, *, server: Path, epmd: Path, management_port: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.server = server
        self.epmd = epmd
        self.management_port = management_port
        self._extra_ports: list[PortReservation] = []

    def _path(self, name: str) -> Path:
        return self.instance_dir / name

    def prepare_data(self) -> None:
        uid_gid = (self.user.uid, self.user.gid) if self.user is not None else None
        for sub in ("home", "mnesia", "log"):
            self._path(sub).mkdir(mode=0o700)
            if uid_gid is not None:
                os.chown(self._path(sub), *uid_gid)
        cookie = write_private(self._path("home/.erlang.cookie"), secrets.token_hex(20).upper(), self.user)
        cookie.chmod(0o400)
        write_private(self._path("rabbitmq-env.conf"), "", self.user)
        write_private(self._path("enabled_plugins"), "[rabbitmq_management].\n", self.user)
        # consumer_timeout is checked every channel tick: lowered so the slow-consumer seam is measurable.
        write_private(
            self._path("advanced.config"),
            "[{rabbit, [{channel_tick_interval, 1000}]}].\n",
            self.user,
        )

    def spawn(self) -> None:
        for reservation in self._extra_ports:
            reservation.release()
        self._extra_ports = [
            reserve_port(
                self.context.ports_dir,
                fixed=self.management_port if self._attempt == 0 else 0,
                setting="rabbitmq.management_port",
            ),
            reserve_port(self.context.ports_dir),
            reserve_port(self.context.ports_dir),
            reserve_port(self.context.ports_dir),
        ]
        management, dist, epmd, ctl = (r.port for r in self._extra_ports)
        self.instance.extra.update({"management_port": management, "dist_port": dist, "epmd_port": epmd})
        inst = self.instance
        erl_args = "-kernel inet_dist_use_interface {127,0,0,1} -start_epmd false"
        self.env = {
            "PATH": START_PATH,
            "HOME": str(self._path("home")),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "RABBITMQ_CONF_ENV_FILE": str(self._path("rabbitmq-env.conf")),
            "RABBITMQ_CONFIG_FILE": str(self._path("rabbitmq.conf")),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self._path("advanced.config")),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self._path("enabled_plugins")),
            "RABBITMQ_MNESIA_BASE": str(self._path("mnesia")),
            "RABBITMQ_LOG_BASE": str(self._path("log")),
            "RABBITMQ_PID_FILE": str(self._path("rabbitmq.pid")),
            "RABBITMQ_NODENAME": str(inst.extra["node"]),
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_DIST_PORT": str(dist),
            "ERL_EPMD_PORT": str(epmd),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RUNNING_UNDER_SYSTEMD": "true",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": erl_args,
            "RABBITMQ_CTL_ERL_ARGS": erl_args,
            "RABBITMQ_CTL_DIST_PORT_MIN": str(ctl),
            "RABBITMQ_CTL_DIST_PORT_MAX": str(ctl),
            # A node that fails to boot (e.g. its port taken: a retry follows) exits at once instead of writing
            # an erl_crash.dump for seconds first; the instance directory holding it is removed anyway.
            "ERL_CRASH_DUMP_SECONDS": "0",
        }
        super().spawn()

    def argv(self, port: int) -> list[str]:
        inst = self.instance
        self.env = {**(self.env or {}), "RABBITMQ_NODE_PORT": str(port)}
        conf = "\n".join(
            [
                f"listeners.tcp.default = 127.0.0.1:{port}",
                f"default_user = {inst.user}",
                f"default_pass = {inst.password}",
                "default_vhost = /",
                "default_permissions.configure = .*",
                "default_permissions.read = .*",
                "default_permissions.write = .*",
                "default_user_tags.administrator = true",
                "loopback_users.guest = true",
                "disk_free_limit.absolute = 10MB",
                "log.console = true",
                "log.console.level = warning",
                "log.console.use_colors = off",  # plain text: the log is read into failing tests' reports
                "log.file = false",
                "management.tcp.ip = 127.0.0.1",
                f"management.tcp.port = {inst.extra['management_port']}",
                "",
            ]
        )
        write_private(self._path("rabbitmq.conf"), conf, self.user)
        return [
            "/bin/sh",
            "-c",
            START_SCRIPT,
            "rabbitmq",
            str(self.epmd),
            str(inst.extra["epmd_port"]),
            str(self.server),
        ]

    def _release_port(self) -> None:
        super()._release_port()
        for reservation in self._extra_ports:
            reservation.release()
        self._extra_ports = []

    def make_server(self, popen: subprocess.Popen[bytes]) -> Server:
        return RabbitMqServer(self.instance, registry=self.registry, popen=popen, owned=True)
