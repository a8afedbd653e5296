"""The NATS kind without a server: its configuration, URLs, env parts and binary lookup."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from testlane.core.errors import BinaryNotFoundError
from testlane.services import kinds
from testlane.services.instance import Instance
from testlane.services.nats import NatsServer, account_password, find_nats, nats_config


def test_the_configuration_has_the_app_account_and_one_per_lease() -> None:
    text = nats_config(password="pw", accounts=3, listen="127.0.0.1:-1", store_dir="/x/js", ports_dir="/x")
    assert 'listen: "127.0.0.1:-1"' in text
    assert 'ports_file_dir: "/x"' in text
    assert 'store_dir: "/x/js"' in text
    assert 'APP: { jetstream: enabled, users: [{user: app, password: "pw"}] }' in text
    assert 'T3: { jetstream: enabled, users: [{user: t3, password: "pw-3"}] }' in text
    assert "T4" not in text
    assert "http: 0" in text


def _server(backend: str) -> NatsServer:
    inst = Instance(run_id="abcd1234", name="nats", engine="nats", backend=backend, port=4333, user="app")
    inst.password, inst.database = "pw", ""
    inst.extra["accounts"] = 2
    return NatsServer(inst, owned=False)


def test_urls_and_env() -> None:
    server = _server("embedded")
    assert server.url == "nats://app:pw@127.0.0.1:4333"
    assert server.account_url(2) == f"nats://t2:{account_password('pw', 2)}@127.0.0.1:4333"
    assert server.env() == {
        "TESTLANE_NATS_URL": "nats://app:pw@127.0.0.1:4333",
        "TESTLANE_NATS_HOST": "127.0.0.1",
        "TESTLANE_NATS_PORT": "4333",
    }


def test_env_parts_on_own_and_existing_servers() -> None:
    kind = kinds.get("nats")
    own, existing = _server("embedded"), _server("url")
    assert kind.env_value("url", None, own, "") == "nats://app:pw@127.0.0.1:4333"
    assert kind.env_value("subject_prefix", None, own, "") == ""
    assert kind.env_value("stream_prefix", None, own, "") == ""
    assert kind.env_value("subject_prefix", None, existing, "") == "tl.abcd1234.app."
    assert kind.env_value("stream_prefix", None, existing, "") == "tl_abcd1234_app_"


def test_the_url_backend_leases_prefixes(tmp_path: Path) -> None:
    from testlane.services.nats_isolation import lease_jetstream

    lease = lease_jetstream(_server("url"), tmp_path / "leases")
    assert lease.account == ""
    assert lease.subject_prefix.startswith("tl.abcd1234.") and lease.subject("x").endswith(".x")
    assert lease.stream_prefix.startswith("tl_abcd1234_") and "." not in lease.stream("ORDERS")


def test_accounts_run_out_with_a_message_naming_the_setting(tmp_path: Path) -> None:
    from testlane.core.errors import ServiceError
    from testlane.services.nats_isolation import lease_jetstream

    server = _server("embedded")
    held = [lease_jetstream(server, tmp_path, owner=f"t{i}") for i in range(2)]
    assert sorted(lease.account for lease in held) == ["T1", "T2"]
    try:
        with pytest.raises(ServiceError) as info:
            lease_jetstream(server, tmp_path, wait=0.05)
        assert "nats.accounts" in str(info.value)
    finally:
        for lease in held:  # no server here to clean: drop the locks only
            assert lease._fd is not None
            os.close(lease._fd)


def test_a_configured_binary_that_is_missing_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(BinaryNotFoundError) as info:
        find_nats("local", binary=str(tmp_path / "nats-server"))
    assert "nats.binary" in str(info.value)
