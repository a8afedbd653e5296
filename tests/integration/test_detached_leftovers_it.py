"""Sessions against a detached Postgres (`testlane services start`) leave none of their databases there.

The detached server outlives every session: a session drops its clones when it ends (normally, or on
Ctrl-C), and `testlane reap` (or the next session) drops what a killed session left — only that.
The Postgres tests share one detached server (the ``detached`` fixture), as a user's sessions do.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import psycopg
import pytest
from psycopg import sql

from tests.conftest import empty_project
from tests.helpers import clean_env, leftovers, run_cli, server_processes, wait_for_file

HOLD_TEST = textwrap.dedent(
    """
    import os, pathlib
    from testlane.core.waiting import wait_until

    def test_plain():
        pass

    def test_uses_a_database(pg_database):
        out = pathlib.Path(os.environ["HOLD_OUT"])
        partial = out.with_suffix(".partial")
        partial.write_text(pg_database.name)
        os.replace(partial, out)
        hold = os.environ.get("HOLD")
        if hold:
            wait_until(pathlib.Path(hold).exists, timeout=600, what="release")
        assert not os.environ.get("FAIL"), "a failing session drops its databases too"
    """
)


class Detached(NamedTuple):
    env: dict[str, str]  # the environment `eval "$(testlane services env)"` gives a shell
    url: str
    project: Path  # the project that started it (tests/test_hold.py: HOLD_TEST)


@pytest.fixture(scope="module")
def detached(tmp_path_factory: pytest.TempPathFactory, module_data_dir: Path) -> Iterator[Detached]:
    """One detached Postgres for the module's Postgres tests, as a server outlives sessions: each test compares
    the server's databases before and after its own sessions, and names the foreign ones it adds."""
    project = empty_project(tmp_path_factory.mktemp("detached"))
    with (project / "pyproject.toml").open("a") as f:
        f.write('\n[tool.testlane]\nservices = ["postgres"]\n')
    (project / "tests").mkdir()
    (project / "tests" / "test_hold.py").write_text(HOLD_TEST)
    env = clean_env({"TESTLANE_DATA_DIR": str(module_data_dir)})
    started = run_cli(["services", "start", "postgres"], cwd=project, env=env)
    assert started.returncode == 0, started.stderr
    try:
        exported = run_cli(["services", "env"], cwd=project, env=env)
        assert exported.returncode == 0, exported.stderr
        exports = dict(
            line.removeprefix("export ").split("=", 1)
            for line in exported.stdout.splitlines()
            if line.startswith("export ")
        )
        # the values are shell-quoted only when they need it; the services file path and URL do not
        env.update({key: value.strip("'") for key, value in exports.items()})
        yield Detached(env, env["TESTLANE_POSTGRES_URL"], project)
    finally:
        stopped = run_cli(["services", "stop"], cwd=project, env=env)
        assert stopped.returncode == 0, stopped.stderr
    assert server_processes(module_data_dir) == []
    assert leftovers(module_data_dir) == []


def _tl_databases(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'tl\\_%' AND datname NOT LIKE 'tl\\_tpl\\_%'"
        ).fetchall()
    return {str(row[0]) for row in rows}


def _session(
    project: Path, env: dict[str, str], out: Path, hold: Path | None = None, *, fail: bool = False
) -> subprocess.Popen[str]:
    """`pytest --it tests/test_hold.py` in the user's shell after `eval "$(testlane services env)"`."""
    extra = {
        "HOLD_OUT": str(out),
        **({"HOLD": str(hold)} if hold is not None else {}),
        **({"FAIL": "1"} if fail else {}),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "--it", "-p", "no:cacheprovider", "-q", "tests/test_hold.py"],
        cwd=project,
        env={**env, **extra},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run_id(database: str) -> str:
    return database.split("_")[1]


@pytest.mark.parametrize("fail", [False, True], ids=["passing", "failing"])
def test_a_session_leaves_no_database_on_the_detached_server(detached: Detached, tmp_path: Path, fail: bool) -> None:
    env, url, project = detached
    before = _tl_databases(url)
    proc = _session(project, env, tmp_path / "used", fail=fail)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == (1 if fail else 0), stdout + stderr
    used = (tmp_path / "used").read_text()
    assert used.startswith("tl_")
    assert _tl_databases(url) == before  # the clone the test used, and those made for it, are dropped


def test_a_session_interrupted_with_sigint_leaves_no_database(detached: Detached, tmp_path: Path) -> None:
    env, url, project = detached
    before = _tl_databases(url)
    proc = _session(project, env, tmp_path / "used", hold=tmp_path / "never")
    try:
        wait_for_file(tmp_path / "used", timeout=120)
        assert _tl_databases(url) - before  # the session holds its databases now
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, stdout + stderr  # interrupted
    assert _tl_databases(url) == before


def test_reap_and_the_next_session_drop_only_what_a_killed_session_left(detached: Detached, tmp_path: Path) -> None:
    env, url, project = detached
    # Not testlane's: a tl_ name without its owner record, and the user's own database. Neither is touched.
    foreign = ["tl_0badc0de_main_1", f"userdb_{os.getpid()}"]
    with psycopg.connect(url, autocommit=True) as conn:
        for name in foreign:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    release = tmp_path / "release"
    live = _session(project, env, tmp_path / "live", hold=release)
    killed = _session(project, env, tmp_path / "killed", hold=tmp_path / "never")
    try:
        wait_for_file(tmp_path / "live", timeout=120)
        wait_for_file(tmp_path / "killed", timeout=120)
        live_run, killed_run = (_run_id((tmp_path / name).read_text()) for name in ("live", "killed"))
        killed.kill()
        killed.communicate(timeout=60)
        left = {name for name in _tl_databases(url) if _run_id(name) == killed_run}
        assert left, "the killed session held databases"

        reaped = run_cli(["reap"], cwd=project, env=clean_env({"TESTLANE_DATA_DIR": env["TESTLANE_DATA_DIR"]}))
        assert reaped.returncode == 0, reaped.stderr
        for name in left:
            assert f"dropped database {name} on the detached server" in reaped.stdout + reaped.stderr
        remaining = _tl_databases(url)
        assert not {name for name in remaining if _run_id(name) == killed_run}
        assert {name for name in remaining if _run_id(name) == live_run}  # the live session's: untouched
        assert "tl_0badc0de_main_1" in remaining

        release.touch()
        stdout, stderr = live.communicate(timeout=120)
        assert live.returncode == 0, stdout + stderr
        assert not {name for name in _tl_databases(url) if _run_id(name) == live_run}

        # A session killed again: the next session's start drops its databases, without `testlane reap`.
        again = _session(project, env, tmp_path / "again", hold=tmp_path / "never")
        try:
            wait_for_file(tmp_path / "again", timeout=120)
        finally:
            again.kill()
            again.communicate(timeout=60)
        again_run = _run_id((tmp_path / "again").read_text())
        assert {name for name in _tl_databases(url) if _run_id(name) == again_run}
        after = _session(project, env, tmp_path / "after")
        stdout, stderr = after.communicate(timeout=300)
        assert after.returncode == 0, stdout + stderr
        assert not {name for name in _tl_databases(url) if _run_id(name) == again_run}
    finally:
        for proc in (live, killed):
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=60)
    with psycopg.connect(url) as conn:
        names = {str(row[0]) for row in conn.execute("SELECT datname FROM pg_database").fetchall()}
    assert set(foreign) <= names


VHOST_TEST = textwrap.dedent(
    """
    def test_uses_a_vhost(rabbitmq_vhost):
        assert rabbitmq_vhost.url
    """
)


def test_a_session_leaves_no_vhost_on_a_detached_rabbitmq(project: Path, data_dir: Path) -> None:
    from testlane.services.stack import attach, load_services_file

    with (project / "pyproject.toml").open("a") as f:
        f.write('\n[tool.testlane]\nservices = ["rabbitmq"]\n')
    (project / "tests").mkdir()
    (project / "tests" / "test_vhost.py").write_text(VHOST_TEST)
    env = clean_env({"TESTLANE_DATA_DIR": str(data_dir)})
    started = run_cli(["services", "start", "rabbitmq"], cwd=project, env=env, timeout=300)
    assert started.returncode == 0, started.stderr
    try:
        exported = run_cli(["services", "env"], cwd=project, env=env)
        for line in exported.stdout.splitlines():
            if line.startswith("export "):
                key, value = line.removeprefix("export ").split("=", 1)
                env[key] = value.strip("'")
        broker = attach(load_services_file(env["TESTLANE_SERVICES_FILE"])["rabbitmq"])

        def vhosts() -> set[str]:
            with broker.management() as api:
                return {str(entry["name"]) for entry in api.get("/api/vhosts").json()}

        before = vhosts()
        session = subprocess.run(
            [sys.executable, "-m", "pytest", "--it", "-p", "no:cacheprovider", "-q", "tests/test_vhost.py"],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert session.returncode == 0, session.stdout + session.stderr
        assert vhosts() == before  # the test's vhost and those made ahead for later tests are deleted
    finally:
        stopped = run_cli(["services", "stop"], cwd=project, env=env)
        assert stopped.returncode == 0, stopped.stderr
    assert server_processes(data_dir) == []
    assert leftovers(data_dir) == []


BUCKET_TEST = textwrap.dedent(
    """
    import os, pathlib
    from testlane.core.waiting import wait_until

    def test_uses_a_bucket(s3_bucket):
        out = pathlib.Path(os.environ["HOLD_OUT"])
        partial = out.with_suffix(".partial")
        partial.write_text(s3_bucket.name)
        os.replace(partial, out)
        hold = os.environ.get("HOLD")
        if hold:
            wait_until(pathlib.Path(hold).exists, timeout=600, what="release")
    """
)


def test_the_next_session_deletes_the_buckets_a_killed_session_left_on_a_detached_s3(
    project: Path, data_dir: Path, tmp_path: Path
) -> None:
    from testlane.services.stack import attach, load_services_file

    with (project / "pyproject.toml").open("a") as f:
        f.write('\n[tool.testlane]\nservices = ["s3"]\n')
    (project / "tests").mkdir()
    (project / "tests" / "test_hold.py").write_text(BUCKET_TEST)
    env = clean_env({"TESTLANE_DATA_DIR": str(data_dir)})
    started = run_cli(["services", "start", "s3"], cwd=project, env=env, timeout=300)
    assert started.returncode == 0, started.stderr
    try:
        exported = run_cli(["services", "env"], cwd=project, env=env)
        for line in exported.stdout.splitlines():
            if line.startswith("export "):
                key, value = line.removeprefix("export ").split("=", 1)
                env[key] = value.strip("'")
        client = attach(load_services_file(env["TESTLANE_SERVICES_FILE"])["s3"]).client()  # type: ignore[attr-defined]
        client.create_bucket(Bucket="tl-users-own-bucket")  # named like testlane's, without its owner tag

        def buckets() -> set[str]:
            return {str(b["Name"]) for b in client.list_buckets().get("Buckets", [])}

        killed = _session(project, env, tmp_path / "killed", hold=tmp_path / "never")
        try:
            wait_for_file(tmp_path / "killed", timeout=120)
        finally:
            killed.kill()
            killed.communicate(timeout=60)
        prefix = (tmp_path / "killed").read_text().rsplit("-", 1)[0] + "-"
        assert {name for name in buckets() if name.startswith(prefix)}, "the killed session held buckets"

        after = _session(project, env, tmp_path / "after")
        stdout, stderr = after.communicate(timeout=300)
        assert after.returncode == 0, stdout + stderr
        left = buckets()
        assert not {name for name in left if name.startswith(prefix)}
        after_prefix = (tmp_path / "after").read_text().rsplit("-", 1)[0] + "-"
        assert not {name for name in left if name.startswith(after_prefix)}  # its own: deleted at its end
        assert "tl-users-own-bucket" in left
    finally:
        stopped = run_cli(["services", "stop"], cwd=project, env=env)
        assert stopped.returncode == 0, stopped.stderr
    assert server_processes(data_dir) == []
    assert leftovers(data_dir) == []


STREAM_TEST = textwrap.dedent(
    """
    import asyncio, os, pathlib
    from testlane.core.waiting import wait_until

    def test_jetstream(jetstream):
        async def main():
            client = await jetstream.connect()
            try:
                js = client.jetstream()
                found = [info.config.name for info in await js.streams_info()]
                await js.add_stream(name="HELD", subjects=["held.>"])
                return found
            finally:
                await client.close()

        found = asyncio.run(main())
        out = pathlib.Path(os.environ["HOLD_OUT"])
        partial = out.with_suffix(".partial")
        partial.write_text(jetstream.account or "")
        os.replace(partial, out)
        assert found == [], f"the account holds another session's streams: {found}"
        hold = os.environ.get("HOLD")
        if hold:
            wait_until(pathlib.Path(hold).exists, timeout=600, what="release")
    """
)


def test_the_next_session_finds_the_nats_account_a_killed_session_held_reset(
    project: Path, data_dir: Path, tmp_path: Path
) -> None:
    with (project / "pyproject.toml").open("a") as f:
        f.write('\n[tool.testlane]\nservices = ["nats"]\n\n[tool.testlane.nats]\naccounts = 1\n')
    (project / "tests").mkdir()
    (project / "tests" / "test_hold.py").write_text(STREAM_TEST)
    env = clean_env({"TESTLANE_DATA_DIR": str(data_dir)})
    started = run_cli(["services", "start", "nats"], cwd=project, env=env, timeout=300)
    assert started.returncode == 0, started.stderr
    try:
        exported = run_cli(["services", "env"], cwd=project, env=env)
        for line in exported.stdout.splitlines():
            if line.startswith("export "):
                key, value = line.removeprefix("export ").split("=", 1)
                env[key] = value.strip("'")
        killed = _session(project, env, tmp_path / "killed", hold=tmp_path / "never")
        try:
            wait_for_file(tmp_path / "killed", timeout=120)
        finally:
            killed.kill()
            killed.communicate(timeout=60)
        after = _session(project, env, tmp_path / "after")
        stdout, stderr = after.communicate(timeout=300)
        assert after.returncode == 0, stdout + stderr  # the one account, reset: no stream of the killed session
        assert (tmp_path / "after").read_text() == (tmp_path / "killed").read_text()
    finally:
        stopped = run_cli(["services", "stop"], cwd=project, env=env)
        assert stopped.returncode == 0, stopped.stderr
    assert server_processes(data_dir) == []
    assert leftovers(data_dir) == []


MYSQL_TEST = textwrap.dedent(
    """
    import os, pathlib
    from testlane.core.waiting import wait_until

    def test_uses_a_database(mysql_database):
        out = pathlib.Path(os.environ["HOLD_OUT"])
        partial = out.with_suffix(".partial")
        partial.write_text(mysql_database.name)
        os.replace(partial, out)
        hold = os.environ.get("HOLD")
        if hold:
            wait_until(pathlib.Path(hold).exists, timeout=600, what="release")
    """
)


def test_mariadb_a_session_leaves_nothing_and_reap_drops_a_killed_sessions_databases(
    project: Path, data_dir: Path, tmp_path: Path
) -> None:
    import contextlib

    from testlane.services.stack import attach, load_services_file

    with (project / "pyproject.toml").open("a") as f:
        f.write('\n[tool.testlane]\nservices = ["mariadb"]\n')
    (project / "tests").mkdir()
    (project / "tests" / "test_hold.py").write_text(MYSQL_TEST)
    env = clean_env({"TESTLANE_DATA_DIR": str(data_dir)})
    started = run_cli(["services", "start", "mariadb"], cwd=project, env=env, timeout=300)
    assert started.returncode == 0, started.stderr
    try:
        exported = run_cli(["services", "env"], cwd=project, env=env)
        for line in exported.stdout.splitlines():
            if line.startswith("export "):
                key, value = line.removeprefix("export ").split("=", 1)
                env[key] = value.strip("'")
        server = attach(load_services_file(env["TESTLANE_SERVICES_FILE"])["mariadb"])

        def databases() -> set[str]:
            with contextlib.closing(server.connect()) as conn, conn.cursor() as cur:  # type: ignore[attr-defined]
                cur.execute(
                    "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA "
                    "WHERE SCHEMA_NAME LIKE 'tl\\\\_%' AND SCHEMA_NAME NOT LIKE 'tl\\\\_tpl\\\\_%'"
                )
                return {str(row[0]) for row in cur.fetchall()}

        normal = _session(project, env, tmp_path / "normal")
        stdout, stderr = normal.communicate(timeout=300)
        assert normal.returncode == 0, stdout + stderr
        assert databases() == set()

        killed = _session(project, env, tmp_path / "killed", hold=tmp_path / "never")
        try:
            wait_for_file(tmp_path / "killed", timeout=120)
        finally:
            killed.kill()
            killed.communicate(timeout=60)
        killed_run = _run_id((tmp_path / "killed").read_text())
        left = {name for name in databases() if _run_id(name) == killed_run}
        assert left
        reaped = run_cli(["reap"], cwd=project, env=clean_env({"TESTLANE_DATA_DIR": str(data_dir)}))
        assert reaped.returncode == 0, reaped.stderr
        assert not {name for name in databases() if _run_id(name) == killed_run}, reaped.stdout + reaped.stderr
    finally:
        stopped = run_cli(["services", "stop"], cwd=project, env=env)
        assert stopped.returncode == 0, stopped.stderr
    assert server_processes(data_dir) == []
    assert leftovers(data_dir) == []


def test_a_failed_tests_kept_database_survives_the_next_session_and_reap(detached: Detached, tmp_path: Path) -> None:
    """Found by a fresh user: `pytest --it --keep-failed-db` on a detached server printed "database kept", and
    the next session (or `testlane reap`) dropped it at once as a dead session's leftover. Its owner record now
    says until when it is kept (db.keep_failed_ttl); what the session made for nothing is still dropped."""
    env, url, project = detached
    before = _tl_databases(url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "--it", "--keep-failed-db", "-p", "no:cacheprovider", "-q", "tests/"],
        cwd=project,
        env={**env, "HOLD_OUT": str(tmp_path / "used"), "FAIL": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1, stdout + stderr
    kept = (tmp_path / "used").read_text()
    assert _tl_databases(url) - before == {kept}
    reaped = run_cli(["reap"], cwd=project, env=env)
    assert reaped.returncode == 0, reaped.stderr
    again = _session(project, env, tmp_path / "again")
    assert again.communicate(timeout=300)[0] is not None and again.returncode == 0
    assert _tl_databases(url) - before == {kept}, "kept for db.keep_failed_ttl, not reaped as a leftover"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(kept)))
