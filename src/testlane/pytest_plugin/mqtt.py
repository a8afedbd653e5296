"""MQTT fixtures: the broker, and a namespace of its own per test.

Fixtures:

``mqtt``            (session) the run's :class:`~testlane.services.mqtt.MqttServer`: ``.url``, ``.client()``
                    (a connected paho-mqtt client with the run's credentials), ``.topic_prefix`` (the run's
                    application's); started on demand from ``mqtt.backend``
``mqtt_namespace``  the test's :class:`~testlane.services.mqtt_isolation.MqttNamespace`: ``.url`` (the test's
                    own credentials), ``.topic_prefix``, ``.topic(name)``, ``.client_id(name)``, ``.client()``;
                    for the test's duration the ``[tool.testlane.env]`` variables that refer to ``mqtt``
                    carry the test's coordinates (restored after)

Integration lane only. Isolation and its limits: :mod:`testlane.services.mqtt_isolation`, docs/isolation.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from testlane.core.runenv import RunEnv
from testlane.pytest_plugin.boundary import around_test

if TYPE_CHECKING:
    from testlane.services.mqtt import MqttServer
    from testlane.services.mqtt_isolation import MqttLeases, MqttNamespace

__all__: list[str] = []


@pytest.fixture(scope="session")
def mqtt(pytestconfig: pytest.Config) -> Iterator[MqttServer]:
    """The run's MQTT broker (``.url``, ``.client()``, ``.topic_prefix``), started on demand."""
    from testlane.pytest_plugin.plugin import plugin_of

    yield plugin_of(pytestconfig).server("mqtt")


@pytest.fixture(scope="session")
def _testlane_mqtt_leases(mqtt: MqttServer) -> Iterator[MqttLeases]:
    from testlane.services.mqtt_isolation import MqttLeases

    leases = MqttLeases(mqtt)
    yield leases
    leases.close()


@contextlib.contextmanager
def _namespace(request: pytest.FixtureRequest, leases: MqttLeases) -> Iterator[MqttNamespace]:
    from testlane.pytest_plugin.lease_env import mapped_for_test
    from testlane.pytest_plugin.plugin import plugin_of

    ns = leases.lease()
    overrides = {
        ("mqtt", "url"): ns.url,
        ("mqtt", "user"): ns.user or "",
        ("mqtt", "password"): ns.password or "",
        ("mqtt", "topic_prefix"): ns.topic_prefix,
    }
    try:
        with mapped_for_test(plugin_of(request.config), "mqtt", leases.server, overrides):
            yield ns
    finally:
        leases.release(ns)


@pytest.fixture
def mqtt_namespace(request: pytest.FixtureRequest, _testlane_mqtt_leases: MqttLeases) -> Iterator[MqttNamespace]:
    """The test's own MQTT namespace (its user and topic prefix); its retained messages cleared after."""
    __tracebackhide__ = True
    from testlane.databases.guard import require_integration_lane

    nodeid = request.node.nodeid
    require_integration_lane(f"{nodeid} (fixture mqtt_namespace)", env=RunEnv.current())
    yield from around_test(
        lambda: _namespace(request, _testlane_mqtt_leases),
        setup=f"{nodeid}: making its MQTT namespace",
        teardown=lambda ns: f"{nodeid}: removing its MQTT namespace {ns.topic_prefix}",
    )
