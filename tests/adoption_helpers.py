"""The fixture projects of docs/adopting.md: copied, configured with the guide's own blocks, compared.

Each kind of project in the guide has one fenced ``toml`` block preceded by ``<!-- adopting-config: KIND -->``;
:func:`adopt` appends exactly that block to a copy of the fixture project, so the guide and the tests that
prove it cannot drift apart. The fixture projects themselves (tests/fixtures/) carry no testlane configuration.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import psycopg
from psycopg import sql

from tests.helpers import FOREIGN_PLUGINS_OFF, run_command

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
GUIDE = REPO / "docs" / "adopting.md"

SYSTEM_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
SYSTEM_REDIS = ("127.0.0.1", 6379)

# The pytest11 entry points in pyproject.toml: disabling both is "testlane not installed".
WITHOUT_TESTLANE = ["-p", "no:testlane", "-p", "no:testlane_reports"]

# FOREIGN_PLUGINS_OFF (tests.helpers): off in every run of the fixture projects, with and without testlane alike.

_BLOCK = re.compile(r"<!-- adopting-config: (?P<kind>[\w-]+) -->\s*```toml\n(?P<body>.*?)```", re.S)


def guide_config(kind: str) -> str:
    """The configuration block docs/adopting.md shows for ``kind`` (exactly one per kind)."""
    blocks = [m["body"] for m in _BLOCK.finditer(GUIDE.read_text()) if m["kind"] == kind]
    assert len(blocks) == 1, f"docs/adopting.md has {len(blocks)} configuration blocks for {kind!r}"
    return blocks[0]


def copy_fixture(name: str, into: Path) -> Path:
    target = into / name
    shutil.copytree(FIXTURES / name, target, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    assert "[tool.testlane" not in (target / "pyproject.toml").read_text(), "fixture projects start unconfigured"
    return target


def adopt(project: Path, kind: str) -> Path:
    """Append the guide's configuration for ``kind`` to the project's pyproject.toml; return the project."""
    pyproject = project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().rstrip() + "\n\n" + guide_config(kind))
    return project


def listening(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


def run_pytest(
    project: Path, args: list[str], env: Mapping[str, str], *, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *FOREIGN_PLUGINS_OFF, "-rA", *args]
    return run_command(argv, cwd=project, env=env, timeout=timeout)


_OUTCOME = re.compile(r"^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) (\S+)", re.M)
_COUNTS = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|warnings?|deselected)")


def outcomes(result: subprocess.CompletedProcess[str]) -> tuple[int, list[str], list[str]]:
    """What a pytest run gave: exit code, each test's outcome (``-rA`` lines, sorted), the summary's counts."""
    per_test = sorted(f"{m[1]} {m[2]}" for m in _OUTCOME.finditer(result.stdout))
    last = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    return result.returncode, per_test, sorted(" ".join(c) for c in _COUNTS.findall(last))


def run_ids(output: str) -> list[str]:
    """The run ids `testlane run` printed ("testlane: run 1a2b3c4d: ...")."""
    return re.findall(r"testlane: run ([0-9a-f]+):", output)


def system_databases(like: str) -> list[str]:
    """Databases on this machine's PostgreSQL whose names match the SQL pattern ``like``."""
    with psycopg.connect(SYSTEM_PG, autocommit=True) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (like,)).fetchall()
    return sorted(r[0] for r in rows)


@contextlib.contextmanager
def throwaway_database() -> Iterator[str]:
    """A new database ``tl_fixture_<random>`` on this machine's PostgreSQL, dropped afterwards (with
    anything Django made from its name: ``test_tl_fixture_<random>...``). Nothing else there is touched."""
    name = f"tl_fixture_{secrets.token_hex(4)}"
    with psycopg.connect(SYSTEM_PG, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect(SYSTEM_PG, autocommit=True) as conn:
            for db in system_databases(f"%{name}%"):
                assert name in db
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))


def system_pg_env(database: str) -> dict[str, str]:
    return {"PGHOST": "127.0.0.1", "PGPORT": "5432", "PGUSER": "postgres", "PGDATABASE": database}


def empty_redis_db() -> int:
    """A logical database of this machine's Redis that holds no keys now (tests only add and delete
    their own keys in it: nothing there is flushed)."""
    import redis

    for index in range(15, 0, -1):
        client = redis.Redis(*SYSTEM_REDIS, db=index)
        try:
            if client.dbsize() == 0:
                return index
        finally:
            client.close()
    raise AssertionError("no empty logical database on this machine's Redis")


def without_outer_database_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` minus variables the fixture projects read (an outer shell's must not leak into them)."""
    names = ("PG", "DATABASE_URL", "ANALYTICS_DATABASE_URL", "TEST_REDIS_URL", "POSTGRES_")
    return {k: v for k, v in env.items() if not k.startswith(names)}


def path_with_interpreter() -> str:
    return f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
