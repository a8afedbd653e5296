"""Per-test MQTT isolation: a namespace per test, ``tl/<run id>/<lease>/``.

A topic prefix alone isolates nothing a test does not cooperate with: a ``#`` subscriber hears every
test, a retained message stays for the next test to receive, client ids are broker-wide. So on the
brokers testlane starts (Mosquitto 2 with its dynamic-security plugin, the ``acl`` mode) every test
also gets **its own user**: created through ``$CONTROL/dynamic-security/v1`` with a role that lets it
publish and receive only under its prefix, and subscribe to any filter. Its ``#`` subscription
therefore receives its own subtree only, its retained messages stay there, and it cannot publish into
another test's. Creating the user and role is one round trip (median 0.9 ms measured on Mosquitto
2.0.11; deleting them 1.0 ms), so there is no pool ahead: a namespace is made when the test asks.

At release the user is deleted (the broker disconnects the test's clients still connected), then the
retained messages under the prefix are cleared: the run's account subscribes to ``<prefix>#`` and to a
marker topic, publishes the marker, and clears (empty retained payload) every retained message that
arrived before the marker (the broker sends a subscription's retained messages before it handles the
next packet of that connection).

On an existing broker (the ``url`` backend) or without the plugin (the ``prefix`` mode) a test gets the
run's credentials and its prefix only: what stays shared there is listed in docs/isolation.md
(``#`` subscribers, client ids, ``$SYS``); retained messages under the prefix are still cleared.
What neither mode isolates: client ids (the broker disconnects an earlier connection with the same id,
whoever's it is: use :meth:`MqttNamespace.client_id`) and the broker's ``$SYS`` topics.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from testlane.core.errors import ServiceError
from testlane.core.urls import ServiceUrl
from testlane.services.credentials import new_password
from testlane.services.mqtt import MqttServer, close_client, connect_client, control

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

__all__ = ["MqttLeases", "MqttNamespace"]


@dataclass
class MqttNamespace:
    """One test's MQTT coordinates: ``url`` (its credentials), ``topic_prefix``, ``topic(name)``,
    ``client_id(name)``, ``client()``."""

    host: str
    port: int
    user: str | None
    password: str | None = field(repr=False)
    topic_prefix: str
    lease: str
    isolation: str  # "acl" | "prefix"
    _clients: list[mqtt.Client] = field(default_factory=list, init=False, repr=False)

    @property
    def url(self) -> str:
        return str(ServiceUrl(scheme="mqtt", user=self.user, password=self.password, host=self.host, port=self.port))

    def topic(self, name: str) -> str:
        """``name`` in the test's namespace: ``tl/<run id>/<lease>/<name>``."""
        return self.topic_prefix + name.lstrip("/")

    def client_id(self, name: str = "") -> str:
        """A client id of this test's own (client ids are broker-wide: see the module docstring)."""
        return f"{self.lease}-{name or secrets.token_hex(4)}"

    def client(self, client_id: str = "", **kwargs: Any) -> mqtt.Client:
        """A connected paho-mqtt client with the test's credentials, its loop running; closed at release."""
        client = connect_client(
            self.host,
            self.port,
            user=self.user,
            password=self.password,
            client_id=client_id or self.client_id(),
            **kwargs,
        )
        self._clients.append(client)
        return client

    def close_clients(self) -> None:
        while self._clients:
            close_client(self._clients.pop())


class MqttLeases:
    """Namespaces on one broker for one pytest process: an account connection of the run's credentials,
    made on first use (see module docstring)."""

    def __init__(self, server: MqttServer) -> None:
        self.server = server
        self._admin: mqtt.Client | None = None
        self._lock = threading.Lock()
        self._live: dict[str, MqttNamespace] = {}

    @property
    def mode(self) -> str:
        return "acl" if self.server.isolation == "acl" else "prefix"

    def _account(self) -> mqtt.Client:
        if self._admin is None:
            run = self.server.instance.run_id
            self._admin = self.server.client(client_id=f"tl-{run}-leases-{secrets.token_hex(4)}")
        return self._admin

    def lease(self) -> MqttNamespace:
        """A new namespace (and, in ``acl`` mode, its user). Raises ServiceError when the broker refuses."""
        lease = f"t{secrets.token_hex(5)}"
        run = self.server.instance.run_id
        prefix = f"tl/{run}/{lease}/"
        user, password = self.server.user, self.server.password
        with self._lock:
            admin = self._account()
            if self.mode == "acl":
                user, password = f"tl-{run}-{lease}", new_password()
                # Explicit denies below the allows (priority -1): the confinement does not depend on the
                # broker's default access (`mosquitto_ctrl dynsec init` lets everyone receive everything).
                allow = [
                    {"acltype": "publishClientSend", "topic": f"{prefix}#", "allow": True},
                    {"acltype": "publishClientReceive", "topic": f"{prefix}#", "allow": True},
                    {"acltype": "publishClientSend", "topic": "#", "allow": False, "priority": -1},
                    {"acltype": "publishClientReceive", "topic": "#", "allow": False, "priority": -1},
                    {"acltype": "subscribePattern", "topic": "#", "allow": True},
                    {"acltype": "unsubscribePattern", "topic": "#", "allow": True},
                ]
                commands = [
                    {"command": "createRole", "rolename": user, "acls": allow},
                    {"command": "createClient", "username": user, "password": password, "roles": [{"rolename": user}]},
                ]
                errors = [r["error"] for r in control(admin, commands) if r.get("error")]
                if errors:
                    raise ServiceError(
                        f"the MQTT broker did not create the test's user: {errors[0]}",
                        hint="`testlane doctor` checks the broker's dynamic-security plugin.",
                    )
        ns = MqttNamespace(self.server.host, self.server.port, user, password, prefix, lease, self.mode)
        self._live[lease] = ns
        return ns

    def release(self, ns: MqttNamespace) -> None:
        """Close the test's clients, delete its user (``acl``) and clear its retained messages."""
        ns.close_clients()
        self._live.pop(ns.lease, None)
        if self.server.gone():  # nothing to delete, and nobody to answer
            return
        with self._lock:
            admin = self._account()
            if ns.isolation == "acl" and ns.user:
                control(
                    admin,
                    [{"command": "deleteClient", "username": ns.user}, {"command": "deleteRole", "rolename": ns.user}],
                )
            self._clear_retained(admin, ns.topic_prefix)

    def _clear_retained(self, admin: mqtt.Client, prefix: str, timeout: float = 5.0) -> None:
        marker = f"tl/{self.server.instance.run_id}/_sweep/{secrets.token_hex(6)}"
        retained: list[str] = []
        done = threading.Event()

        def on_retained(_c: Any, _u: Any, message: Any) -> None:
            if message.retain and message.payload:
                retained.append(message.topic)

        admin.message_callback_add(f"{prefix}#", on_retained)
        admin.message_callback_add(marker, lambda *_a: done.set())
        try:
            admin.subscribe([(f"{prefix}#", 0), (marker, 0)])
            admin.publish(marker, b"", qos=0)
            if not done.wait(timeout):
                raise ServiceError(f"clearing the retained messages under {prefix} timed out after {timeout:g}s")
            admin.unsubscribe([f"{prefix}#", marker])
        finally:
            admin.message_callback_remove(f"{prefix}#")
            admin.message_callback_remove(marker)
        for topic in dict.fromkeys(retained):
            admin.publish(topic, b"", qos=1, retain=True).wait_for_publish(timeout)

    def close(self) -> None:
        for ns in list(self._live.values()):
            ns.close_clients()
        if self._admin is not None:
            close_client(self._admin)
            self._admin = None
