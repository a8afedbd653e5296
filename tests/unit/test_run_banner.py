"""The start-up banner showed RabbitMQ's URL ending in `/%2F` while the application was given the vhost
`tl_<run>_app`: it names what the application's mapping uses, without a password, on the same line."""

from __future__ import annotations

from testlane.cli.run import _describe
from testlane.services.instance import Instance
from testlane.services.rabbitmq import RabbitMqServer


def _rabbit() -> RabbitMqServer:
    instance = Instance(
        run_id="ab12cd34",
        name="rabbitmq",
        engine="rabbitmq",
        backend="local",
        port=5999,
        user="testlane",
        password="s3cret-pw",
        version="3.10.8",
    )
    return RabbitMqServer(instance, owned=False)


def test_the_banner_names_the_application_s_vhost_when_the_mapping_uses_rabbitmq() -> None:
    line = _describe({"rabbitmq": _rabbit()}, referenced={"rabbitmq"})
    assert "application's vhost tl_ab12cd34_app" in line, line
    assert "s3cret-pw" not in line and "\n" not in line


def test_without_a_mapping_to_it_the_banner_is_as_before() -> None:
    line = _describe({"rabbitmq": _rabbit()}, referenced=set())
    assert "vhost" not in line and "s3cret-pw" not in line, line
