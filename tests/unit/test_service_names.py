"""Service names and their aliases (issue 14, seen 6: `services = ["redis"]` was rejected although the
fixtures are called redis_*): one table, used by the settings, the stack and [tool.testlane.env]."""

from __future__ import annotations

from pathlib import Path

import pytest

from testlane.core.config import load_settings
from testlane.core.envmap import validate_mapping
from testlane.core.errors import ConfigError
from testlane.core.service_names import canonical_services
from testlane.services.stack import ServiceStack


def project(tmp_path: Path, services: str) -> Path:
    (tmp_path / "pyproject.toml").write_text(f"[tool.testlane]\nservices = {services}\n")
    return tmp_path


def test_aliases_in_the_services_setting_load_as_the_canonical_services(tmp_path: Path) -> None:
    settings = load_settings(start=project(tmp_path, '["redis", "PostgreSQL", "mysql", "valkey"]'), environ={})
    assert settings.services == ["valkey", "postgres", "mariadb"]  # in order, each once
    from_env = load_settings(start=tmp_path, environ={"TESTLANE_SERVICES": "postgresql,redis"})
    assert from_env.services == ["postgres", "valkey"]
    from_cli = load_settings(start=tmp_path, environ={}, overrides={"services": "redis"})
    assert from_cli.services == ["valkey"]


def test_an_unknown_service_is_a_configuration_error_naming_the_names_that_work(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(start=project(tmp_path, '["redis", "kafka"]'), environ={})
    assert "unknown service(s) in setting `services`: kafka." in caught.value.message
    assert "postgres, valkey, mariadb" in (caught.value.hint or "")
    assert "redis = valkey" in (caught.value.hint or "")


def test_the_stack_and_the_env_mapping_use_the_same_table() -> None:
    assert ServiceStack.validate(["mysql", "redis", "postgres"]) == ["mariadb", "valkey", "postgres"]
    with pytest.raises(ConfigError, match="unknown service"):
        ServiceStack.validate(["mongo"])
    [reference] = validate_mapping({"REDIS_URL": "{redis.url}"})["REDIS_URL"]
    assert reference.service == "valkey"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("written", "says"),
    [
        ("postgress", "did you mean postgres for 'postgress'?"),
        ("rediss", "did you mean valkey (redis) for 'rediss'?"),
        ("mariadbb", "did you mean mariadb for 'mariadbb'?"),
    ],
)
def test_a_misspelt_service_gets_the_service_it_probably_means(written: str, says: str) -> None:
    """Found by a fresh user: ``services = ["postgress"]`` and ``testlane services start postgress`` listed the
    names but said none was close."""
    from testlane.services import kinds

    with pytest.raises(ConfigError) as setting:
        canonical_services([written])
    with pytest.raises(ConfigError) as command:
        kinds.get(written)
    for error in (setting.value, command.value):
        assert says in str(error) and "services can be: postgres" in str(error), error


def test_a_name_close_to_none_gets_only_the_list() -> None:
    with pytest.raises(ConfigError) as info:
        canonical_services(["xyz"])
    assert "did you mean" not in str(info.value)
