"""The mqtt kind's pieces that need no broker: its container command, its credential files, its env parts."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from testlane.core.config import load_settings
from testlane.core.envmap import validate_mapping
from testlane.core.errors import ConfigError
from testlane.core.service_names import canonical
from testlane.services import kinds
from testlane.services.mqtt import ADMIN_ROLE, dynsec_config, password_line


def test_mosquitto_is_an_alias_of_mqtt() -> None:
    assert canonical("mosquitto") == "mqtt"
    assert kinds.get("mqtt").backends == ("local", "container", "url")


def test_the_container_command_carries_no_password() -> None:
    spec = kinds.get("mqtt").container_spec(load_settings(environ={}))
    assert spec is not None
    assert spec.password_env == "TESTLANE_MQTT_PASSWORD" and spec.user == "testlane" and spec.port == 1883
    script = spec.command[-1]
    assert spec.command[:2] == ("sh", "-c")
    # the password reaches mosquitto_ctrl on standard input, from the variable; printf is a shell builtin
    assert '"$TESTLANE_MQTT_PASSWORD" | mosquitto_ctrl dynsec init' in script
    assert "/mosquitto/config/mosquitto.conf" in script and "allow_anonymous false" in script
    assert "-P" not in script.split() and "-b" not in script.split()


def test_the_password_file_line_is_mosquittos_pbkdf2_format() -> None:
    line = password_line("testlane", "secret")
    user, rest = line.rstrip("\n").split(":", 1)
    _, kind, iterations, salt, digest = rest.split("$")
    assert (user, kind, iterations) == ("testlane", "7", "101")
    expected = hashlib.pbkdf2_hmac("sha512", b"secret", base64.b64decode(salt), 101)
    assert base64.b64decode(digest) == expected
    assert "secret" not in line


def test_the_plugin_file_holds_the_hash_and_denies_by_default() -> None:
    config = json.loads(dynsec_config("testlane", "secret"))
    (client,) = config["clients"]
    assert client["username"] == "testlane" and client["roles"] == [{"rolename": ADMIN_ROLE}]
    digest = hashlib.pbkdf2_hmac("sha512", b"secret", base64.b64decode(client["salt"]), client["iterations"])
    assert base64.b64decode(client["password"]) == digest and "secret" not in json.dumps(config)
    assert config["defaultACLAccess"]["publishClientReceive"] is False


def test_env_parts() -> None:
    validate_mapping({"A": "{mqtt.url}", "B": "{mosquitto.topic_prefix}", "C": "{mqtt.url:mqtt}"})
    with pytest.raises(ConfigError, match="topic_prefix"):
        validate_mapping({"A": "{mqtt.database}"})
