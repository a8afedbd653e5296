"""One URL type (testlane.core.urls.ServiceUrl): tricky passwords, IPv6 and socket hosts, queries, and
every URL testlane builds read back the same by the drivers' own parsers (libpq, SQLAlchemy, redis-py)."""

from __future__ import annotations

import pytest
import redis
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy.engine import make_url

from testlane.core.urls import ServiceUrl
from testlane.databases.migrations import Target
from testlane.databases.redis_isolation import RedisLease
from testlane.databases.testdb import TestDatabase
from testlane.services.external import instance_from_url
from testlane.services.instance import Instance

PASSWORDS = ["p@ss", "a/b", "100%", "us:er", "p@:/%?#&= ", "plain"]
HOSTS = ["127.0.0.1", "::1", "fe80::1", "db.example.com"]


@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize("host", HOSTS)
def test_postgres_urls_read_back_the_same_in_libpq_and_sqlalchemy(password: str, host: str) -> None:
    inst = Instance(run_id="r", name="postgres", engine="postgres", backend="url", host=host, port=5433)
    inst.user, inst.password = "app user", password
    url = inst.url_for("tl_db")
    libpq = conninfo_to_dict(url)
    assert (libpq["host"], libpq["port"], libpq["user"]) == (host, "5433", "app user")
    assert (libpq["password"], libpq["dbname"]) == (password, "tl_db")
    sa = make_url(TestDatabase("tl_db", url, server=None).sqlalchemy_url("asyncpg"))
    assert (sa.drivername, sa.host, sa.port, sa.username) == ("postgresql+asyncpg", host, 5433, "app user")
    assert (sa.password, sa.database) == (password, "tl_db")
    parsed = ServiceUrl.parse(url)
    assert (parsed.host, parsed.port, parsed.user, parsed.password, parsed.database) == (
        host,
        5433,
        "app user",
        password,
        "tl_db",
    )


@pytest.mark.parametrize("password", PASSWORDS)
def test_redis_urls_carry_any_password_without_a_user(password: str) -> None:
    url = RedisLease(host="::1", port=6390, db=7, password=password, _coordinator=None).url
    kwargs = redis.connection.parse_url(url)
    assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["password"]) == ("::1", 6390, 7, password)
    assert "username" not in kwargs or not kwargs["username"]


@pytest.mark.parametrize("password", PASSWORDS)
def test_an_existing_servers_url_is_read_whatever_its_password(password: str) -> None:
    url = str(ServiceUrl("mysql", user="root", password=password, host="::1", port=3307, database="app"))
    inst = instance_from_url("mariadb", url, run_id="r", name="mariadb")
    assert (inst.host, inst.port, inst.user, inst.password, inst.database) == ("::1", 3307, "root", password, "app")
    assert make_url(url).password == password


def test_a_unix_socket_host_keeps_its_path() -> None:
    url = ServiceUrl.parse("postgresql://me@%2FRun%2FPostgres/app")
    assert url.host == "/Run/Postgres"  # not lower-cased, as urlsplit's hostname would
    assert str(url) == "postgresql://me@%2FRun%2FPostgres/app"
    assert conninfo_to_dict(str(url))["host"] == "/Run/Postgres"
    socket_in_query = ServiceUrl.parse("postgresql://me@/app?host=/run/pg")
    assert (socket_in_query.host, socket_in_query.query) == (None, (("host", "/run/pg"),))
    assert conninfo_to_dict(str(socket_in_query))["host"] == "/run/pg"


def test_query_parameters_are_kept_added_and_replaced_in_order() -> None:
    url = ServiceUrl.parse("postgresql://u@h/db?sslmode=disable&options=-cx%3D1&application_name=a%20b")
    assert url.query == (("sslmode", "disable"), ("options", "-cx=1"), ("application_name", "a b"))
    changed = url.with_query({"options": "-csearch_path=s,public", "connect_timeout": "3"})
    assert changed.query == (
        ("sslmode", "disable"),
        ("options", "-csearch_path=s,public"),
        ("application_name", "a b"),
        ("connect_timeout", "3"),
    )
    info = conninfo_to_dict(str(changed))
    assert (info["options"], info["application_name"]) == ("-csearch_path=s,public", "a b")
    assert info["connect_timeout"] == "3"


def test_a_schema_target_for_sqlalchemy_keeps_its_query_and_normalizes_postgres() -> None:
    target = Target("postgres://u:p%40ss@[::1]:5433/db?sslmode=disable", schema="tl_s1")
    sa = make_url(target.sqlalchemy_url("psycopg"))
    assert (sa.drivername, sa.host, sa.password, sa.database) == ("postgresql+psycopg", "::1", "p@ss", "db")
    assert dict(sa.query) == {"sslmode": "disable", "options": "-csearch_path=tl_s1,public"}


def test_mysql_urls_switch_driver_without_touching_the_rest() -> None:
    from testlane.databases.mariadb.testdb import MysqlTestDatabase

    url = "mysql://root:a%2Fb@127.0.0.1:3307/tl_x"
    assert (
        MysqlTestDatabase("tl_x", url, server=None).sqlalchemy_url() == "mysql+pymysql://root:a%2Fb@127.0.0.1:3307/tl_x"
    )


def test_a_scheme_in_capitals_is_read() -> None:
    assert ServiceUrl.parse("PostgreSQL://u@h/db").scheme == "postgresql"


def test_the_password_never_shows_in_repr_and_bad_urls_say_why_without_it() -> None:
    url = ServiceUrl.parse("postgresql://u:s3cret@h/db")
    assert "s3cret" not in repr(url)
    for bad in ("postgresql://u:s3cret@h:notaport/db", "u:s3cret@h/db", "postgresql://u:s3cret@[::1/db"):
        with pytest.raises(ValueError) as info:
            ServiceUrl.parse(bad)
        assert "s3cret" not in str(info.value)
