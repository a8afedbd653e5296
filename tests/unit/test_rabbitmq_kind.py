"""The RabbitMQ kind without a broker: names, settings, URLs, the node's start command."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from testlane.core.config import load_settings
from testlane.core.envmap import validate_mapping
from testlane.core.errors import BinaryNotFoundError, ConfigError
from testlane.services import kinds
from testlane.services.backends import choose_backend
from testlane.services.instance import Instance
from testlane.services.rabbitmq import (
    START_SCRIPT,
    RabbitMqServer,
    _check_epmd,
    find_rabbitmq,
    rabbitmq_version,
    vhost_url,
)


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


def _script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}")
    path.chmod(0o755)
    return path


@pytest.mark.parametrize("what", ["coreutils", "a script named rabbitmq-server", "rabbitmqctl"])
def test_a_configured_binary_that_is_not_rabbitmq_server_is_one_error_naming_the_key(what: str, tmp_path: Path) -> None:
    binary = {
        "coreutils": Path("/usr/bin/true"),
        "a script named rabbitmq-server": _script(tmp_path / "rabbitmq-server", "exit 0\n"),
        "rabbitmqctl": _script(tmp_path / "rabbitmq_server-3.10.8" / "sbin" / "rabbitmqctl", "exit 0\n"),
    }[what]
    for sibling in ("rabbitmq-env", "rabbitmq-server"):  # an installation's layout, but the wrong script
        _script(tmp_path / "rabbitmq_server-3.10.8" / "sbin" / sibling, "exit 0\n")
    with pytest.raises(BinaryNotFoundError) as info:
        find_rabbitmq(str(binary))
    assert "rabbitmq.binary" in info.value.message and "is not a RabbitMQ server" in info.value.message
    assert "rabbitmq.binary" in (info.value.hint or "")
    settings = load_settings(environ={}, overrides={"rabbitmq.binary": str(binary)})
    [check] = kinds.get("rabbitmq").doctor_checks(settings)
    assert check.status == "fail" and "rabbitmq.binary" in check.detail, check
    assert "RabbitMQ 3" not in check.detail  # not "ok RabbitMQ 3.10.8", the system package's version borrowed


def test_a_rabbitmq_installation_s_script_is_accepted_with_its_own_version(tmp_path: Path) -> None:
    sbin = tmp_path / "rabbitmq_server-3.9.1" / "sbin"
    for name in ("rabbitmq-server", "rabbitmq-env", "rabbitmqctl"):
        _script(sbin / name, "exit 0\n")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "rabbitmq-server").symlink_to(sbin / "rabbitmq-server")
    assert rabbitmq_version(sbin / "rabbitmq-server") == "3.9.1"
    assert rabbitmq_version(tmp_path / "bin" / "rabbitmq-server") == "3.9.1"


def test_an_epmd_that_is_not_erlang_s_is_refused(tmp_path: Path) -> None:
    fake = _script(tmp_path / "epmd", "echo 'true (GNU coreutils) 9.4'\n")
    with pytest.raises(BinaryNotFoundError) as info:
        _check_epmd(fake)
    assert "not Erlang's port mapper" in info.value.message and "true (GNU coreutils) 9.4" in info.value.message
    if shutil.which("epmd"):
        _check_epmd(Path(str(shutil.which("epmd"))))  # the real one passes
