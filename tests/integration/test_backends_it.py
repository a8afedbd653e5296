"""The other backends on real servers: existing servers by URL (this machine's PostgreSQL, MariaDB and
Redis), MariaDB from local binaries, Postgres in a Podman container, and what `auto` picks."""

from __future__ import annotations

import functools
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import psycopg
import pytest

from testlane.core.config import load_settings
from testlane.core.errors import UnreachableError
from testlane.core.runtime import RunContext
from testlane.databases.leftovers import find_leftovers
from testlane.services.backends import choose_backend
from testlane.services.external import REFUSED_GRACE
from testlane.services.registry import Registry
from testlane.services.stack import ServiceStack
from tests.helpers import clean_env, leftovers, owner_decoys, run_cli, server_processes

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


def _free_port() -> int:
    """A port nothing listens on (bound and closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _attach_error(data_dir: Path, port: int, **extra: str) -> str:
    """The UnreachableError of attaching to ``postgresql://...@127.0.0.1:<port>`` (url backend); nothing recorded."""
    s = settings(
        data_dir, **{"postgres.backend": "url", "postgres.url": f"postgresql://postgres@127.0.0.1:{port}/x", **extra}
    )
    with pytest.raises(UnreachableError) as info, ServiceStack(s, RunContext.from_settings(s, owner=os.getpid())) as st:
        st.start(["postgres"])
    assert Registry(RunContext.from_settings(s)).instances() == []
    return str(info.value)


def test_an_unreachable_url_is_one_clear_error(data_dir: Path) -> None:
    port = _free_port()
    error = _attach_error(data_dir, port, start_timeout="1")
    assert f"127.0.0.1:{port}" in error
    assert "check that it runs" in error


def test_a_url_nothing_listens_on_fails_without_waiting_the_start_timeout(data_dir: Path) -> None:
    """A refused connection that lasts means nothing listens there (a wrong port, a stopped server): the error
    says so after REFUSED_GRACE, not after the whole wait (it took 10 s, 25 s under xdist)."""
    port = _free_port()
    error = _attach_error(data_dir, port)
    assert f"nothing listens on 127.0.0.1:{port} (connection refused for {REFUSED_GRACE:g} s)" in error


def test_a_url_whose_port_accepts_but_never_answers_is_waited_for(data_dir: Path, taken_port: int) -> None:
    """Something listens (a server starting up, a container's published port): testlane waits for an answer up
    to the start timeout, and the error is the driver's, not "nothing listens"."""
    error = _attach_error(data_dir, taken_port, start_timeout="2")
    assert "did not answer" in error and "nothing listens" not in error


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


def _inner_url_project(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, data_dir: Path, db_settings: str
) -> str:
    """An inner project on this machine's Postgres (url backend) that pytest runs as one testlane run
    (no `testlane run` around it); returns that run's id. ``db_settings``: its `[tool.testlane.db]` lines."""
    from testlane.cli.run import RUN_SCOPED_ENV
    from testlane.core.runtime import new_run_id

    for key in (*RUN_SCOPED_ENV, "PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT"):
        monkeypatch.delenv(key, raising=False)
    run_id = new_run_id()
    monkeypatch.setenv("TESTLANE_RUN_ID", run_id)
    monkeypatch.setenv("TESTLANE_IT", "1")
    monkeypatch.setenv("TESTLANE_DATA_DIR", str(data_dir))
    pyproject = (
        '[project]\nname = "inner"\nversion = "0"\n[tool.testlane]\nservices = ["postgres"]\n'
        f'[tool.testlane.postgres]\nbackend = "url"\nurl = "{SYSTEM_PG}"\n[tool.testlane.db]\n{db_settings}\n'
    )
    pytester.makefile(".toml", pyproject=pyproject)
    return run_id


@needs_system_services
def test_a_passing_xdist_run_leaves_no_database_of_its_own_on_an_existing_server(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, data_dir: Path
) -> None:
    """xdist ends a worker 5 s after it reported the end of its session (execnet sends it SIGINT, then
    exits it); a worker slow to tear down (CPU load, a slow plugin: here a conftest) used to lose the
    clones its pool had not dropped yet. Nothing carrying this run's owner record may be left."""
    run_id = _inner_url_project(pytester, monkeypatch, data_dir, 'migrations = "migrations"\npool_size = 3')
    (pytester.path / "migrations").mkdir()
    (pytester.path / "migrations" / "001.sql").write_text("CREATE TABLE items (id serial PRIMARY KEY, name text);")
    pytester.makeconftest(
        """
        import os, time
        import pytest

        @pytest.hookimpl(tryfirst=True)
        def pytest_unconfigure(config):
            if os.environ.get("PYTEST_XDIST_WORKER"):
                time.sleep(7)  # a worker whose teardown outlasts xdist's grace (as under CPU load)
        """
    )
    pytester.makepyfile(
        test_url_it="""
        import pytest

        @pytest.mark.parametrize("n", range(6))
        def test_private(pg_conn, n):
            pg_conn.execute("INSERT INTO items (name) VALUES ('x')")
            pg_conn.commit()

        @pytest.mark.isolation("transaction")
        def test_rolled_back(pg_conn):
            pg_conn.execute("INSERT INTO items (name) VALUES ('y')")

        def test_orphans(postgres):  # as a worker killed before it dropped them leaves them
            from psycopg import sql
            from testlane.databases.leftovers import mark_owner, owner_comment

            run = postgres.instance.run_id
            with postgres.connect() as admin:
                for name in (f"tl_{run}_orphan_1", f"tl_{run}_decoy_1"):
                    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                mark_owner(admin, f"tl_{run}_orphan_1", postgres)
                admin.execute(
                    sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                        sql.Identifier(f"tl_{run}_decoy_1"),
                        sql.Literal("copy of " + owner_comment(postgres, f"tl_{run}_decoy_1")),
                    )
                )
        """
    )
    try:
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", timeout=300)
        result.assert_outcomes(passed=8)
        # The server holds other databases: said once, by the controller, not by each worker.
        assert result.stdout.str().count("holds databases that are not testlane's") == 1, result.stdout.str()
        with psycopg.connect(SYSTEM_PG) as conn:
            left = [
                r[0]
                for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (f"tl\\_{run_id}\\_%",))
            ]
        assert left == [f"tl_{run_id}_decoy_1"], f"the run left its databases on the existing server: {left}"
    finally:
        _drop_databases([f"tl_{run_id}_decoy_1"])


@needs_system_services
def test_a_failed_tests_kept_database_survives_the_end_of_run_sweep(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, data_dir: Path
) -> None:
    run_id = _inner_url_project(pytester, monkeypatch, data_dir, "keep_failed = true\npool_size = 1")
    pytester.makepyfile(
        test_kept_it="""
        def test_passes(pg_conn):
            pass

        def test_fails(pg_conn):
            pg_conn.execute("CREATE TABLE evidence (id int)")
            pg_conn.commit()
            assert False
        """
    )
    try:
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=300)
        result.assert_outcomes(passed=1, failed=1)
        with psycopg.connect(SYSTEM_PG) as conn:
            left = [
                r[0]
                for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (f"tl\\_{run_id}\\_%",))
            ]
        assert len(left) == 1, left  # the failed test's, kept for inspection; nothing else
        assert left[0] in result.stdout.str()
    finally:
        with psycopg.connect(SYSTEM_PG) as conn:
            names = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (f"tl\\_{run_id}\\_%",))
            _drop_databases([r[0] for r in names])


@needs_system_services
def test_testlane_run_says_once_that_an_existing_server_holds_other_databases(project: Path, data_dir: Path) -> None:
    import uuid

    foreign = f"app_dev_{uuid.uuid4().hex[:8]}"  # not a tl_ name: someone's database, to testlane
    (project / "tests").mkdir()
    (project / "tests" / "test_db_it.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.parametrize('n', range(4))\n"
        "def test_db(pg_conn, n):\n"
        "    assert pg_conn.execute('SELECT 1').fetchone() == (1,)\n\n"
        "def test_orphan(postgres):  # as a worker killed before it dropped it leaves it\n"
        "    from testlane.databases.leftovers import mark_owner\n"
        "    name = f'tl_{postgres.instance.run_id}_orphan_1'\n"
        "    with postgres.connect() as admin:\n"
        "        admin.execute(f'CREATE DATABASE {name}')\n"
        "        mark_owner(admin, name, postgres)\n"
    )
    env = clean_env(
        {
            "TESTLANE_DATA_DIR": str(data_dir),
            "TESTLANE_POSTGRES_SERVER_URL": SYSTEM_PG,
            "TESTLANE_POSTGRES_BACKEND": "url",
        }
    )
    with psycopg.connect(SYSTEM_PG, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{foreign}"')
    try:
        result = run_cli(["run", "--", "-n", "2", "-p", "no:cacheprovider", "tests"], cwd=project, env=env, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        output = result.stdout + result.stderr
        assert output.count("holds databases that are not testlane's") == 1, output
        assert "testlane only creates and drops its own tl_ databases there" in output
        assert "127.0.0.1:5432" in output
        match = re.search(r"run ([0-9a-f]{8}):", output)
        assert match is not None, output
        with psycopg.connect(SYSTEM_PG) as conn:
            left = conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s", (f"tl\\_{match[1]}\\_%",)
            ).fetchall()
        assert left == [], "testlane run left databases of its run on the existing server"
    finally:
        _drop_databases([foreign])


class _FlushWatch(threading.Thread):
    """Every FLUSHDB/FLUSHALL the server runs while watched (MONITOR): db, and whether a script sent it.

    testlane's leases flush only from their Lua scripts; a plain FLUSHDB on this shared server comes
    from someone else (another suite, an older testlane), which a decoy cannot be protected from."""

    def __init__(self, url: str) -> None:
        import redis

        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(url, socket_timeout=None)  # MONITOR waits for as long as it must
        self.flushes: list[tuple[int, str]] = []
        self.seen: set[str] = set()
        self.stopping = False

    def run(self) -> None:
        with self.client.monitor() as monitor:
            while not self.stopping:
                cmd = monitor.next_command()
                words = cmd["command"].split()
                if words and words[0].upper() in ("FLUSHDB", "FLUSHALL"):
                    self.flushes.append((cmd["db"], cmd["client_type"]))
                elif words[:1] == ["ECHO"]:
                    self.seen.add(words[-1])

    def __enter__(self) -> _FlushWatch:
        import uuid

        from testlane.core.waiting import wait_until

        self.start()
        token = uuid.uuid4().hex
        wait_until(lambda: self.client.echo(token) and token in self.seen, timeout=10, what="MONITOR to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping = True
        self.client.echo("stop")  # wakes the monitor up
        self.join(timeout=10)
        self.client.close()


@needs_system_services
def test_redis_leases_on_an_existing_server_never_touch_its_data(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, data_dir: Path
) -> None:
    """This machine's Redis is someone's: decoy keys go into some of its databases, a 6-test run leases
    databases there, and no decoy database is leased or flushed by testlane."""
    import uuid

    import redis

    from testlane.cli.run import RUN_SCOPED_ENV

    for key in (*RUN_SCOPED_ENV, "PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("TESTLANE_IT", "1")
    monkeypatch.setenv("TESTLANE_DATA_DIR", str(data_dir))
    clients = {db: redis.Redis(host="127.0.0.1", port=6379, db=db) for db in range(16)}
    decoy_dbs = [db for db in range(1, 15) if db % 2 == 1 or db in (2, 4)]  # 9 of the 14 it may lease
    decoy = f"testlane-decoy-{uuid.uuid4().hex}"
    try:
        for db in decoy_dbs:
            clients[db].set(decoy, f"data of db {db}")
        pytester.makefile(
            ".toml",
            pyproject=textwrap.dedent(f"""
            [project]
            name = "inner"
            version = "0"
            [tool.testlane]
            services = ["valkey"]
            [tool.testlane.valkey]
            backend = "url"
            url = "{SYSTEM_REDIS}"
            """),
        )
        pytester.makepyfile(
            test_redis_it=f"""
            import pytest

            @pytest.mark.parametrize("n", range(6))
            def test_private(redis_db, redis_client, n):
                assert redis_db.db not in {decoy_dbs!r}, "leased a database holding someone's data"
                assert redis_client.dbsize() == 0
                redis_client.set("k", n)
            """
        )
        with _FlushWatch(SYSTEM_REDIS) as watch:
            result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", timeout=300)
        result.assert_outcomes(passed=6)
        ours = sorted({db for db, kind in watch.flushes if kind == "lua"})
        assert ours and not set(ours) & set(decoy_dbs), f"testlane flushed {ours}; decoys in {decoy_dbs}"
        foreign = {db for db, kind in watch.flushes if kind != "lua"}  # other suites on this shared server
        lost = [db for db in decoy_dbs if clients[db].get(decoy) != f"data of db {db}".encode()]
        assert set(lost) <= foreign, f"decoys lost in {lost} with no foreign FLUSHDB there"
    finally:
        for db in decoy_dbs:
            clients[db].delete(decoy)
        for client in clients.values():
            client.close()


def dead_owned_leftovers() -> list[str]:
    """testlane databases on the shared server whose owner has exited.

    Other suites may be running against the same server: their databases have live owners and are not
    ours to judge. The inner run reaped older dead leftovers when it started, so what is left with a
    dead owner was left by the run under test.
    """
    with psycopg.connect(SYSTEM_PG, autocommit=True) as admin:
        return [lo.name for lo in find_leftovers(admin) if lo.reason is not None]


def _make_databases(databases: dict[str, str]) -> None:
    from psycopg import sql

    with psycopg.connect(SYSTEM_PG, autocommit=True) as admin:
        for name, comment in databases.items():
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            admin.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(comment)))


def _drop_databases(names: list[str]) -> None:
    from psycopg import sql

    with psycopg.connect(SYSTEM_PG, autocommit=True) as admin:
        for name in names:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def _existing(names: list[str]) -> set[str]:
    with psycopg.connect(SYSTEM_PG) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)", (names,)).fetchall()
    return {row[0] for row in rows}


@needs_system_services
def test_reap_drops_only_complete_owner_records_of_dead_owners_on_this_host(project: Path, data_dir: Path) -> None:
    reaped, decoys, other_host = owner_decoys("1")
    everything = {**reaped, **decoys, **other_host}
    _make_databases(everything)
    try:
        env = clean_env(
            {
                "TESTLANE_DATA_DIR": str(data_dir),
                "TESTLANE_POSTGRES_SERVER_URL": SYSTEM_PG,
                "TESTLANE_POSTGRES_BACKEND": "url",
            }
        )
        result = run_cli(["reap"], cwd=project, env=env)
        assert result.returncode == 0, result.stderr
        for name in reaped:
            assert f"dropped database {name}" in result.stderr
        assert _existing(list(everything)) == {*decoys, *other_host}, "a decoy was dropped"
        with psycopg.connect(SYSTEM_PG, autocommit=True) as admin:
            found = [lo for lo in find_leftovers(admin) if lo.name in everything]
        assert {lo.name for lo in found} == {*decoys, *other_host}
        assert [lo.name for lo in found if lo.reason] == []
        assert {lo.name for lo in found if lo.record} == set(other_host)  # the only complete records
        # Another host's records go only when asked for, by age; decoys never.
        result = run_cli(["reap", "--other-hosts-older-than", "1"], cwd=project, env=env)
        assert result.returncode == 0, result.stderr
        assert _existing(list(everything)) == set(decoys)
    finally:
        _drop_databases(list(everything))


@needs_system_services
def test_reap_says_why_it_could_not_drop_a_leftover(project: Path, data_dir: Path) -> None:
    """A leftover testlane may not drop (here: owned by another role) is named with the reason, never
    'nothing to reap'."""
    import secrets

    from psycopg import sql

    reaped, _decoys, _other = owner_decoys("w")
    name, comment = next(iter(reaped.items()))
    role = f"tl_reaper_{secrets.token_hex(3)}"
    _make_databases({name: comment})  # owned by postgres: the role below cannot drop it
    with psycopg.connect(SYSTEM_PG, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        env = clean_env(
            {
                "TESTLANE_DATA_DIR": str(data_dir),
                "TESTLANE_POSTGRES_SERVER_URL": f"postgresql://{role}@127.0.0.1:5432/postgres",
                "TESTLANE_POSTGRES_BACKEND": "url",
            }
        )
        result = run_cli(["reap"], cwd=project, env=env)
        assert result.returncode == 0, result.stderr
        assert f"could not drop leftover database {name}" in result.stderr
        assert "must be owner" in result.stderr
        assert _existing([name]) == {name}
    finally:
        _drop_databases([name])
        with psycopg.connect(SYSTEM_PG, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


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
    from testlane.core.config import load_settings
    from testlane.core.errors import ConfigError, UnsafeDatabaseError
    from testlane.databases.guard import resolve_mariadb, resolve_postgres

    monkeypatch.setenv("TESTLANE_DATA_DIR", str(tmp_path / "data"))  # an empty registry: nothing is known
    settings = load_settings()
    for resolve, url in ((resolve_postgres, SYSTEM_PG), (resolve_mariadb, SYSTEM_MARIADB)):
        with pytest.raises(UnsafeDatabaseError, match="server testlane knows"):
            resolve(url, settings=settings)
        server = resolve(url, settings=settings, allow_unmanaged=True)
        assert server.instance.backend == "url"
        assert server.instance.port in (5432, 3306)
        assert server.instance.version[:1].isdigit()
    with pytest.raises(ConfigError, match="does not look like a postgres URL"):
        resolve_postgres(SYSTEM_MARIADB, settings=settings, allow_unmanaged=True)
    with pytest.raises(TypeError, match="PostgresServer"):
        resolve_postgres(42, settings=settings)
