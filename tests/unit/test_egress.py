"""The egress guard (testlane.services.egress): where libpq would connect, what is allowed, refusing
before the connection is made, and the guard in child Pythons."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from testlane.services.egress import (
    DEFAULT_SOCKET_DIR,
    Allowlist,
    Attempt,
    EgressRefusedError,
    EnvironmentReads,
    child_guard_environment,
    guarded,
    libpq_targets,
    pointing_variables,
    read_reports,
)


@pytest.fixture(autouse=True)
def _no_libpq_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PGHOST", "PGPORT", "PGHOSTADDR", "PGSERVICE", "PGSERVICEFILE", "PGSYSCONFDIR"):
        monkeypatch.delenv(name, raising=False)


def test_libpq_targets_follow_the_conninfo_then_libpqs_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert libpq_targets("postgresql://u@db.example:6543/x", {}) == [("db.example", 6543)]
    assert libpq_targets("host=a,b port=1,2", {}) == [("a", 1), ("b", 2)]
    assert libpq_targets("host=name hostaddr=10.0.0.9 port=7", {}) == [("10.0.0.9", 7)]
    assert libpq_targets("", {"host": "k", "port": 9}) == [("k", 9)]
    assert libpq_targets("dbname=x", {}) == [(f"{DEFAULT_SOCKET_DIR}/.s.PGSQL.5432", None)]
    monkeypatch.setenv("PGHOST", "/var/run/postgresql")
    monkeypatch.setenv("PGPORT", "5433")
    assert libpq_targets("dbname=x", {}) == [("/var/run/postgresql/.s.PGSQL.5433", None)]
    assert libpq_targets("host=@abstract", {}) == [("@abstract/.s.PGSQL.5433", None)]
    assert libpq_targets("host=/run/a,db.example", {}) == [("/run/a/.s.PGSQL.5433", None), ("db.example", 5433)]
    assert libpq_targets("not a conninfo ===", {}) == [("<unparsable conninfo>", 0)]


SERVICES = """
# a comment
[user_svc]
host=10.1.1.1
port=6001
dbname=app

[both]
host=10.2.2.2
"""


def test_libpq_targets_resolve_service_files_with_libpqs_precedence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "user.conf").write_text(SERVICES)
    (tmp_path / "sys").mkdir()
    (tmp_path / "sys" / "pg_service.conf").write_text("[sys_svc]\nhost=10.3.3.3\nport=6003\n[both]\nhost=10.4.4.4\n")
    monkeypatch.setenv("PGSERVICEFILE", str(tmp_path / "user.conf"))
    monkeypatch.setenv("PGSYSCONFDIR", str(tmp_path / "sys"))
    # Named in the conninfo: the service's values, below the conninfo's own, above PG* variables.
    monkeypatch.setenv("PGHOST", "10.9.9.9")
    assert libpq_targets("service=user_svc", {}) == [("10.1.1.1", 6001)]
    assert libpq_targets("service=user_svc port=7000", {}) == [("10.1.1.1", 7000)]
    assert libpq_targets("", {"service": "user_svc", "host": "k"}) == [("k", 6001)]
    # The user's file first, then the system one.
    assert libpq_targets("service=both", {}) == [("10.2.2.2", 5432)]
    assert libpq_targets("service=sys_svc", {}) == [("10.3.3.3", 6003)]
    # A service the service keys leave out falls back to PG* (PGHOST here).
    (tmp_path / "user.conf").write_text("[portonly]\nport=6100\n")
    assert libpq_targets("service=portonly", {}) == [("10.9.9.9", 6100)]
    # PGSERVICE alone: libpq's own defaults resolve it.
    monkeypatch.setenv("PGSERVICE", "sys_svc")
    assert libpq_targets("dbname=x", {}) == [("10.3.3.3", 6003)]
    # Nowhere to be found: a target no allowlist allows, naming the service and the files.
    monkeypatch.delenv("PGSERVICE")
    [(missing, port)] = libpq_targets("service=nowhere", {})
    assert port == 0 and "'nowhere'" in missing and "user.conf" in missing
    assert not Allowlist(hosts=("127.0.0.1",)).allows(missing, port)
    assert Attempt(missing, port, "libpq").describe() == f"{missing} (PostgreSQL, via libpq)"


def test_allowlist_knows_localhost_aliases_ports_and_socket_dirs() -> None:
    allow = Allowlist(endpoints=(("127.0.0.1", 5999),), socket_dirs=("/run/tl/abc",))
    assert allow.allows("127.0.0.1", 5999) and allow.allows("localhost", 5999)
    assert not allow.allows("127.0.0.1", 5432) and not allow.allows("10.1.1.1", 5999)
    assert allow.allows("/run/tl/abc", 5999) and allow.allows("/run/tl/abc/.s.PGSQL.5999", None)
    assert not allow.allows("/var/run/postgresql", 5432) and not allow.allows("<default socket>", 5432)
    assert not allow.allows("/var/run/postgresql/.s.PGSQL.5432", None)
    assert not allow.allows(f"{DEFAULT_SOCKET_DIR}/.s.PGSQL.5999", None)
    assert Allowlist.from_json(allow.to_json()) == allow


def test_a_refused_connect_never_reaches_the_listener() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0)
    port = listener.getsockname()[1]
    seen: list[tuple[str, int | None, str]] = []

    def check(host: str, port: int | None, via: str) -> None:
        seen.append((host, port, via))
        raise EgressRefusedError("no")

    before = socket.socket.__dict__.get("connect")  # the unit lane's own guard, if on
    try:
        with guarded(check), pytest.raises(EgressRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2)
        assert seen == [("127.0.0.1", port, "tcp")]
        with pytest.raises(BlockingIOError):
            listener.accept()
        assert socket.socket.__dict__.get("connect") is before  # undone on exit
    finally:
        listener.close()


def test_unset_reads_and_pointing_variables_are_what_a_message_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    reads = EnvironmentReads()
    with reads.recording():
        os.environ.get("DATABASE_URL")
        os.getenv("PGCONNECT_TIMEOUT")  # the driver's own: not the application's
        os.getenv("HOME_THEME")  # does not look like a database variable
    assert reads.unset == ["DATABASE_URL"]
    env = {"DATABASE_URL": "postgresql+psycopg://u:p@localhost:5432/dev", "OTHER": "x:5432", "PORT": "5432"}
    assert pointing_variables("127.0.0.1", 5432, env) == ["DATABASE_URL"]


def test_child_pythons_are_guarded_and_the_projects_sitecustomize_still_runs(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    project = tmp_path / "project"
    project.mkdir()
    (project / "sitecustomize.py").write_text("import os\nos.environ['PROJECT_SITECUSTOMIZE'] = 'ran'\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PGHOST", "PGPORT")}
    env["PYTHONPATH"] = str(project)
    env.update(child_guard_environment(Allowlist(endpoints=(("127.0.0.1", 1),)), private, env))
    code = (
        "import os, psycopg\n"
        "assert os.environ['PROJECT_SITECUSTOMIZE'] == 'ran'\n"
        "try:\n"
        "    psycopg.connect('postgresql://postgres@127.0.0.1:5432/dev', connect_timeout=2)\n"
        "except ConnectionRefusedError as exc:\n"
        "    print('refused:', exc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "refused: testlane refused a connection to 127.0.0.1:5432 (PostgreSQL, via libpq)" in proc.stdout
    [attempt] = read_reports(private)
    assert (attempt.host, attempt.port, attempt.via) == ("127.0.0.1", 5432, "libpq")


def test_a_libpq_driver_imported_under_the_guard_is_patched_when_its_import_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in for psycopg2 (not a dependency): the same public connect() signature, importable by path.
    (tmp_path / "psycopg2").mkdir()
    (tmp_path / "psycopg2" / "__init__.py").write_text(
        "def connect(dsn=None, connection_factory=None, cursor_factory=None, **kwargs):\n    return ('ok', dsn)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "psycopg2", raising=False)
    refused: list[tuple[str, int | None]] = []

    def check(host: str, port: int | None, via: str) -> None:
        if host != "127.0.0.1" or port != 6000:
            refused.append((host, port))
            raise EgressRefusedError("no")

    try:
        with guarded(check):
            import psycopg2  # type: ignore[import-not-found]

            assert psycopg2.connect("host=127.0.0.1 port=6000") == ("ok", "host=127.0.0.1 port=6000")
            with pytest.raises(EgressRefusedError):
                psycopg2.connect(host="db.example", port=5432, dbname="dev")
        assert refused == [("db.example", 5432)]
        assert psycopg2.connect("host=db.example")[0] == "ok"  # undone on exit
    finally:
        sys.modules.pop("psycopg2", None)


def test_database_unix_sockets_are_checked_and_other_unix_sockets_are_not(tmp_path: Path) -> None:
    checked: list[str] = []

    def check(host: str, port: int | None, via: str) -> None:
        checked.append(host)
        raise EgressRefusedError("no")

    with guarded(check):
        for name, expected in ((".s.PGSQL.5432", EgressRefusedError), ("app.sock", FileNotFoundError)):
            with socket.socket(socket.AF_UNIX) as sock, pytest.raises(expected):
                sock.connect(str(tmp_path / name))
    assert checked == [str(tmp_path / ".s.PGSQL.5432")]


def test_the_template_build_refuses_foreign_database_sockets_and_allows_its_own() -> None:
    # The unit lane lets Unix sockets through; the template build, with the same guard, must not.
    import psycopg

    from testlane.databases.build_scope import build_scope
    from testlane.databases.migrations import Target

    ours, foreign = (Path(tempfile.mkdtemp(dir="/tmp", prefix=f"tl-{name}-")) for name in ("ours", "foreign"))
    listener = socket.socket(socket.AF_UNIX)
    try:
        listener.bind(str(foreign / ".s.PGSQL.5999"))
        listener.listen()
        listener.settimeout(0)
        with build_scope(Target("postgresql://postgres@127.0.0.1:5999/app"), {}, socket_dir=str(ours)) as scope:
            with pytest.raises(EgressRefusedError):
                psycopg.connect(host=str(foreign), port=5999, dbname="app", connect_timeout=2)
            with pytest.raises(psycopg.OperationalError):  # let through: libpq's own error, nothing listens there
                psycopg.connect(host=str(ours), port=5999, dbname="app", connect_timeout=2)
        with pytest.raises(BlockingIOError):
            listener.accept()
        assert [a.describe() for a in scope.attempts] == [
            f"{foreign}/.s.PGSQL.5999 (PostgreSQL Unix socket, via libpq)"
        ]
    finally:
        listener.close()
        shutil.rmtree(ours, ignore_errors=True)
        shutil.rmtree(foreign, ignore_errors=True)
