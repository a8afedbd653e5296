"""RabbitMQ fixtures: the run's node, and a private virtual host per test.

Fixtures:

``rabbitmq``        (session) the run's :class:`~testlane.services.rabbitmq.RabbitMqServer`: ``.url``,
                    ``.management_url``, ``.connect(vhost)``, ``.management()``; started on demand
``rabbitmq_vhost``  the test's own virtual host (:class:`RabbitMqVhost`: ``.name``, ``.url``,
                    ``.url_for(driver)``, ``.connect()``, ``.connection_parameters()``); for the test's
                    duration the project's ``[tool.testlane.env]`` variables that refer to ``rabbitmq``
                    point at it (restored after)

Vhosts are made ahead (``rabbitmq.pool_size``) and deleted in the background after each test (see
:mod:`testlane.services.rabbitmq_vhosts`). Integration lane only. pika loads only when a fixture uses it.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from testlane.core.runenv import RunEnv
from testlane.pytest_plugin.boundary import around_test

if TYPE_CHECKING:
    import pika

    from testlane.services.rabbitmq import RabbitMqServer
    from testlane.services.rabbitmq_vhosts import VhostPool

__all__ = ["RabbitMqVhost"]


@dataclasses.dataclass
class RabbitMqVhost:
    """A test's own virtual host on the run's RabbitMQ (its handle is :attr:`server`, scoped to the vhost)."""

    name: str
    server: RabbitMqServer

    @property
    def url(self) -> str:
        """``amqp://user:pass@127.0.0.1:PORT/<vhost>``."""
        return self.server.url_for_vhost(self.name)

    def url_for(self, driver: str = "amqp") -> str:
        """The URL with another scheme: ``pyamqp`` for Celery's default transport."""
        return self.server.url_for_vhost(self.name, scheme=driver)

    def connection_parameters(self, **kwargs: Any) -> pika.ConnectionParameters:
        return self.server.connection_parameters(self.name, **kwargs)

    def connect(self, **kwargs: Any) -> pika.BlockingConnection:
        """A pika ``BlockingConnection`` to the vhost."""
        return self.server.connect(self.name, **kwargs)

    def __repr__(self) -> str:
        return f"<RabbitMqVhost {self.name} on {self.server!r}>"


@pytest.fixture(scope="session")
def rabbitmq(pytestconfig: pytest.Config) -> Iterator[RabbitMqServer]:
    """The run's RabbitMQ node (``.url``, ``.management_url``, ``.connect(vhost)``), started on demand."""
    from testlane.pytest_plugin.plugin import plugin_of

    yield plugin_of(pytestconfig).server("rabbitmq")


@pytest.fixture(scope="session")
def _testlane_rabbitmq_vhosts(rabbitmq: RabbitMqServer, pytestconfig: pytest.Config) -> Iterator[VhostPool]:
    from testlane.pytest_plugin.plugin import plugin_of
    from testlane.services.rabbitmq_vhosts import VhostPool

    pool = VhostPool(rabbitmq, size=plugin_of(pytestconfig).settings.rabbitmq.pool_size)
    yield pool
    pool.close()


def _leased_handle(server: RabbitMqServer, vhost: str) -> RabbitMqServer:
    """A handle on the same node whose mapped coordinates are ``vhost``'s (not owned: never stops it)."""
    inst = server.instance
    leased = dataclasses.replace(inst, database=vhost, extra={**inst.extra, "lease_vhost": vhost})
    return type(server)(leased, registry=None, owned=False)


@contextlib.contextmanager
def _lease(request: pytest.FixtureRequest) -> Iterator[RabbitMqVhost]:
    from testlane.databases.guard import require_integration_lane
    from testlane.pytest_plugin.lease_env import mapped_for_test
    from testlane.pytest_plugin.plugin import plugin_of

    require_integration_lane(f"{request.node.nodeid} (fixture rabbitmq_vhost)", env=RunEnv.current())
    pool: VhostPool = request.getfixturevalue("_testlane_rabbitmq_vhosts")
    name = pool.lease()
    try:
        # The mapping is rendered against a handle whose coordinates are the vhost's (its URL, its vhost part).
        with mapped_for_test(plugin_of(request.config), "rabbitmq", _leased_handle(pool.server, name)):
            yield RabbitMqVhost(name, pool.server)
    finally:
        pool.release(name)


@pytest.fixture
def rabbitmq_vhost(request: pytest.FixtureRequest) -> Iterator[RabbitMqVhost]:
    """The test's own RabbitMQ virtual host (made ahead; deleted in the background after the test)."""
    __tracebackhide__ = True
    nodeid = request.node.nodeid
    yield from around_test(
        lambda: _lease(request),
        setup=f"{nodeid}: leasing a RabbitMQ virtual host",
        teardown=lambda vhost: f"{nodeid}: deleting its RabbitMQ virtual host {vhost.name}",
    )
