"""The unit lane's network guard reads libpq as libpq does (issue 14, seen 5): ``PGHOST``/``PGPORT``, service
files, socket directories, and psycopg2 as well as psycopg.

Each inner project opted in (``[tool.testlane]``) and runs plain ``pytest``: its tests are in the unit lane.
A TCP listener stands where the connection would go, so a guard that let it through would be seen there."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.helpers import plain_project, run_inner

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("libpq_free_env")]

LIBPQ_VARIABLES = ("PGHOST", "PGPORT", "PGHOSTADDR", "PGSERVICE", "PGSERVICEFILE", "PGSYSCONFDIR", "PGDATABASE")


@pytest.fixture
def libpq_free_env(plain_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in LIBPQ_VARIABLES:
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.create_server(("127.0.0.1", 0))
    sock.settimeout(0)
    yield sock
    sock.close()


def never_reached(sock: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        sock.accept()


BLOCKED = "tried to connect to 127.0.0.1:{port} (PostgreSQL, via libpq) from the unit lane"


def test_a_connection_configured_by_pghost_and_pgport_is_reported_where_it_goes(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, listener: socket.socket
) -> None:
    plain_project(pytester)
    port = listener.getsockname()[1]
    monkeypatch.setenv("PGHOST", "127.0.0.1")
    monkeypatch.setenv("PGPORT", str(port))
    pytester.makepyfile(
        test_env="import psycopg\n\n"
        "def test_env_only():\n    psycopg.connect('dbname=app user=app', connect_timeout=2)\n\n"
        "def test_async_env_only():\n    import asyncio\n"
        "    asyncio.run(psycopg.AsyncConnection.connect(dbname='app', connect_timeout=2))\n"
    )
    result = run_inner(pytester, "-rf")
    result.assert_outcomes(failed=2)
    out = result.stdout.str()
    assert "test_env.py::test_env_only " + BLOCKED.format(port=port) in out
    assert "test_env.py::test_async_env_only " + BLOCKED.format(port=port) in out
    assert "localhost:5432" not in out
    never_reached(listener)


SERVICE_SUITE = """
import psycopg

def test_pgservice(monkeypatch):
    monkeypatch.setenv("PGSERVICE", "from_env")
    psycopg.connect("dbname=app", connect_timeout=2)

def test_service_in_the_conninfo():
    psycopg.connect("service=named dbname=app", connect_timeout=2)

def test_the_conninfo_wins_over_the_service(monkeypatch):
    psycopg.connect("service=named port={explicit}", connect_timeout=2)

def test_the_service_wins_over_pghost(monkeypatch):
    monkeypatch.setenv("PGHOST", "10.255.255.1")
    psycopg.connect("service=named", connect_timeout=2)

def test_the_system_service_file(monkeypatch):
    monkeypatch.setenv("PGSYSCONFDIR", "{sysconf}")
    psycopg.connect("service=system_only", connect_timeout=2)
"""


def test_service_files_are_resolved_as_libpq_resolves_them(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, listener: socket.socket
) -> None:
    plain_project(pytester)
    port = listener.getsockname()[1]
    other = socket.create_server(("127.0.0.1", 0))
    other.settimeout(0)
    explicit = other.getsockname()[1]
    services = f"# the project's services\n[from_env]\nhost=127.0.0.1\nport={port}\n\n[named]\nhost=127.0.0.1\n"
    services += f"port={port}\n"
    (pytester.path / "pg_service.conf").write_text(services)
    (pytester.path / "sysconf").mkdir()
    (pytester.path / "sysconf" / "pg_service.conf").write_text(f"[system_only]\nhost=127.0.0.1\nport={port}\n")
    monkeypatch.setenv("PGSERVICEFILE", str(pytester.path / "pg_service.conf"))
    pytester.makepyfile(test_services=SERVICE_SUITE.format(explicit=explicit, sysconf=pytester.path / "sysconf"))
    try:
        result = run_inner(pytester, "-rf")
        result.assert_outcomes(failed=5)
        out = result.stdout.str()
        for name in ("test_pgservice", "test_service_in_the_conninfo", "test_the_service_wins_over_pghost"):
            assert f"test_services.py::{name} " + BLOCKED.format(port=port) in out, name
        assert "test_services.py::test_the_system_service_file " + BLOCKED.format(port=port) in out
        assert "test_services.py::test_the_conninfo_wins_over_the_service " + BLOCKED.format(port=explicit) in out
        never_reached(listener)
        never_reached(other)
    finally:
        other.close()


UNIX_SUITE = """
import os, shutil, socket, tempfile, threading
import psycopg
import pytest

def test_a_socket_directory_in_pghost_is_allowed(monkeypatch):
    directory = tempfile.mkdtemp(dir="/tmp", prefix="tl-sock-")
    server = socket.socket(socket.AF_UNIX)
    server.bind(os.path.join(directory, ".s.PGSQL.5999"))
    server.listen()
    server.settimeout(10)
    accepted = []

    def accept_one():
        conn, _ = server.accept()
        accepted.append(conn)
        conn.close()  # not a PostgreSQL server: libpq reports its own error

    thread = threading.Thread(target=accept_one)
    thread.start()
    monkeypatch.setenv("PGHOST", directory)
    monkeypatch.setenv("PGPORT", "5999")
    try:
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect("dbname=app", connect_timeout=5)
    finally:
        thread.join(10)
        server.close()
        shutil.rmtree(directory, ignore_errors=True)
    assert len(accepted) == 1  # the connection reached the socket: the guard let it through
"""


def test_a_unix_socket_given_by_pghost_is_allowed_in_the_unit_lane(pytester: pytest.Pytester) -> None:
    plain_project(pytester)
    pytester.makepyfile(test_unix=UNIX_SUITE)
    result = run_inner(pytester, "-rf")
    result.assert_outcomes(passed=1)
    assert "NetworkBlockedError" not in result.stdout.str()


PSYCOPG2_SUITE = """
import psycopg2

def test_psycopg2_dsn():
    psycopg2.connect("host=127.0.0.1 port={port} dbname=app connect_timeout=2")

def test_psycopg2_keywords():
    psycopg2.connect(host="127.0.0.1", port={port}, dbname="app", connect_timeout=2)

def test_psycopg2_pghost_pgport(monkeypatch):
    monkeypatch.setenv("PGHOST", "127.0.0.1")
    monkeypatch.setenv("PGPORT", "{port}")
    psycopg2.connect(dbname="app", connect_timeout=2)
"""


def test_psycopg2_over_tcp_is_blocked_in_the_unit_lane(pytester: pytest.Pytester, listener: socket.socket) -> None:
    plain_project(pytester)
    port = listener.getsockname()[1]
    pytester.makepyfile(test_pg2=PSYCOPG2_SUITE.format(port=port))
    result = run_inner(pytester, "-rf")
    result.assert_outcomes(failed=3)
    out = result.stdout.str()
    for name in ("test_psycopg2_dsn", "test_psycopg2_keywords", "test_psycopg2_pghost_pgport"):
        assert f"test_pg2.py::{name} " + BLOCKED.format(port=port) in out, name
    never_reached(listener)
