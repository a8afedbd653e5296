"""The Postgres servers testlane starts are private to the run (issue 13).

* TCP needs the run's random password (scram-sha-256); every URL testlane hands out carries it.
* Another local user gets in neither over TCP nor over the socket, and reads no credential.
* The service user cannot change the cache a later run starts from.
* Staging directories left in the cache by killed processes are removed by the next start and by reap.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pwd
import shlex
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from testlane.core.errors import ConfigError
from testlane.core.runtime import RunContext, is_root
from testlane.core.waiting import wait_until
from testlane.databases.appdb import mapped_environment
from testlane.databases.snapshots import SnapshotCache
from testlane.databases.template import TemplateSpec
from testlane.services.postgres import PostgresEngine, PostgresServer
from testlane.services.registry import Registry
from testlane.services.stack import ServiceStack
from tests.helpers import clean_env, run_cli, server_processes

needs_root = pytest.mark.skipif(not is_root(), reason="needs root (a second local user, the service user)")
needs_system_python = pytest.mark.skipif(not os.path.exists("/usr/bin/python3"), reason="needs /usr/bin/python3")


def _context(settings) -> RunContext:  # type: ignore[no-untyped-def]
    ctx = RunContext.from_settings(settings, owner=os.getpid())
    ctx.ensure_dirs()
    return ctx


def _refused(**conninfo: object) -> str:
    """The error text of a connection attempt that must fail (fails the test if it succeeds)."""
    try:
        psycopg.connect(**conninfo, connect_timeout=5).close()  # type: ignore[call-overload]
    except psycopg.OperationalError as exc:
        return str(exc)
    raise AssertionError(f"connected without the run's password: {conninfo}")


# -- TCP needs the password; every URL carries it ----------------------------------------------------


def test_tcp_needs_the_runs_password_and_every_url_carries_it(settings_for, data_dir: Path) -> None:
    settings = settings_for(env={"DATABASE_URL": "{postgres.url}", "PGPASS": "{postgres.password}"})
    with ServiceStack(settings, _context(settings)) as stack:
        stack.start(["postgres"])
        server = stack.servers["postgres"]
        assert isinstance(server, PostgresServer)
        tcp = {"host": "127.0.0.1", "port": server.port, "user": "postgres", "dbname": "postgres"}
        assert "no password supplied" in _refused(**tcp)
        assert "password authentication failed" in _refused(**tcp, password="postgres")
        password = server.instance.password
        assert password and len(password) >= 32
        with psycopg.connect(**tcp, password=password) as conn:
            method = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'").fetchone()
            assert method is not None and str(method[0]).startswith("SCRAM-SHA-256$16:")
        # Every way a test or an app gets the server: the URL, dsn(), the TESTLANE_* variables,
        # the [tool.testlane.env] mapping.
        mapped = mapped_environment(settings, stack.servers, stack.context.run_id)
        env = stack.env()
        for url in (server.url, server.dsn("postgres"), env["TESTLANE_POSTGRES_URL"], mapped["DATABASE_URL"]):
            assert f":{password}@127.0.0.1:" in url
            with psycopg.connect(url) as conn:
                assert conn.execute("SELECT current_user, inet_server_addr()::text").fetchone() == (
                    "postgres",
                    "127.0.0.1/32",
                )
        assert mapped["PGPASS"] == env["TESTLANE_POSTGRES_PASSWORD"] == password
    assert server_processes(data_dir) == []


def test_services_env_prints_urls_that_connect(project: Path, data_dir: Path) -> None:
    env = clean_env({"TESTLANE_DATA_DIR": str(data_dir)})
    started = run_cli(["services", "start", "postgres"], cwd=project, env=env)
    assert started.returncode == 0, started.stderr
    try:
        printed = run_cli(["services", "env"], cwd=project, env=env)
        assert printed.returncode == 0, printed.stderr
        exported = dict(
            shlex.split(line.removeprefix("export "))[0].split("=", 1)
            for line in printed.stdout.splitlines()
            if line.startswith("export ")
        )
        url = exported["TESTLANE_POSTGRES_URL"]
        with psycopg.connect(url, connect_timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        bare = url.split("@", 1)[1]
        assert "no password supplied" in _refused(conninfo=f"postgresql://postgres@{bare}")
    finally:
        run_cli(["services", "stop"], cwd=project, env=env)


def test_the_verifier_is_what_postgres_computes_and_its_iterations_are_a_setting(settings_for) -> None:
    settings = settings_for(postgres__scram_iterations="3")
    with ServiceStack(settings, _context(settings)) as stack:
        stack.start(["postgres"])
        server = stack.servers["postgres"]
        assert isinstance(server, PostgresServer)
        with server.connect() as conn:  # over the private socket
            stored = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'").fetchone()
            assert stored is not None and str(stored[0]).startswith("SCRAM-SHA-256$3:")
            # libpq's own verifier for a password, with its salt, equals ours with that salt.
            conn.execute("SET scram_iterations = 3")
            theirs = conn.pgconn.encrypt_password(b"a password", b"postgres", b"scram-sha-256").decode()
        from testlane.services.postgres_auth import scram_verifier

        salt = base64.b64decode(theirs.split("$")[1].split(":")[1])
        assert scram_verifier("a password", iterations=3, salt=salt) == theirs
        with psycopg.connect(server.url) as conn:
            conn.execute("SELECT 1")
    out_of_range = r"postgres\.scram_iterations = '0' is out of range: it must be from 1 to 65536"
    with pytest.raises(ConfigError, match=out_of_range):
        settings_for(postgres__scram_iterations="0")  # declared with the setting (config.py), checked on loading


def test_roles_the_tests_create_log_in_with_their_password(settings_for) -> None:
    settings = settings_for()
    with ServiceStack(settings, _context(settings)) as stack:
        server = stack.start(["postgres"])["postgres"]
        assert isinstance(server, PostgresServer)
        with server.connect() as admin:
            admin.execute("CREATE ROLE app LOGIN PASSWORD 'app-secret'")
        with psycopg.connect(host="127.0.0.1", port=server.port, user="app", password="app-secret", dbname="postgres"):
            pass
        assert "password authentication failed" in _refused(
            host="127.0.0.1", port=server.port, user="app", password="wrong", dbname="postgres"
        )


# -- another local user ---------------------------------------------------------------------------


@contextlib.contextmanager
def local_user() -> Iterator[pwd.struct_passwd]:
    name = f"tl_hostile_a{uuid.uuid4().hex[:4]}"
    subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", name], check=True, capture_output=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)


HOSTILE_SCRIPT = r"""
import json, os, sys
import psycopg
port, socket_dir = int(sys.argv[1]), sys.argv[2]
paths = json.load(sys.stdin)  # every file there is: as if the names were known (run ids show in `ps`)
out = {"connected": [], "errors": [], "read": []}
attempts = {
    "tcp, no password": dict(host="127.0.0.1", port=port),
    "tcp, guessed password": dict(host="127.0.0.1", port=port, password="postgres"),
    "socket": dict(host=socket_dir, port=port),
}
for what, info in attempts.items():
    try:
        psycopg.connect(user="postgres", dbname="postgres", connect_timeout=5, **info).close()
        out["connected"].append(what)
    except psycopg.OperationalError as exc:
        out["errors"].append(f"{what}: {exc}")
for path in paths:
    try:
        with open(path, "rb") as fh:
            out["read"].append([path, fh.read().decode("latin-1")])
    except OSError:
        pass
print(json.dumps(out))
"""


@needs_root
@needs_system_python
def test_another_local_user_can_neither_connect_nor_read_a_credential(
    settings_for, data_dir: Path, cache_dir: Path
) -> None:
    settings = settings_for(cache_dir=str(cache_dir))
    with local_user() as hostile, ServiceStack(settings, _context(settings)) as stack:
        server = stack.start(["postgres"])["postgres"]
        stack.write_services_file()
        password = server.instance.password or "(no password)"
        roots = [data_dir, cache_dir, stack.context.state_dir]
        files = [os.path.join(d, f) for root in roots for d, _, names in os.walk(root) for f in names]
        assert any(f.endswith("services.json") for f in files) and any(f.endswith(".postgres.json") for f in files)
        # This interpreter lives under /root; the system's runs this environment's packages (psycopg).
        site = next(p for p in sys.path if p.endswith("site-packages"))
        proc = subprocess.run(
            ["/usr/bin/python3", "-c", HOSTILE_SCRIPT, str(server.port), str(server.instance.socket)],
            input=json.dumps(files),
            user=hostile.pw_uid,
            group=hostile.pw_gid,
            extra_groups=[],
            env={"PATH": os.environ.get("PATH", ""), "HOME": "/tmp", "PYTHONPATH": site},
            cwd="/tmp",
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        seen = json.loads(proc.stdout)
        assert seen["connected"] == [], seen["errors"]
        errors = "\n".join(seen["errors"])
        assert "no password supplied" in errors and "password authentication failed" in errors
        assert "Permission denied" in errors  # the socket directory is private to the run
        assert server.instance.password
        leaked = [path for path, text in seen["read"] if password in text]
        assert leaked == [], f"{hostile.pw_name} read the run's password in {leaked}"
        readable_cache = [path for path, _ in seen["read"] if path.startswith(str(cache_dir))]
        assert readable_cache == [], "the cache (pg_authid, configuration) is not readable by other users"
        # Nor on any command line (what `ps` shows everyone).
        for proc_ in psutil.process_iter(["cmdline"]):
            assert password not in " ".join(proc_.info.get("cmdline") or [])


# -- the cache cannot be changed by the service user ------------------------------------------------------

TAMPER = "work_mem = '77MB'"


def _append_as_server(server: PostgresServer, path: Path) -> str:
    """What a hostile server-side program (COPY ... TO PROGRAM, as the service user) gets appending to path."""
    command = f'echo "{TAMPER}" >> {path}'
    with server.connect() as conn:
        try:
            conn.execute(f"COPY (SELECT 1) TO PROGRAM '{command.replace(chr(39), chr(39) * 2)}'")
        except psycopg.Error as exc:
            return str(exc)
    return "appended"


@needs_root
def test_the_service_user_cannot_change_what_a_later_run_starts_from(settings_for, cache_dir: Path) -> None:
    settings = settings_for(cache_dir=str(cache_dir))
    context = _context(settings)
    engine = PostgresEngine(settings, context, Registry(context))
    base = engine.base_cluster().path
    snapshot = SnapshotCache(engine).ensure(TemplateSpec(extra_fingerprint=uuid.uuid4().hex))
    user = engine.user
    assert user is not None
    for cluster in (base, snapshot):
        st = cluster.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, user.gid, 0o750)
        conf = (cluster / "postgresql.conf").stat()
        assert (conf.st_uid, conf.st_mode & 0o777) == (0, 0o640)
    with engine.start("tamper") as server:
        assert isinstance(server, PostgresServer)
        for cluster in (base, snapshot):
            before = (cluster / "postgresql.conf").read_text()
            for target in (cluster / "postgresql.conf", cluster.parent / "added"):
                outcome = _append_as_server(server, target)
                assert "exited with exit code" in outcome, outcome
                assert f"{target}: Permission denied" in server.log_tail(50)  # the shell's own complaint
            assert (cluster / "postgresql.conf").read_text() == before
            assert not (cluster.parent / "added").exists()
    # Directly as the service user, too: nothing in the cache is writable by it.
    direct = subprocess.run(
        ["sh", "-c", f'echo "{TAMPER}" >> {base / "postgresql.conf"}'],
        user=user.uid,
        group=user.gid,
        extra_groups=[],
        capture_output=True,
        text=True,
        cwd="/",
    )
    assert direct.returncode != 0 and "Permission denied" in direct.stderr
    for source in (None, snapshot):
        with engine.start("later", data_source=source) as later:
            assert isinstance(later, PostgresServer)
            with later.connect() as conn:
                assert conn.execute("SHOW work_mem").fetchone() != ("77MB",)


@needs_root
def test_a_cache_entry_the_service_user_owns_is_not_used(settings_for, cache_dir: Path) -> None:
    settings = settings_for(cache_dir=str(cache_dir))
    context = _context(settings)
    engine = PostgresEngine(settings, context, Registry(context))
    cluster = engine.base_cluster().path
    user = engine.user
    assert user is not None
    # As an older testlane left it (or as anything but the invoking user made it), with a tampered setting.
    subprocess.run(["chown", "-R", f"{user.uid}:{user.gid}", str(cluster)], check=True)
    with open(cluster / "postgresql.conf", "a") as fh:
        fh.write(TAMPER + "\n")
    with engine.start("after") as server:
        assert isinstance(server, PostgresServer)
        with server.connect() as conn:
            assert conn.execute("SHOW work_mem").fetchone() != ("77MB",)
    assert cluster.stat().st_uid == 0, "the untrusted entry was rebuilt, sealed"


# -- staging directories of killed processes ---------------------------------------------------------


def test_a_kill_during_the_first_initdb_leaves_nothing_the_next_start_keeps(
    project: Path, data_dir: Path, cache_dir: Path, settings_for
) -> None:
    env = clean_env({"TESTLANE_DATA_DIR": str(data_dir), "TESTLANE_CACHE_DIR": str(cache_dir)})
    starter = subprocess.Popen(
        [str(Path(sys.executable).with_name("testlane")), "services", "start", "postgres"],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        staged = wait_until(
            lambda: next(iter(cache_dir.glob("postgres/*/.*.tmp")), None),
            timeout=60,
            what="initdb's staging directory",
            interval=0.002,
        )
        os.killpg(starter.pid, signal.SIGKILL)  # testlane and the initdb it runs
        starter.wait()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(starter.pid, signal.SIGKILL)
    wait_until(
        lambda: (
            not any(
                p.info["name"] == "initdb" and str(staged) in " ".join(p.info["cmdline"] or [])
                for p in psutil.process_iter(["name", "cmdline"])
            )
        ),
        timeout=10,
        what="initdb to die",
    )
    assert staged.is_dir(), "the kill left initdb's staging directory"
    settings = settings_for(cache_dir=str(cache_dir))
    with ServiceStack(settings, _context(settings)) as stack:
        stack.start(["postgres"])
    assert not staged.exists(), "the next start removes a dead process's staging directory"
    assert list(cache_dir.glob("postgres/*/cluster/PG_VERSION")), "and builds the cluster"


# Staging directories are named `.<name>.<pid>.tmp` (testlane.services.cache.staging_path).
CRASH_SCRIPT = r"""
import os, signal, sys
from pathlib import Path
for final in map(Path, sys.argv[1:]):
    staging = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    (staging / "cluster").mkdir(parents=True)
    (staging / "cluster" / "base.dat").write_bytes(b"x" * 65536)
    print(staging, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # as a kill during the copy would
"""


def test_reap_removes_staging_directories_of_dead_processes_only(
    project: Path, data_dir: Path, cache_dir: Path
) -> None:
    finals = [cache_dir / "snapshots" / "18.6-abc-0123456789abcdef", cache_dir / "postgres" / "18.6-abc" / "cluster"]
    for final in finals:
        final.parent.mkdir(parents=True, exist_ok=True)
    crashed = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, *map(str, finals)], capture_output=True, text=True)
    assert crashed.returncode == -signal.SIGKILL
    dead = [Path(line) for line in crashed.stdout.split()]
    assert len(dead) == 2 and all(p.is_dir() for p in dead)
    live = cache_dir / "snapshots" / f".in-progress.{os.getpid()}.tmp"  # this process's: a build in progress
    live.mkdir()
    lookalike = cache_dir / "snapshots" / ".keep.tmp"  # not a staging name
    lookalike.mkdir()
    env = clean_env({"TESTLANE_DATA_DIR": str(data_dir), "TESTLANE_CACHE_DIR": str(cache_dir)})
    reaped = run_cli(["reap"], cwd=project, env=env)
    assert reaped.returncode == 0, reaped.stderr
    assert [p for p in dead if p.exists()] == []
    for path in dead:
        assert f"removed {path}" in reaped.stdout + reaped.stderr
    assert live.is_dir() and lookalike.is_dir()
    again = run_cli(["reap"], cwd=project, env=env)
    assert "nothing to reap" in again.stdout + again.stderr
