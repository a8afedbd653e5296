"""The ``mqtt`` service kind (``mosquitto`` is its alias): local Mosquitto, the official
``eclipse-mosquitto:2`` image, or an existing broker (``mqtt://user:password@host:port``); there is
no embedded broker. The engine is :class:`~testlane.services.mqtt.MqttEngine`; the handle
:class:`~testlane.services.mqtt.MqttServer`.

In ``[tool.testlane.env]`` the application gets the run's credentials and the run's topic prefix
``tl/<run id>/app/`` (``{mqtt.topic_prefix}``), never one of a test's (their namespaces are
``tl/<run id>/<lease>/``, see :mod:`testlane.services.mqtt_isolation`).
"""

from __future__ import annotations

from testlane.core.config import Settings
from testlane.core.errors import TestlaneError
from testlane.services.base import Server
from testlane.services.kinds import register
from testlane.services.kinds.kind import ContainerSpec, DoctorCheck, ServiceKind
from testlane.services.mqtt import (
    ADMIN_USER,
    PAHO_HINT,
    PAHO_MISSING,
    MqttEngine,
    MqttServer,
    find_mosquitto,
    require_paho,
)

__all__ = ["MOSQUITTO_SCRIPT", "MqttKind"]

# The official image: its entry point runs this as root; mosquitto drops to its `mosquitto` user. The
# run's account is made by `mosquitto_ctrl dynsec init`, which reads the password twice from standard input
# (printf is a shell builtin: the password is on no command line); the account's role gets every topic at
# the first readiness check (MqttServer.ping). The log goes to stderr: the broker's stdout is block-buffered when
# it is not a terminal, so `podman logs` (the tail a failed start shows) would stay empty until it exits. The
# security file (the account's hash) is made 0600 (mosquitto_ctrl writes it 0644) and owned by the broker's user
# (uid 1883 in the official image and the local one), which the broker, started as root, drops to.
MOSQUITTO_SCRIPT = (
    "set -e\n"
    "d=/mosquitto/data\n"
    'printf \'%s\\n%s\\n\' "$TESTLANE_MQTT_PASSWORD" "$TESTLANE_MQTT_PASSWORD" | '
    f"mosquitto_ctrl dynsec init $d/dynamic-security.json {ADMIN_USER} >/dev/null\n"
    "unset TESTLANE_MQTT_PASSWORD\n"
    "cat > /mosquitto/config/mosquitto.conf <<EOF\n"
    "per_listener_settings false\n"
    "listener 1883\n"
    "allow_anonymous false\n"
    "persistence false\n"
    "set_tcp_nodelay true\n"
    "log_dest stderr\n"
    "plugin /usr/lib/mosquitto_dynamic_security.so\n"
    "plugin_opt_config_file $d/dynamic-security.json\n"
    "EOF\n"
    "chmod 600 $d/dynamic-security.json\n"
    "chown -R mosquitto:mosquitto $d\n"
    "exec mosquitto -c /mosquitto/config/mosquitto.conf\n"
)


class MqttKind(ServiceKind):
    name = "mqtt"
    display = "MQTT (Mosquitto)"
    schemes = ("mqtt", "tcp")
    default_port = 1883
    default_user = None
    default_database = ""
    engine = MqttEngine
    handle = MqttServer
    env_names = ("TESTLANE_MQTT_URL", "TESTLANE_MQTT_HOST", "TESTLANE_MQTT_PORT")
    backends = ("local", "container", "url")
    backend_hint = 'use "local" (mosquitto on this machine), "container", "url" or "auto".'
    binary_key = "binary"
    default_env_driver = "mqtt"

    def local(self, settings: Settings) -> str:
        return str(find_mosquitto(settings.mqtt.binary).path)

    def container_spec(self, settings: Settings) -> ContainerSpec:
        require_paho()  # the readiness check's client
        return ContainerSpec(
            1883, "/mosquitto/data", {}, ADMIN_USER, "", "TESTLANE_MQTT_PASSWORD", ("sh", "-c", MOSQUITTO_SCRIPT)
        )

    def doctor_checks(self, settings: Settings) -> list[DoctorCheck]:
        return [*_client_checks(settings), *self._binary_checks(settings)]

    def _binary_checks(self, settings: Settings) -> list[DoctorCheck]:
        try:
            found = find_mosquitto(settings.mqtt.binary)
        except TestlaneError as exc:
            configured = settings.mqtt.binary and (settings.mqtt.backend or settings.backend) == "auto"
            status = "fail" if settings.mqtt.backend == "local" or configured else "ok"
            detail = "no local mosquitto" if status == "ok" else exc.message
            return [DoctorCheck(status, "mqtt (local)", detail, exc.hint or "" if status == "fail" else "")]
        checks = [DoctorCheck("ok", "mqtt (local)", f"Mosquitto {found.version} at {found.path}")]
        if found.plugin is None:
            checks.append(
                DoctorCheck(
                    "warn",
                    "mqtt (isolation)",
                    f"no mosquitto_dynamic_security.so next to {found.path}: per-test isolation is a topic prefix only",
                    "install Mosquitto 2 with its dynamic-security plugin (see docs/isolation.md)",
                )
            )
        else:
            checks.append(DoctorCheck("ok", "mqtt (isolation)", f"a user per test ({found.plugin})"))
        return checks

    def server_version(self, server: Server) -> str:
        # MQTT has no version query; `$SYS/broker/version` is not always published (an existing broker may
        # turn $SYS off or deny it): the local binary's version, else none.
        return server.instance.version

    def env_value(self, part: str, driver: str | None, server: Server, database: str) -> str:
        assert isinstance(server, MqttServer)
        if part == "topic_prefix":
            return server.topic_prefix
        if part == "url":
            return server.instance.url_for("", scheme=self.drivers()[driver or "mqtt"])
        raise KeyError(part)


def _client_checks(settings: Settings) -> list[DoctorCheck]:
    try:
        require_paho()
    except TestlaneError:
        wanted = "mqtt" in settings.services or bool(settings.mqtt.backend or settings.mqtt.url)
        # a warning with its fix: the doctor shows it as information when the project does not use MQTT
        return [DoctorCheck("fail" if wanted else "warn", "mqtt (client)", PAHO_MISSING, PAHO_HINT)]
    from importlib.metadata import version

    return [DoctorCheck("ok", "mqtt (client)", f"paho-mqtt {version('paho-mqtt')}")]


register(MqttKind())
