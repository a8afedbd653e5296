"""The RabbitMQ kind without a broker: names, settings, URLs, the node's start command."""

from __future__ import annotations

import pytest

from testlane.core.config import load_settings
from testlane.core.envmap import validate_mapping
from testlane.core.errors import ConfigError
from testlane.services import kinds
from testlane.services.backends import choose_backend
from testlane.services.instance import Instance
from testlane.services.rabbitmq import START_SCRIPT, RabbitMqServer, vhost_url


def _server(**extra: object) -> RabbitMqServer:
    inst = Instance(
        run_id="abcd1234",
        name="rabbitmq",
        engine="rabbitmq",
        backend="local",
        host="127.0.0.1",
        port=5999,
        user="tl_u",
        password="p/w",
        database="/",
        extra=dict(extra),
    )
    return RabbitMqServer(inst, owned=False)


def test_urls_quote_the_vhost_and_the_password() -> None:
    server = _server(management_port=15999)
    assert server.url == "amqp://tl_u:p%2Fw@127.0.0.1:5999/%2F"
    assert server.url_for_vhost("tl_x_1", scheme="pyamqp") == "pyamqp://tl_u:p%2Fw@127.0.0.1:5999/tl_x_1"
    assert server.management_url == "http://127.0.0.1:15999"
    assert vhost_url("amqp://u:p@h:1/old", "/") == "amqp://u:p@h:1/%2F"
    assert set(server.env()) == set(kinds.get("rabbitmq").env_names)


def test_an_existing_brokers_management_url_comes_from_the_settings() -> None:
    assert _server(management_url="https://mq.example:443/").management_url == "https://mq.example:443"


def test_env_parts_and_drivers() -> None:
    validate_mapping({"A": "{rabbitmq.url:pyamqp}", "B": "{rabbitmq.vhost}", "C": "{rabbitmq.management_url}"})
    with pytest.raises(ConfigError, match="rabbitmq has no part 'db'"):
        validate_mapping({"A": "{rabbitmq.db}"})
    with pytest.raises(ConfigError, match="unknown rabbitmq driver"):
        validate_mapping({"A": "{rabbitmq.url:kafka}"})


def test_there_is_no_embedded_rabbitmq_and_the_error_says_what_to_use() -> None:
    settings = load_settings(environ={}, overrides={"rabbitmq.backend": "embedded"})
    with pytest.raises(ConfigError) as caught:
        choose_backend("rabbitmq", settings)
    assert "local" in (caught.value.hint or "") and "container" in (caught.value.hint or "")


def test_the_start_command_carries_no_secret_and_binds_its_epmd_to_loopback() -> None:
    assert "-address 127.0.0.1" in START_SCRIPT and "--pdeathsig KILL" in START_SCRIPT
    assert "pass" not in START_SCRIPT.lower()
