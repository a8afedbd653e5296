"""One helper points the project's mapped variables at a test's lease and puts them back (every per-test
broker fixture uses it: jetstream, rabbitmq_vhost, mqtt_namespace, s3_bucket)."""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

import pytest

from testlane.pytest_plugin.lease_env import mapped_for_test
from tests.unit.test_envmap import PG, VK


def _plugin(env: dict[str, str]) -> Any:
    return SimpleNamespace(settings=SimpleNamespace(env=env), active_servers=lambda: {"postgres": PG, "valkey": VK})


def test_the_kinds_variables_carry_the_lease_then_what_was_there(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://run-level/1023")
    monkeypatch.delenv("CACHE_HOST", raising=False)
    plugin = _plugin({"DATABASE_URL": "{postgres.url}", "REDIS_URL": "{redis.url}", "CACHE_HOST": "{valkey.host}"})
    with mapped_for_test(plugin, "valkey", VK, {("valkey", "url"): "redis://lease/7"}) as values:
        assert values == {"REDIS_URL": "redis://lease/7", "CACHE_HOST": "127.0.0.1"}
        assert os.environ["REDIS_URL"] == "redis://lease/7" and os.environ["CACHE_HOST"] == "127.0.0.1"
        assert "DATABASE_URL" not in values  # another service's variable is not the lease's
    assert os.environ["REDIS_URL"] == "redis://run-level/1023"
    assert "CACHE_HOST" not in os.environ


def test_restored_when_the_test_fails_and_nothing_set_without_a_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    with pytest.raises(RuntimeError), mapped_for_test(_plugin({"REDIS_URL": "{valkey.url}"}), "valkey", VK):
        assert "REDIS_URL" in os.environ
        raise RuntimeError("the test failed")
    assert "REDIS_URL" not in os.environ
    before = dict(os.environ)
    with mapped_for_test(_plugin({}), "valkey", VK) as values:
        assert values == {} and dict(os.environ) == before
