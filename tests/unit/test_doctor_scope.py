"""`testlane doctor` warned that the NATS and S3 extras were missing in a project that uses RabbitMQ alone:
what the project's services (and its `[tool.testlane.env]`) need warns or fails; the rest is information."""

from __future__ import annotations

import pytest

from testlane.cli.doctor import _kinds
from testlane.core.config import load_settings
from testlane.services import kinds
from testlane.services.kinds.kind import DoctorCheck


@pytest.fixture
def every_kind_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    for kind in kinds.registered():
        warning = DoctorCheck("warn", f"{kind.name} (embedded)", "its wheel is not installed", "pip install it")
        monkeypatch.setattr(kind, "doctor_checks", lambda settings, w=warning: [w])


@pytest.mark.usefixtures("every_kind_warns")
def test_only_the_configured_services_warn_the_others_are_information() -> None:
    settings = load_settings(environ={}, overrides={"services": "rabbitmq"})
    checks = {c.topic.split()[0]: c for c in _kinds(settings)}
    assert checks["rabbitmq"].status == "warn" and checks["rabbitmq"].fix == "pip install it"
    for name in ("postgres", "valkey", "mariadb", "nats", "mqtt", "s3"):
        assert checks[name].status == "info", checks[name]
        assert "not used by this project" in checks[name].detail and not checks[name].fix


@pytest.mark.usefixtures("every_kind_warns")
def test_a_service_the_env_mapping_refers_to_is_needed() -> None:
    settings = load_settings(environ={}, overrides={"services": "rabbitmq", "env": {"BUCKET": "{s3.bucket}"}})
    statuses = {c.topic.split()[0]: c.status for c in _kinds(settings)}
    assert statuses["rabbitmq"] == statuses["s3"] == "warn"
    assert statuses["nats"] == "info"


@pytest.mark.parametrize(("services", "status"), [("postgres", "info"), ("mqtt", "fail")])
def test_a_missing_mqtt_client_is_information_with_its_fix_unless_the_project_uses_mqtt(
    monkeypatch: pytest.MonkeyPatch, services: str, status: str
) -> None:
    """paho-mqtt not installed in a project without MQTT was an `ok` line saying "is not installed"."""
    from testlane.core.errors import ServiceError
    from testlane.services.kinds import mqtt

    def missing() -> None:
        raise ServiceError("paho-mqtt is not installed")

    monkeypatch.setattr(mqtt, "require_paho", missing)
    settings = load_settings(environ={}, overrides={"services": services})
    check = next(c for c in _kinds(settings) if c.topic == "mqtt (client)")
    assert check.status == status, check
    assert "pip install" in (check.detail if status == "info" else check.fix), check
