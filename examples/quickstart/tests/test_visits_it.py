"""Integration tests: real PostgreSQL and real Valkey, started by testlane."""

import pytest
from visits import SCHEMA, cached_count, record_visit


@pytest.fixture
def conn(postgres):
    with postgres.connect() as connection:
        connection.execute(SCHEMA)
        connection.execute("TRUNCATE visits")
        yield connection


@pytest.fixture
def cache(valkey):
    client = valkey.client()
    client.flushdb()
    yield client
    client.close()


def test_services_are_real(postgres, valkey, conn, cache):
    version = conn.execute("SHOW server_version").fetchone()[0]
    info = cache.info("server")
    print(f"\n  PostgreSQL {version} at {postgres.url}")
    print(f"  {info.get('server_name', 'redis')} {info.get('valkey_version', info['redis_version'])} at {valkey.url}")
    if postgres.instance.backend != "url":  # testlane's own throwaway server, not an existing one
        assert conn.execute("SHOW fsync").fetchone()[0] == "off"


def test_visits_are_counted_and_cached(conn, cache):
    assert record_visit(conn, cache, "/home") == 1
    assert record_visit(conn, cache, "/home") == 2
    assert record_visit(conn, cache, "/about") == 1
    assert cached_count(cache, "/home") == 2
    rows = conn.execute("SELECT page, count(*) FROM visits GROUP BY page ORDER BY page").fetchall()
    assert rows == [("/about", 1), ("/home", 2)]
