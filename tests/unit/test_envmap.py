"""[tool.testlane.env]: parsing, validation and rendering (no servers: instances are plain data)."""

from __future__ import annotations

import pytest

from testlane.core.envmap import Reference, parse_template, referenced_services, validate_mapping
from testlane.core.errors import ConfigError
from testlane.services.env_mapping import render_mapping, variables_of
from testlane.services.instance import Instance
from testlane.services.postgres import PostgresServer
from testlane.services.valkey import ValkeyServer

PG = PostgresServer(
    Instance(
        run_id="r",
        name="postgres",
        engine="postgres",
        backend="embedded",
        port=5500,
        user="postgres",
        database="postgres",
    ),
    owned=False,
)
VK = ValkeyServer(
    Instance(
        run_id="r",
        name="valkey",
        engine="valkey",
        backend="embedded",
        port=6600,
        database="0",
        extra={"databases": 1024},
    ),
    owned=False,
)


def test_templates_parse_into_text_and_references() -> None:
    assert parse_template("X", "redis://{valkey.host}:{valkey.port}/3") == [
        "redis://",
        Reference("valkey", "host"),
        ":",
        Reference("valkey", "port"),
        "/3",
    ]
    assert parse_template("X", "{{literal}} {postgres.url:asyncpg}") == [
        "{",
        "literal",
        "}",
        " ",
        Reference("postgres", "url", "asyncpg"),
    ]


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{mongo.url}", "unknown service 'mongo'"),
        ("{postgres.hots}", "postgres has no part 'hots'"),
        ("{valkey.channel}", "valkey has no part 'channel'"),
        ("{postgres.channel_prefix}", "postgres has no part 'channel_prefix'"),
        ("{postgres.host:asyncpg}", "only url takes a driver"),
        ("{postgres.url:jdbc}", "unknown postgres driver 'jdbc'"),
        ("{postgres}", "is not a reference of the form"),
        # A reference left open reached the application as written (a fresh user, 2026-12-01).
        ("postgresql://{postgres.user}:{postgres.password@{postgres.host}/app", "a lone '{' in ':{postgres.password@'"),
        ("{postgres.url}}", "a lone '}'"),
        ("x{", "a lone '{'"),
    ],
)
def test_bad_references_are_configuration_errors(template: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_mapping({"DATABASE_URL": template})


def test_rendering_by_part_and_driver() -> None:
    mapping = {
        "DATABASE_URL": "{postgres.url}",
        "ASYNC_DB": "{postgres.url:asyncpg}",
        "POSTGRES_SERVER": "{postgres.host}",
        "POSTGRES_PORT": "{postgres.port}",
        "POSTGRES_PASSWORD": "{postgres.password}",
        "POSTGRES_DB": "{postgres.database}",
        "REDIS_URL": "{redis.url}",
    }
    env = render_mapping(mapping, {"postgres": PG, "valkey": VK}, databases={"postgres": "tl_r_run_app"})
    assert env == {
        "DATABASE_URL": "postgresql://postgres@127.0.0.1:5500/tl_r_run_app",
        "ASYNC_DB": "postgresql+asyncpg://postgres@127.0.0.1:5500/tl_r_run_app",
        "POSTGRES_SERVER": "127.0.0.1",
        "POSTGRES_PORT": "5500",
        "POSTGRES_PASSWORD": "",
        "POSTGRES_DB": "tl_r_run_app",
        "REDIS_URL": "redis://127.0.0.1:6600/1023",  # the last logical database: the application's
    }


def test_the_applications_channel_prefix_is_the_runs() -> None:
    """Pub/sub channels are server-wide: the run's application gets a prefix of its own (issue 15, seen 6),
    unlike any lease's (``tl:<db>:<token>:``)."""
    mapping = {"EVENTS": "{valkey.channel_prefix}events", "PREFIX": "{redis.channel_prefix}"}
    assert render_mapping(mapping, {"valkey": VK}) == {"EVENTS": "tl:r:app:events", "PREFIX": "tl:r:app:"}


def test_a_service_the_run_does_not_start_is_named() -> None:
    with pytest.raises(ConfigError, match="refers to mariadb, which this run does not start"):
        render_mapping({"MYSQL_URL": "{mariadb.url}"}, {"postgres": PG})
    assert render_mapping({"MYSQL_URL": "{mariadb.url}"}, {"postgres": PG}, only_available=True) == {}


def test_referenced_services_use_canonical_names() -> None:
    assert referenced_services({"A": "{redis.url}", "B": "{postgresql.host}", "C": "x"}) == {"valkey", "postgres"}


def test_an_invalid_variable_name_is_rejected() -> None:
    with pytest.raises(ConfigError, match="not a valid environment variable name"):
        validate_mapping({"NOT-VALID": "{postgres.url}"})


def test_a_per_test_lease_overrides_its_services_parts_only() -> None:
    """A per-test lease (a broker's vhost, a bucket) re-renders the variables that refer to its service."""
    mapping = {"DATABASE_URL": "{postgres.url}", "REDIS_URL": "{redis.url}", "CACHE": "{valkey.host}:{valkey.port}/3"}
    env = render_mapping(
        mapping, {"postgres": PG, "valkey": VK}, overrides={("valkey", "url"): "redis://lease/7"}, only="valkey"
    )
    assert env == {"REDIS_URL": "redis://lease/7", "CACHE": "127.0.0.1:6600/3"}
    assert variables_of(mapping, "valkey") == ["REDIS_URL", "CACHE"]


def test_adopting_md_lists_exactly_every_service_s_parts() -> None:
    """docs/adopting.md's `[tool.testlane.env]` table lacked nats, rabbitmq, mqtt and s3: it is generated."""
    from pathlib import Path

    from testlane.core.envmap import DRIVERS, PARTS, parts_table_markdown

    doc = (Path(__file__).resolve().parents[2] / "docs" / "adopting.md").read_text()
    assert parts_table_markdown() in doc, (
        "regenerate docs/adopting.md's table: testlane.core.envmap.parts_table_markdown()"
    )
    rows = {row.split("`")[1]: row for row in parts_table_markdown().splitlines()[2:]}
    assert sorted(rows) == sorted(PARTS) and len(rows) == len(parts_table_markdown().splitlines()) - 2
    for service, row in rows.items():
        cells = row.split(" | ")
        assert [p.strip("`") for p in cells[1].split(", ")] == list(PARTS[service])
        assert all(f"`{d}`" in cells[2] for d in DRIVERS[service])
