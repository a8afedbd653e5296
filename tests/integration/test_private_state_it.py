"""Credentials stay private (issue 13, case 3): no password in anything testlane prints or reports,
run state no other local user can read, and no credential in a server's command line or environment.

Real runs only: `testlane run` against this machine's PostgreSQL through a role with a password
(created here, named ``tl_...``, dropped afterwards), embedded servers, and a real second local user
(``useradd`` here, ``userdel`` afterwards; those tests need root).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import stat
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.helpers import clean_env, run_cli

SYSTEM_PG = "postgresql://postgres@127.0.0.1:5432/postgres"


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


needs_system_postgres = pytest.mark.skipif(not _listening(5432), reason="this machine's PostgreSQL is not running")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="creating a second local user needs root")


@pytest.fixture
def pg_role() -> Iterator[tuple[str, str]]:
    """A login role with a password on the system PostgreSQL: (url with the password, the password)."""
    name = f"tl_b13_{secrets.token_hex(4)}"
    password = f"pw_{secrets.token_hex(12)}"
    with psycopg.connect(SYSTEM_PG, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(sql.Identifier(name), sql.Literal(password))
        )
    try:
        yield f"postgresql://{name}:{password}@127.0.0.1:5432/postgres", password
    finally:
        with psycopg.connect(SYSTEM_PG, autocommit=True) as admin:
            owned = admin.execute(
                "SELECT datname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba WHERE r.rolname = %s", (name,)
            ).fetchall()
            for (db,) in owned:
                if db.startswith("tl_"):  # only what the run under test created, as this role
                    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def _write_project(project: Path, config: str, tests: str) -> None:
    text = (project / "pyproject.toml").read_text()
    (project / "pyproject.toml").write_text(text + "\n" + textwrap.dedent(config))
    (project / "test_inner.py").write_text(textwrap.dedent(tests))


@needs_system_postgres
def test_no_password_in_the_banner_digest_reports_log_or_services_output(
    project: Path, data_dir: Path, pg_role: tuple[str, str]
) -> None:
    url, password = pg_role
    _write_project(
        project,
        """
        [tool.testlane]
        services = ["postgres"]
        [tool.testlane.postgres]
        backend = "url"
        """,
        """
        import os

        def test_url_in_an_assertion():
            assert os.environ["TESTLANE_POSTGRES_URL"] == "something else"

        def test_ordinary_text_is_left_alone():
            password = "typed"
            expected = "stored"
            assert password == expected, "password == expected"
        """,
    )
    env = clean_env({"TESTLANE_DATA_DIR": str(data_dir), "TESTLANE_POSTGRES_SERVER_URL": url})
    jsonl, doc = project / "out.jsonl", project / "out.json"
    result = run_cli(
        ["-v", "run", "--", "-p", "no:cacheprovider", "--format", "digest", "--report-jsonl", str(jsonl),
         "--report-json", str(doc)],
        cwd=project,
        env=env,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    shown = result.stdout + result.stderr
    assert "at postgresql://" in shown and ":***@127.0.0.1:5432/postgres" in shown  # the banner, masked
    assert "password == expected" in shown  # an assertion's message about a variable named password is kept
    for text in (shown, jsonl.read_text(), doc.read_text()):
        assert password not in text
    assert ":***@" in json.dumps(json.loads(doc.read_text())["groups"])  # the diff is there, masked

    # Detached services: start, status, doctor print the URL masked; `services env` is for the
    # user's own shell and carries the password.
    env["TESTLANE_POSTGRES_BACKEND"] = "url"
    try:
        started = run_cli(["services", "start", "postgres"], cwd=project, env=env)
        assert started.returncode == 0, started.stderr
        status = run_cli(["services", "status"], cwd=project, env={**env, "COLUMNS": "250"})
        doctor = run_cli(["doctor"], cwd=project, env={**env, "TESTLANE_POSTGRES_BACKEND": "auto"})
        exported = run_cli(["services", "env"], cwd=project, env=env)
    finally:
        stopped = run_cli(["services", "stop"], cwd=project, env=env)
    for out in (started, status, doctor, stopped):
        assert password not in out.stdout + out.stderr
    assert ":***@127.0.0.1:5432" in status.stdout + status.stderr
    assert f"export TESTLANE_POSTGRES_URL={url}" in exported.stdout

    # An error message quoting the URL masks it too.
    broken = run_cli(
        ["run"], cwd=project, env={**env, "TESTLANE_POSTGRES_SERVER_URL": url.replace("postgresql", "postgresx")}
    )
    assert broken.returncode == 4 and "postgresx://" in broken.stderr and password not in broken.stderr


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _state_probe(project: Path, config: str, data_dir: Path, user: str | None) -> dict[str, object]:
    """Run one test inside `testlane run` that reports its run's files, modes and what ``user`` can read."""
    _write_project(
        project,
        config,
        f"""
        import json, os, pathlib, stat, subprocess

        def probe(user, *argv):
            proc = subprocess.run(["runuser", "-u", user, "--", *argv], capture_output=True, text=True)
            return proc.returncode, proc.stdout + proc.stderr

        def test_probe():
            services = pathlib.Path(os.environ["TESTLANE_SERVICES_FILE"])
            run_dir = services.parent
            state = run_dir.parent / "state"
            seen = {{
                "services": services.read_text(),
                "run_dir": str(run_dir),
                "modes": {{str(p): stat.S_IMODE(p.stat().st_mode) for p in [run_dir, *run_dir.iterdir()]}},
                "records": {{str(p): stat.S_IMODE(p.stat().st_mode) for p in state.glob(run_dir.name + ".*.json")}},
                "run_dir_gid": run_dir.stat().st_gid,
                "instance_gids": sorted({{p.stat().st_gid for p in run_dir.iterdir() if p.is_dir()}}),
            }}
            user = {user!r}
            if user:
                seen["read_services"] = probe(user, "cat", str(services))
                seen["list_run_dir"] = probe(user, "ls", str(run_dir))
                seen["read_records"] = [probe(user, "cat", p) for p in seen["records"]]
            pathlib.Path("probe.json").write_text(json.dumps(seen))
        """,
    )
    env = clean_env({"TESTLANE_DATA_DIR": str(data_dir)})
    result = run_cli(["run", "--", "-p", "no:cacheprovider", "-q"], cwd=project, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return dict(json.loads((project / "probe.json").read_text()))


@needs_root
def test_run_state_is_private_and_a_second_user_reads_no_credential(
    project: Path, data_dir: Path, hostile_user: str
) -> None:
    seen = _state_probe(
        project,
        """
        [tool.testlane]
        services = ["postgres", "valkey"]
        """,
        data_dir,
        hostile_user,
    )
    run_dir = str(seen["run_dir"])
    modes = dict(seen["modes"])  # type: ignore[call-overload]
    # 0710 root:<the service user's group>: the service user may pass through to its own directory.
    assert modes[run_dir] == 0o710
    assert seen["run_dir_gid"] in seen["instance_gids"] and seen["run_dir_gid"] != 0  # type: ignore[operator]
    assert modes[f"{run_dir}/services.json"] == 0o600
    assert modes[f"{run_dir}/owner.json"] == 0o600
    assert modes[f"{run_dir}/postgres"] == 0o700
    records = dict(seen["records"])  # type: ignore[call-overload]
    assert records and set(records.values()) == {0o600}
    code, out = seen["read_services"]  # type: ignore[misc]
    assert code != 0 and "Permission denied" in out
    code, out = seen["list_run_dir"]  # type: ignore[misc]
    assert code != 0 and "Permission denied" in out
    assert all(code != 0 for code, _ in seen["read_records"])  # type: ignore[attr-defined]


@needs_system_postgres
def test_a_url_only_run_has_a_private_directory_and_services_file(
    project: Path, data_dir: Path, pg_role: tuple[str, str]
) -> None:
    url, password = pg_role
    seen = _state_probe(
        project,
        f"""
        [tool.testlane]
        services = ["postgres"]
        [tool.testlane.postgres]
        backend = "url"
        url = "{url}"
        """,
        data_dir,
        None,
    )
    assert password in str(seen["services"])  # what the tests need is there...
    modes = dict(seen["modes"])  # type: ignore[call-overload]
    run_dir = str(seen["run_dir"])
    assert modes[run_dir] == 0o700  # ...and only its user can read it
    assert modes[f"{run_dir}/services.json"] == 0o600
    assert set(dict(seen["records"]).values()) == {0o600}  # type: ignore[call-overload]


def test_a_server_inherits_no_credential_from_the_session(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, data_dir: Path
) -> None:
    """A server started on demand by a pytest session whose environment holds credentials (a
    developer's ``DATABASE_URL``, the run's ``TESTLANE_*`` variables): what the server runs (here
    ``COPY ... FROM PROGRAM 'env'``, as root: the service user's processes) sees none of them."""
    from testlane.cli.run import RUN_SCOPED_ENV

    password = f"pw_{secrets.token_hex(12)}"
    for key in (*RUN_SCOPED_ENV, "PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("TESTLANE_IT", "1")
    monkeypatch.setenv("TESTLANE_DATA_DIR", str(data_dir))
    monkeypatch.setenv("DEV_DATABASE_URL", f"postgresql://dev:{password}@db.example:5432/app")
    monkeypatch.setenv("TESTLANE_VALKEY_URL", f"redis://:{password}@127.0.0.1:1/0")
    pytester.makefile(
        ".toml",
        pyproject=textwrap.dedent("""
        [project]
        name = "inner"
        version = "0"
        [tool.testlane]
        services = ["postgres"]
        [tool.pytest.ini_options]
        asyncio_default_fixture_loop_scope = "function"
        """),
    )
    out = pytester.path / "server_env.txt"
    pytester.makepyfile(
        test_inner_it=f"""
        import base64, pathlib

        def test_server_environment(postgres):
            with postgres.connect() as conn:
                conn.execute("CREATE TEMP TABLE e (line text)")
                conn.execute("COPY e FROM PROGRAM 'env | base64 -w0'")
                encoded = conn.execute("SELECT string_agg(line, '') FROM e").fetchone()[0]
            pathlib.Path({str(out)!r}).write_text(base64.b64decode(encoded).decode())
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=300).assert_outcomes(passed=1)
    seen = out.read_text()
    assert "PATH=" in seen  # the server's environment was read
    assert password not in seen
    assert "TESTLANE_" not in seen


@needs_system_postgres
def test_no_process_testlane_starts_has_a_password_in_its_command_line(
    project: Path, data_dir: Path, pg_role: tuple[str, str]
) -> None:
    """Every process of a run (pytest, servers, their children), seen from inside the run: the
    passwords in services.json appear in none of their command lines (``ps`` shows them to everyone)."""
    url, _ = pg_role
    _write_project(
        project,
        f"""
        [tool.testlane]
        services = ["postgres", "valkey"]
        [tool.testlane.postgres]
        backend = "url"
        url = "{url}"
        """,
        """
        import json, os, pathlib, psutil

        def test_argv():
            services = json.loads(pathlib.Path(os.environ["TESTLANE_SERVICES_FILE"]).read_text())["services"]
            secrets_ = [s["password"] for s in services if s.get("password")]
            procs = psutil.Process(int(os.environ["TESTLANE_OWNER_PID"])).children(recursive=True)
            for s in services:
                if s.get("pid"):
                    procs += [psutil.Process(s["pid"]), *psutil.Process(s["pid"]).children(recursive=True)]
            lines = [" ".join(p.cmdline()) for p in procs]
            pathlib.Path("argv.json").write_text(json.dumps({"secrets": secrets_, "cmdlines": lines}))
        """,
    )
    env = clean_env({"TESTLANE_DATA_DIR": str(data_dir)})
    result = run_cli(["run", "--", "-p", "no:cacheprovider", "-q"], cwd=project, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    seen = json.loads((project / "argv.json").read_text())
    assert seen["secrets"] and len(seen["cmdlines"]) >= 2  # the URL backend's password; pytest and valkey at least
    for line in seen["cmdlines"]:
        assert not any(secret in line for secret in seen["secrets"]), line
