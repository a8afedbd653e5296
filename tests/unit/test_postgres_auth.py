"""Per-run Postgres credentials: the verifier's form, pg_hba's lines, the container's password.

The verifier is checked against libpq's own in tests/integration/test_private_servers_it.py.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from testlane.core.config import load_settings
from testlane.core.runtime import RunContext
from testlane.services import container, kinds
from testlane.services.container import ContainerRuntime
from testlane.services.credentials import new_password
from testlane.services.postgres_auth import hba_lines, scram_verifier, stored_password
from testlane.services.registry import Registry


def test_passwords_are_random_long_and_url_safe() -> None:
    passwords = {new_password() for _ in range(50)}
    assert len(passwords) == 50
    assert all(len(p) == 32 and p.replace("-", "").replace("_", "").isalnum() for p in passwords)


def test_the_verifier_has_postgres_form_and_the_iteration_count() -> None:
    verifier = scram_verifier("secret", iterations=16, salt=b"0123456789abcdef")
    scheme, params, keys = verifier.split("$")
    iterations, salt = params.split(":")
    stored, server = keys.split(":")
    assert (scheme, iterations, base64.b64decode(salt)) == ("SCRAM-SHA-256", "16", b"0123456789abcdef")
    assert len(base64.b64decode(stored)) == len(base64.b64decode(server)) == 32
    assert scram_verifier("secret", iterations=16, salt=b"0123456789abcdef") == verifier  # deterministic per salt
    assert scram_verifier("secret", iterations=16) != scram_verifier("secret", iterations=16)  # random salt
    with pytest.raises(ValueError, match="at least 1"):
        scram_verifier("secret", iterations=0)
    assert stored_password("pw", "postgres", major=9, iterations=16).startswith("md5")


def test_tcp_always_needs_a_password_and_the_socket_is_the_only_trust() -> None:
    for major, method in ((18, "scram-sha-256"), (15, "scram-sha-256"), (9, "md5")):
        rules = [line.split() for line in hba_lines(major) if not line.startswith("#")]
        assert ["local", "all", "all", "trust"] in rules
        assert all(rule[-1] == method for rule in rules if rule[0] == "host")
        assert {rule[3] for rule in rules if rule[0] == "host"} == {"127.0.0.1/32", "::1/128"}
        assert all(rule[0] in ("local", "host") for rule in rules)


def test_a_postgres_container_gets_a_password_per_run_never_on_its_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(start=tmp_path, environ={}, overrides={"data_dir": str(tmp_path / "data")})
    spec = kinds.get("postgres").container_spec(settings)
    assert spec is not None and "POSTGRES_HOST_AUTH_METHOD" not in spec.env
    context = RunContext.from_settings(settings, owner=os.getpid())
    # No container is started: only the launch's instance and command line are looked at.
    monkeypatch.setattr(container, "detect_runtime", lambda _settings: ContainerRuntime("podman", (), (), ()))
    engine = container.ContainerEngine("postgres", settings, context, Registry(context))
    first, second = engine.launch(), engine.launch("other")
    password = first.instance.password
    assert password and second.instance.password and password != second.instance.password
    argv = first.argv(5432)
    assert password not in " ".join(argv)
    assert argv[argv.index("POSTGRES_PASSWORD") - 1] == "-e"
    assert f":{password}@" in first.instance.url
