"""The other backends on real servers: existing servers by URL (this machine's PostgreSQL, MariaDB and
Redis), MariaDB from local binaries, Postgres in a Podman container, and what `auto` picks."""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest

from testlane.core.config import load_settings
from testlane.core.errors import UnreachableError
from testlane.core.runtime import RunContext
from testlane.databases.leftovers import find_leftovers
from testlane.services.backends import choose_backend
from testlane.services.registry import Registry
from testlane.services.stack import ServiceStack
from tests.helpers import clean_env, leftovers, run_cli, server_processes

SYSTEM_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
SYSTEM_MARIADB = "mysql://root@127.0.0.1:3306/"
SYSTEM_REDIS = "redis://127.0.0.1:6379/0"
IMAGE = "localhost/testlane-postgres:15"


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


needs_system_services = pytest.mark.skipif(
    not all(_listening(p) for p in (5432, 3306, 6379)), reason="this machine's PostgreSQL/MariaDB/Redis are not running"
)


@functools.cache
def podman_unavailable() -> str | None:
    """Why the container tests cannot run here, or None when they can (checked once, by running one)."""
    from testlane.services.container import detect_runtime

    if shutil.which("podman") is None:
        return "podman is not installed (apt-get install -y podman runc)"
    proc = subprocess.run(["podman", "image", "exists", IMAGE], capture_output=True, check=False)
    if proc.returncode != 0:
        return f"the image {IMAGE} is not built (scripts/build-local-images.sh; public registries are unreachable)"
    runtime = detect_runtime(load_settings(environ={"TESTLANE_CONTAINER_CLI": "podman"}))
    proc = runtime.run("run", "--rm", *runtime.run_args, "--entrypoint", "/bin/true", IMAGE, timeout=120)
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        return f"podman cannot run a container here ({runtime.describe()}): {tail}"
    return None


def needs_podman() -> None:
    reason = podman_unavailable()
    if reason:
        pytest.skip(reason)


def settings(data_dir: Path, **overrides: str) -> object:
    return load_settings(environ={}, overrides={"data_dir": str(data_dir), **overrides})


@needs_system_services
def test_existing_servers_by_url_are_attached_and_left_running(data_dir: Path) -> None:
    s = settings(
        data_dir,
        backend="url",
        **{"postgres.url": SYSTEM_PG, "valkey.url": SYSTEM_REDIS, "mariadb.url": SYSTEM_MARIADB},
    )
    ctx = RunContext.from_settings(s, owner=os.getpid())
    with ServiceStack(s, ctx) as stack:
        stack.start(["postgres", "valkey", "mariadb"])
        assert {n: srv.instance.backend for n, srv in stack.servers.items()} == dict.fromkeys(stack.servers, "url")
        assert stack.servers["postgres"].version.startswith("15")
        env = stack.env()
        assert env["TESTLANE_POSTGRES_URL"] == SYSTEM_PG
        assert env["TESTLANE_REDIS_URL"] == SYSTEM_REDIS
        assert env["TESTLANE_MARIADB_URL"].startswith("mysql://root@127.0.0.1:3306")
        assert len(Registry(ctx).instances(ctx.run_id)) == 3
    # nothing was stopped: the servers are not ours
    with psycopg.connect(SYSTEM_PG) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert Registry(ctx).instances(ctx.run_id) == []
    assert leftovers(data_dir) == []


def test_an_unreachable_url_is_one_clear_error(data_dir: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    s = settings(
        data_dir,
        **{
            "postgres.backend": "url",
            "postgres.url": f"postgresql://postgres@127.0.0.1:{port}/x",
            "start_timeout": "1",
        },
    )
    with pytest.raises(UnreachableError) as info, ServiceStack(s, RunContext.from_settings(s, owner=os.getpid())) as st:
        st.start(["postgres"])
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "check that it runs" in str(info.value)
    assert Registry(RunContext.from_settings(s)).instances() == []


def test_an_unreachable_url_fails_testlane_run_with_exit_3(project: Path, data_dir: Path) -> None:
    env = clean_env(
        {
            "TESTLANE_DATA_DIR": str(data_dir),
            "TESTLANE_POSTGRES_SERVER_URL": "postgresql://x@127.0.0.1:9/x",
            "TESTLANE_START_TIMEOUT": "1",
        }
    )
    result = run_cli(["run", "--postgres-backend", "url"], cwd=project, env=env)
    assert result.returncode == 3
    assert "did not answer" in result.stderr
    assert "Traceback" not in result.stderr


@needs_system_services
def test_isolation_on_an_existing_server_leaves_no_clones(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, data_dir: Path
) -> None:
    from testlane.cli.run import RUN_SCOPED_ENV

    for key in (*RUN_SCOPED_ENV, "PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("TESTLANE_IT", "1")
    monkeypatch.setenv("TESTLANE_DATA_DIR", str(data_dir))
    pytester.makefile(
        ".toml",
        pyproject=textwrap.dedent(f"""
        [project]
        name = "inner"
        version = "0"
        [tool.testlane]
        services = ["postgres", "valkey"]
        backend = "url"
        [tool.testlane.postgres]
        url = "{SYSTEM_PG}"
        [tool.testlane.valkey]
        url = "{SYSTEM_REDIS}"
        [tool.testlane.db]
        migrations = "migrations"
        [tool.pytest.ini_options]
        asyncio_default_fixture_loop_scope = "function"
        """),
    )
    (pytester.path / "migrations").mkdir()
    (pytester.path / "migrations" / "001.sql").write_text("CREATE TABLE items (id serial PRIMARY KEY, name text);")
    pytester.makepyfile(
        test_url_it="""
        import pytest

        @pytest.mark.parametrize("n", range(4))
        def test_private(pg_conn, redis_client, n):
            assert pg_conn.execute("SELECT count(*) FROM items").fetchone() == (0,)
            pg_conn.execute("INSERT INTO items (name) VALUES ('x')")
            pg_conn.commit()
            assert redis_client.dbsize() == 0
            redis_client.set("k", n)

        @pytest.mark.isolation("transaction")
        def test_rolled_back(pg_conn):
            pg_conn.execute("INSERT INTO items (name) VALUES ('y')")
            pg_conn.commit()
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", timeout=300).assert_outcomes(passed=5)
    assert dead_owned_leftovers() == [], "the session left clones on the existing server"


def dead_owned_leftovers() -> list[str]:
    """testlane databases on the shared server whose owner has exited.

    Other suites may be running against the same server: their databases have live owners and are not
    ours to judge. The inner run reaped older dead leftovers when it started, so what is left with a
    dead owner was left by the run under test.
    """
    with psycopg.connect(SYSTEM_PG, autocommit=True) as admin:
        return [lo.name for lo in find_leftovers(admin, max_age=10**9) if lo.reason is not None]


@needs_system_services
def test_leftovers_of_dead_runs_are_reaped_and_nothing_else(project: Path, data_dir: Path) -> None:
    from psycopg import sql

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    comments = {
        "tl_deadbeef_main_1": f"testlane run=deadbeef host={host} pid={dead.pid} ctime=1.00 created=1700000000",
        "tl_0a0a0a0a_main_1": f"testlane run=0a0a0a0a host={host} pid={os.getpid()} ctime=None created=9999999999",
        "tl_0b0b0b0b_main_1": "",  # not marked by testlane: never guessed at
    }
    with psycopg.connect(SYSTEM_PG, autocommit=True) as admin:
        for name, comment in comments.items():
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            if comment:
                admin.execute(
                    sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(comment))
                )
    try:
        with psycopg.connect(SYSTEM_PG, autocommit=True) as admin:
            verdicts = {lo.name: lo.reason for lo in find_leftovers(admin, max_age=24 * 3600) if lo.name in comments}
        assert verdicts["tl_deadbeef_main_1"] == f"its owner (pid {dead.pid} on this host) is gone"
        assert verdicts["tl_0a0a0a0a_main_1"] is None  # owner alive (the ctime in the comment is not checked here)
        assert verdicts["tl_0b0b0b0b_main_1"] is None
        env = clean_env(
            {
                "TESTLANE_DATA_DIR": str(data_dir),
                "TESTLANE_POSTGRES_SERVER_URL": SYSTEM_PG,
                "TESTLANE_POSTGRES_BACKEND": "url",
            }
        )
        result = run_cli(["reap"], cwd=project, env=env)
        assert result.returncode == 0, result.stderr
        assert "dropped database tl_deadbeef_main_1" in result.stderr
        with psycopg.connect(SYSTEM_PG) as conn:
            left = {r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'tl\\_0%'")}
        assert left == {"tl_0a0a0a0a_main_1", "tl_0b0b0b0b_main_1"}
    finally:
        with psycopg.connect(SYSTEM_PG, autocommit=True) as admin:
            for name in comments:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def test_auto_prefers_a_configured_url_then_embedded_then_local(data_dir: Path) -> None:
    assert choose_backend("postgres", settings(data_dir)).backend == "embedded"
    with_url = settings(data_dir, **{"postgres.url": SYSTEM_PG})
    choice = choose_backend("postgres", with_url)
    assert (choice.backend, choice.reason.startswith("auto: postgres.url is configured")) == ("url", True)
    assert choose_backend("mariadb", settings(data_dir)).backend == "local"
    forced = choose_backend("valkey", settings(data_dir, backend="container", **{"valkey.backend": "local"}))
    assert (forced.backend, forced.reason) == ("local", 'valkey.backend = "local"')


def test_mariadb_from_local_binaries_start_query_stop(data_dir: Path) -> None:
    s = settings(data_dir, **{"mariadb.backend": "local"})
    with ServiceStack(s, RunContext.from_settings(s, owner=os.getpid())) as stack:
        stack.start(["mariadb"])
        server = stack.servers["mariadb"]
        conn = server.connect()  # type: ignore[attr-defined]
        with conn.cursor() as cur:
            cur.execute("SELECT @@innodb_flush_log_at_trx_commit, @@log_bin, @@bind_address")
            assert cur.fetchone() == (0, 0, "127.0.0.1")
        conn.close()
        pid = server.pid
    assert server_processes(data_dir) == []
    assert pid is not None and leftovers(data_dir) == []


def test_postgres_in_a_container_start_query_stop_and_reap(data_dir: Path, project: Path) -> None:
    needs_podman()
    s = settings(data_dir, **{"postgres.backend": "container", "postgres.image": IMAGE})
    ctx = RunContext.from_settings(s, owner=os.getpid())
    with ServiceStack(s, ctx) as stack:
        stack.start(["postgres"])
        server = stack.servers["postgres"]
        name = server.instance.container
        assert name == f"testlane-postgres-{ctx.run_id}"
        with server.connect() as conn:  # type: ignore[attr-defined]
            assert conn.execute("SHOW fsync").fetchone() == ("off",)
        # A random password per run, required on TCP (no trust), carried by the URL.
        password = server.instance.password
        assert password and f":{password}@" in server.url
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(
                host="127.0.0.1", port=server.port, user="postgres", dbname="postgres", connect_timeout=10
            ).close()
        labels = subprocess.run(
            [
                "podman",
                "--cgroup-manager",
                "cgroupfs",
                "inspect",
                name,
                "--format",
                '{{index .Config.Labels "testlane.run"}}',
            ],
            capture_output=True,
            text=True,
        ).stdout
        assert labels.strip() == ctx.run_id
    assert subprocess.run(["podman", "container", "exists", name], check=False).returncode == 1

    # A run whose owner was SIGKILLed leaves its container: the next reap removes it, by label.
    script = textwrap.dedent(f"""
        import os, sys
        from testlane.core.config import load_settings
        from testlane.core.runtime import RunContext
        from testlane.core.waiting import wait_until
        from testlane.services.stack import ServiceStack
        s = load_settings(environ={{}}, overrides={{"data_dir": "{data_dir}", "postgres.backend": "container",
                                                   "postgres.image": "{IMAGE}"}})
        st = ServiceStack(s, RunContext.from_settings(s, owner=os.getpid()))
        st.start(["postgres"])
        print(st.servers["postgres"].instance.container, flush=True)
        wait_until(lambda: False, timeout=600, what="being killed")
        """)
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        orphan = (owner.stdout.readline() if owner.stdout else "").strip()
        assert orphan.startswith("testlane-postgres-")
        owner.kill()
        owner.wait()
        assert subprocess.run(["podman", "container", "exists", orphan], check=False).returncode == 0
        result = run_cli(["reap"], cwd=project, env=clean_env({"TESTLANE_DATA_DIR": str(data_dir)}))
        assert result.returncode == 0, result.stderr
        assert subprocess.run(["podman", "container", "exists", orphan], check=False).returncode == 1
    finally:
        if owner.poll() is None:
            owner.kill()
    assert leftovers(data_dir) == []


@needs_system_services
def test_guard_accepts_a_foreign_server_only_when_told(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from testlane.core.errors import ConfigError, UnsafeDatabaseError
    from testlane.databases.guard import resolve_mariadb, resolve_postgres

    monkeypatch.setenv("TESTLANE_DATA_DIR", str(tmp_path / "data"))  # an empty registry: nothing is known
    for resolve, url in ((resolve_postgres, SYSTEM_PG), (resolve_mariadb, SYSTEM_MARIADB)):
        with pytest.raises(UnsafeDatabaseError, match="server testlane knows"):
            resolve(url)
        server = resolve(url, allow_unmanaged=True)
        assert server.instance.backend == "url"
        assert server.instance.port in (5432, 3306)
        assert server.instance.version[:1].isdigit()
    with pytest.raises(ConfigError, match="does not look like a postgres URL"):
        resolve_postgres(SYSTEM_MARIADB, allow_unmanaged=True)
    with pytest.raises(TypeError, match="PostgresServer"):
        resolve_postgres(42)
