"""The ``rabbitmq`` service kind: a private node from local ``rabbitmq-server``, a container
(``rabbitmq:3-management``) or an existing broker; there is no embedded RabbitMQ. The engine is
:class:`~testlane.services.rabbitmq.RabbitMqEngine`; the handle :class:`~testlane.services.rabbitmq.RabbitMqServer`.

In ``[tool.testlane.env]`` the application gets a virtual host of the run's own, ``tl_<run id>_app``
(created when the mapping is rendered; never a test's: tests get ``tl_<run id>_<n>`` leases, see
:mod:`testlane.services.rabbitmq_vhosts`).
"""

from __future__ import annotations

from testlane.core.config import Settings
from testlane.core.errors import TestlaneError
from testlane.services.base import Server
from testlane.services.instance import Instance
from testlane.services.kinds import register
from testlane.services.kinds.kind import ContainerSpec, DoctorCheck, ServiceKind
from testlane.services.rabbitmq import RabbitMqEngine, RabbitMqServer, find_rabbitmq, rabbitmq_version

__all__ = ["RabbitMqKind", "app_vhost"]


def app_vhost(server: Server) -> str:
    """The run's application virtual host (created on first use)."""
    from testlane.services.rabbitmq_vhosts import app_vhost_name, ensure_vhost

    name = app_vhost_name(server.instance.run_id)
    assert isinstance(server, RabbitMqServer)
    ensure_vhost(server, name)
    return name


class RabbitMqKind(ServiceKind):
    name = "rabbitmq"
    display = "RabbitMQ"
    schemes = ("amqp", "pyamqp")
    default_port = 5672
    default_user = "guest"
    default_database = "/"
    engine = RabbitMqEngine
    handle = RabbitMqServer
    env_names = (
        "TESTLANE_RABBITMQ_URL",
        "TESTLANE_RABBITMQ_HOST",
        "TESTLANE_RABBITMQ_PORT",
        "TESTLANE_RABBITMQ_MANAGEMENT_URL",
    )
    backends = ("local", "container", "url")
    backend_hint = (
        'use "local" (a private node from rabbitmq-server on this machine: apt-get install -y rabbitmq-server), '
        '"container" (rabbitmq:3-management), "url" or "auto".'
    )
    binary_key = "binary"
    default_env_driver = "amqp"

    def local(self, settings: Settings) -> str:
        return str(find_rabbitmq(settings.rabbitmq.binary)[0])

    def container_spec(self, settings: Settings) -> ContainerSpec:
        # The official image's conventions: RABBITMQ_DEFAULT_USER/PASS (the password from the CLI's
        # environment, never on the command line), AMQP on 5672; the management API (15672) is published
        # next to it (extra_ports).
        return ContainerSpec(
            5672,
            "/var/lib/rabbitmq",
            {"RABBITMQ_DEFAULT_USER": "testlane"},
            "testlane",
            "/",
            "RABBITMQ_DEFAULT_PASS",
            extra_ports=(15672,),
        )

    def server_version(self, server: Server) -> str:
        assert isinstance(server, RabbitMqServer)
        with server.management() as api:
            return str(api.get("/api/overview").json().get("rabbitmq_version", ""))

    def env_value(self, part: str, driver: str | None, server: Server, database: str) -> str:
        assert isinstance(server, RabbitMqServer)
        if part == "management_url":
            return server.management_url
        leased = server.instance.extra.get("lease_vhost")  # a test's handle (pytest_plugin.rabbitmq)
        vhost = str(leased) if leased else app_vhost(server)
        if part == "vhost":
            return vhost
        return server.url_for_vhost(vhost, scheme=self.drivers()[driver or "amqp"])

    def app_namespace(self, server: Server) -> str | None:
        from testlane.services.rabbitmq_vhosts import app_vhost_name

        return f"the application's vhost {app_vhost_name(server.instance.run_id)}"

    def adopt_url(self, instance: Instance, settings: Settings) -> None:
        if settings.rabbitmq.management_url:
            instance.extra["management_url"] = settings.rabbitmq.management_url

    def doctor_checks(self, settings: Settings) -> list[DoctorCheck]:
        try:
            server, epmd = find_rabbitmq(settings.rabbitmq.binary)
        except TestlaneError as exc:
            status = "fail" if settings.rabbitmq.backend == "local" or _auto_runs_configured(settings) else "ok"
            detail = "no local rabbitmq-server" if status == "ok" else exc.message
            return [DoctorCheck(status, "rabbitmq (local)", detail, exc.hint or "" if status == "fail" else "")]
        return [
            DoctorCheck(
                "ok",
                "rabbitmq (local)",
                f"RabbitMQ {rabbitmq_version(server)} at {server}, epmd at {epmd} "
                "(a private node: own epmd port, cookie, node name; cold start 7-12 s)",
            )
        ]


def _auto_runs_configured(settings: Settings) -> bool:
    return bool(settings.rabbitmq.binary) and (settings.rabbitmq.backend or settings.backend) == "auto"


register(RabbitMqKind())
