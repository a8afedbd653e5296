"""The failure digest next to ``pytest -q`` and pytest-receptor, on generated suites: size and content.

Usage: python bench/digest.py [--json] [--keep DIR] [--suite NAME ...] [--receptor-dir DIR]

The suites (``SUITES``; testlane's tests assert the digest's content on the same ones):

* ``fixture``: one broken fixture failing 200 tests (4 files of 50), 10 passing tests;
* ``six``: six unrelated assertion failures in two files, 20 passing tests;
* ``timeout``: one test that hangs past its 1 s timeout, 10 passing tests;
* ``green``: 50 passing tests;
* ``migration``: a broken ``.sql`` migration under 9 integration tests (3 files), 1 unit test (issue 16);
* ``alembic``: the same with a broken Alembic revision;
* ``setup``: the same with a ``setup`` command that exits 1;
* ``mixed``: a mixed failing suite: assertions, an exception, a broken fixture, a parametrized failure,
  skips, an xfail, passing tests;
* ``thread``: an exception raised in a thread the test started (a ``ZeroDivisionError``);
* ``skipped``: integration tests run without the integration flag: every test skipped.

Each suite runs in a fresh subprocess three ways: ``pytest -q``, ``pytest --receptor=llm``
(pytest-receptor, installed from PyPI on first use with ``pip install --target`` into a directory of its
own, put on ``PYTHONPATH`` for its runs only: the other runs never load it) and ``pytest --digest``.
For each output: the characters printed on stdout, the exit code, and whether it keeps what an agent
needs: the file:line to fix (``Suite.where``), the cause (``Suite.cause``), and a rerun command that
really reruns the failing tests: each ``rerun:`` command printed is run as printed (plus
``--report-json``), and must fail again on every test that failed. The target (issue 16): the digest
never longer than pytest-receptor's output on any suite, while keeping all three.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from testlane.cli.run import RUN_SCOPED_ENV

PYPROJECT = """\
[project]
name = "bench-{name}"
version = "0"

[tool.testlane]
services = []

[tool.pytest.ini_options]
asyncio_default_fixture_loop_scope = "function"
"""

FIXTURE_CONFTEST = """\
import logging

import pytest

log = logging.getLogger("app.db")


@pytest.fixture
def accounts_db():
    log.info("connecting to the accounts database")
    log.warning("accounts database: schema version 41, expected 42")
    raise RuntimeError("accounts database is not migrated: schema version 41, expected 42")
"""

FIXTURE_TEST = """\
import pytest


@pytest.mark.parametrize("n", range(50))
def test_account_{part}(accounts_db, n):
    assert accounts_db.balance(n) == 0
"""

PASSING = """\
import pytest


@pytest.mark.parametrize("n", range({count}))
def test_ok(n):
    assert n + 0 == n
"""

SIX_A = """\
def total(items):
    return sum(items) + 1  # the bug


def test_total():
    assert total([1, 2, 3]) == 6


def test_names():
    assert sorted(["bob", "ada", "cy"]) == ["ada", "bob", "cyd"]


def test_config():
    config = {"host": "localhost", "port": 5432, "user": "app"}
    assert config == {"host": "localhost", "port": 5433, "user": "app"}
"""

SIX_B = """\
import pytest


def slugify(text):
    return text.lower().replace(" ", "_")


def test_slug():
    assert slugify("Hello World") == "hello-world"


def test_parse_int():
    assert int("42 ") == 42 and int("x") == 0


def test_raises():
    with pytest.raises(KeyError):
        {"a": 1}.get("b")
"""

TIMEOUT = """\
import time

import pytest


@pytest.mark.timeout(1)
def test_waits_for_a_reply_that_never_comes():
    time.sleep(30)
"""

IT_PYPROJECT = """\
[project]
name = "bench-{name}"
version = "0"

[tool.testlane]
services = ["postgres"]
{testlane}

[tool.pytest.ini_options]
asyncio_default_fixture_loop_scope = "function"
"""

ACCOUNTS_SQL = """\
CREATE TABLE accounts (
    id serial PRIMARY KEY,
    balance int NOT NULL DEFAULT 0
);
"""

# The typo on line 4 ("acounts"): the server names the relation, not the line.
BROKEN_SQL = """\
-- orders belong to an account
CREATE TABLE orders (
    id serial PRIMARY KEY,
    account_id int REFERENCES acounts (id),
    total int NOT NULL
);
"""

IT_TEST = """\
import pytest


@pytest.mark.parametrize("n", range(3))
def test_{part}(pg_conn, n):
    assert pg_conn.execute("SELECT count(*) FROM orders").fetchone()[0] == 0
"""

UNIT = """\
def test_unit():
    assert 1 + 1 == 2
"""

ALEMBIC_INI = """\
[alembic]
script_location = %(here)s/alembic
"""

ALEMBIC_ENV = """\
from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
"""

ALEMBIC_REVISION = """\
from alembic import op

revision = "0001"
down_revision = None


def upgrade():
    op.execute("CREATE TABLE accounts (id serial PRIMARY KEY)")
    op.execute("CREATE TABLE orders (id serial PRIMARY KEY, account_id int REFERENCES acounts (id))")
"""

SETUP_SCRIPT = """\
import sys

print("loading fixtures from fixtures/orders.json")
sys.exit("fixtures/orders.json: no such file")
"""

MIXED_CONFTEST = """\
import pytest


@pytest.fixture
def inventory():
    raise ConnectionError("inventory service unreachable at localhost:9")
"""

MIXED_CART = """\
import pytest


def total(items):
    return sum(item["price"] for item in items)  # forgets the quantity


def test_total():
    assert total([{"price": 5, "qty": 2}, {"price": 3, "qty": 1}]) == 13


def test_lookup():
    prices = {"apple": 1, "pear": 2}
    assert prices["banana"] == 3


@pytest.mark.parametrize("qty", [1, 2, 3])
def test_positive_quantity(qty):
    assert qty - 4 > 0


@pytest.mark.skip(reason="needs the payment sandbox")
def test_payment():
    pass


@pytest.mark.xfail(reason="rounding bug #12")
def test_rounding():
    assert round(2.675, 2) == 2.68


def test_stock(inventory):
    assert inventory.count("apple") == 1
"""

THREAD = """\
import threading


def work():
    return 1 / 0


def test_background_worker():
    thread = threading.Thread(target=work, name="worker-1")
    thread.start()
    thread.join()
"""

SKIPPED = """\
import pytest


@pytest.mark.parametrize("n", range(5))
def test_orders(pg_conn, n):
    assert pg_conn.execute("SELECT 1").fetchone() == (1,)
"""


@dataclass(frozen=True)
class Suite:
    """A generated project, how it is run, and what its report must keep."""

    about: str
    files: dict[str, str]
    args: tuple[str, ...] = ()  # added to every run (``--it`` for the integration suites)
    where: tuple[str, ...] = ()  # the file:line an agent must be pointed at
    cause: tuple[str, ...] = ()  # the words that name the cause
    services: bool = False  # starts Postgres (needs the machine's binaries)


def _it_files(extra: dict[str, str]) -> dict[str, str]:
    return {
        **{f"tests/test_{part}_it.py": IT_TEST.format(part=part) for part in ("accounts", "orders", "reports")},
        "tests/test_unit.py": UNIT,
        **extra,
    }


SUITES: dict[str, Suite] = {
    "fixture": Suite(
        "one broken fixture failing 200 tests (+10 passing)",
        {
            "tests/conftest.py": FIXTURE_CONFTEST,
            **{f"tests/test_accounts_{part}.py": FIXTURE_TEST.format(part=part) for part in range(4)},
            "tests/test_ok.py": PASSING.format(count=10),
        },
        where=("tests/conftest.py:12",),
        cause=("accounts database is not migrated",),
    ),
    "six": Suite(
        "six unrelated assertion failures (+20 passing)",
        {
            "tests/test_a.py": SIX_A,
            "tests/test_b.py": SIX_B,
            "tests/test_ok.py": PASSING.format(count=20),
        },
        where=("tests/test_a.py:6", "tests/test_b.py:17"),
        cause=("assert 7 == 6", "DID NOT RAISE"),
    ),
    "timeout": Suite(
        "one test hanging past its timeout (+10 passing)",
        {
            "tests/test_slow.py": TIMEOUT,
            "tests/test_ok.py": PASSING.format(count=10),
        },
        where=("tests/test_slow.py:8",),
        cause=("Timeout",),
    ),
    "green": Suite("all green (50 tests)", {"tests/test_ok.py": PASSING.format(count=50)}),
    "migration": Suite(
        "a broken .sql migration under 9 integration tests (+1 unit)",
        _it_files(
            {
                "pyproject.toml": IT_PYPROJECT.format(name="migration", testlane='db.migrations = "migrations"'),
                "migrations/001_accounts.sql": ACCOUNTS_SQL,
                "migrations/002_orders.sql": BROKEN_SQL,
            }
        ),
        args=("--it",),
        where=("migrations/002_orders.sql:4",),
        cause=('relation "acounts" does not exist',),
        services=True,
    ),
    "alembic": Suite(
        "a broken Alembic revision under 9 integration tests (+1 unit)",
        _it_files(
            {
                "pyproject.toml": IT_PYPROJECT.format(name="alembic", testlane='db.migrations = "alembic.ini"'),
                "alembic.ini": ALEMBIC_INI,
                "alembic/env.py": ALEMBIC_ENV,
                "alembic/versions/0001_orders.py": ALEMBIC_REVISION,
            }
        ),
        args=("--it",),
        where=("alembic/versions/0001_orders.py:9",),
        cause=('relation "acounts" does not exist',),
        services=True,
    ),
    "setup": Suite(
        "a set-up command that exits 1 under 9 integration tests (+1 unit)",
        _it_files(
            {
                "pyproject.toml": IT_PYPROJECT.format(name="setup", testlane='setup = ["python load_fixtures.py"]'),
                "load_fixtures.py": SETUP_SCRIPT,
            }
        ),
        args=("--it",),
        cause=("python load_fixtures.py", "fixtures/orders.json: no such file"),
        services=True,
    ),
    "mixed": Suite(
        "a mixed failing suite: an assertion, one failing in 3 parameter sets, a KeyError, a broken fixture, "
        "a skip, an xfail (+10 passing)",
        {
            "tests/conftest.py": MIXED_CONFTEST,
            "tests/test_cart.py": MIXED_CART,
            "tests/test_ok.py": PASSING.format(count=10),
        },
        where=("tests/test_cart.py:9", "tests/test_cart.py:14", "tests/test_cart.py:19", "tests/conftest.py:6"),
        cause=("assert 8 == 13", "KeyError", "inventory service unreachable"),
    ),
    "thread": Suite(
        "an exception raised in a thread the test started (+10 passing)",
        {"tests/test_worker.py": THREAD, "tests/test_ok.py": PASSING.format(count=10)},
        where=("tests/test_worker.py:5",),
        cause=("ZeroDivisionError",),
    ),
    "skipped": Suite(
        "integration tests run without the integration flag: all 5 skipped",
        {
            "pyproject.toml": IT_PYPROJECT.format(name="skipped", testlane=""),
            "tests/test_orders_it.py": SKIPPED,
        },
        cause=("skipped",),
    ),
}

MODES = {"pytest -q": ["-q"], "pytest-receptor": ["--receptor=llm"], "digest": ["--digest"]}
RECEPTOR = "pytest-receptor"
# Variables that would change what pytest prints: an outer run's.
STRIP_ENV = (
    *RUN_SCOPED_ENV,
    "TESTLANE_IT",
    "PYTEST_ADDOPTS",
    "PYTEST_XDIST_WORKER",
    "PYTEST_CURRENT_TEST",
    "PYTHONPATH",
)
# A "rerun:" line (the digest's and pytest-receptor's), without the digest's "   (note)".
RERUN = re.compile(r"^\s*rerun: (.+?)(?:\s{3}\(.*\))?\s*$", re.MULTILINE)
FAILING = ("failed", "error")


def write_suite(name: str, directory: Path) -> Path:
    """Write suite ``name`` as a project in ``directory``; return the directory."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "pyproject.toml").write_text(PYPROJECT.format(name=name))
    for rel, content in SUITES[name].files.items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return directory


def run_pytest(
    directory: Path, args: list[str], timeout: float = 300, *, pythonpath: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """pytest in ``directory``, as a user would run it there (no outer run's variables)."""
    return run_command([sys.executable, "-m", "pytest", *args], directory, timeout, pythonpath)


def run_command(
    argv: list[str], directory: Path, timeout: float = 300, pythonpath: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in STRIP_ENV}
    # No cache files in the suites' directories; in the environment, not the command line, where the digest's
    # rerun commands would repeat it (they repeat the user's options) and it would count against them.
    env["PYTEST_ADDOPTS"] = "-p no:cacheprovider"
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(argv, cwd=directory, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def ensure_receptor(directory: Path) -> Path:
    """pytest-receptor from PyPI in ``directory`` (installed there on first use); the directory."""
    if not (directory / "pytest_receptor").is_dir():
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(directory), RECEPTOR],
            check=True,
        )
    return directory


def receptor_version(directory: Path) -> str:
    found = sorted(directory.glob("pytest_receptor-*.dist-info"))
    return found[-1].name.removeprefix("pytest_receptor-").removesuffix(".dist-info") if found else "?"


def failing_tests(directory: Path, argv: list[str], pythonpath: Path | None = None) -> set[str] | None:
    """The node ids that failed or errored when ``argv`` ran (read from testlane's JSON report)."""
    report = directory / ".bench-report.json"
    report.unlink(missing_ok=True)
    run_command([*argv, "--report-json", str(report)], directory, pythonpath=pythonpath)
    if not report.is_file():
        return None
    tests = json.loads(report.read_text())["tests"]
    return {t["nodeid"] for t in tests if t["outcome"] in FAILING}


def reruns(output: str, directory: Path, expected: set[str], pythonpath: Path | None) -> bool | None:
    """Whether the output's rerun commands, run as printed, fail again on every test in ``expected``
    (None when nothing failed: no rerun command is needed)."""
    if not expected:
        return None
    seen: set[str] = set()
    for command in RERUN.findall(output):
        argv = shlex.split(command)
        if not argv or Path(argv[0]).name != "pytest":
            continue
        failed = failing_tests(directory, [sys.executable, "-m", "pytest", *argv[1:]], pythonpath)
        seen |= failed or set()
    return expected <= seen


def measure(base: Path, names: list[str], receptor: Path) -> dict[str, dict[str, dict[str, object]]]:
    results: dict[str, dict[str, dict[str, object]]] = {}
    for name in names:
        suite = SUITES[name]
        directory = write_suite(name, base / name)
        args = list(suite.args)
        expected = failing_tests(directory, [sys.executable, "-m", "pytest", *args]) or set()
        results[name] = {}
        for mode, mode_args in MODES.items():
            pythonpath = receptor if mode == "pytest-receptor" else None
            done = run_pytest(directory, [*args, *mode_args], pythonpath=pythonpath)
            out = done.stdout
            results[name][mode] = {
                "chars": len(out),
                "exit": done.returncode,
                "file:line": all(w in out for w in suite.where) if suite.where else None,
                "cause": all(c in out for c in suite.cause) if suite.cause else None,
                "rerun": reruns(out, directory, expected, pythonpath),
            }
    return results


def _mark(value: object) -> str:
    return "—" if value is None else ("yes" if value else "**no**")


def table(results: dict[str, dict[str, dict[str, object]]]) -> list[str]:
    lines = [
        "| suite | `pytest -q` | pytest-receptor | digest | digest / receptor |",
        "|---|---|---|---|---|",
    ]
    for name, row in results.items():
        q, r, d = (int(row[mode]["chars"]) for mode in MODES)  # type: ignore[call-overload]
        ratio = f"{d / r:.2f}" if r else "—"
        lines.append(f"| {name}: {SUITES[name].about} | {q:,} | {r:,} | {d:,} | {ratio} |")
    lines += [
        "",
        "| suite | output | exit | file:line | cause | rerun reruns the failures |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in results.items():
        for mode, facts in row.items():
            lines.append(
                f"| {name} | {mode} | {facts['exit']} | {_mark(facts['file:line'])} | {_mark(facts['cause'])} "
                f"| {_mark(facts['rerun'])} |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--keep", type=Path, help="write the suites here and keep them")
    parser.add_argument("--suite", action="append", choices=list(SUITES), help="only these suites (repeatable)")
    parser.add_argument(
        "--receptor-dir",
        type=Path,
        default=Path.home() / ".cache" / "testlane-bench" / "pytest-receptor",
        help="where pytest-receptor is installed (on first use)",
    )
    args = parser.parse_args()
    names = args.suite or list(SUITES)
    receptor = ensure_receptor(args.receptor_dir)
    if args.keep:
        results = measure(args.keep, names, receptor)
    else:
        with tempfile.TemporaryDirectory(prefix="testlane-bench-digest-") as tmp:
            results = measure(Path(tmp), names, receptor)
    if args.json:
        print(json.dumps({"pytest-receptor": receptor_version(receptor), "suites": results}, indent=2))
        return
    print(f"pytest-receptor {receptor_version(receptor)}, {sys.executable} -m pytest")
    print("\n".join(table(results)))


if __name__ == "__main__":
    main()
