"""Size of the failure digest next to pytest's own output, on generated failing suites.

Usage: python bench/digest.py [--json] [--keep DIR]

Four suites (``SUITES``; testlane's tests assert the digest's content on the same ones):

* ``fixture``: one broken fixture failing 200 tests (4 files of 50), 10 passing tests;
* ``six``: six unrelated assertion failures in two files, 20 passing tests;
* ``timeout``: one test that hangs past its 1 s timeout, 10 passing tests;
* ``green``: 50 passing tests.

Each suite runs three times in a fresh subprocess: ``pytest -q``, ``pytest --tb=short`` and
``pytest --digest``; the figure is the number of characters each prints on stdout. The target (issue 7):
the digest at most 1/50 of ``pytest -q`` on the fixture suite, and never longer than it on any suite.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
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

SUITES: dict[str, dict[str, str]] = {
    "fixture": {
        "tests/conftest.py": FIXTURE_CONFTEST,
        **{f"tests/test_accounts_{part}.py": FIXTURE_TEST.format(part=part) for part in range(4)},
        "tests/test_ok.py": PASSING.format(count=10),
    },
    "six": {
        "tests/test_a.py": SIX_A,
        "tests/test_b.py": SIX_B,
        "tests/test_ok.py": PASSING.format(count=20),
    },
    "timeout": {
        "tests/test_slow.py": TIMEOUT,
        "tests/test_ok.py": PASSING.format(count=10),
    },
    "green": {
        "tests/test_ok.py": PASSING.format(count=50),
    },
}

MODES = {"pytest -q": ["-q"], "pytest --tb=short": ["--tb=short"], "digest": ["--digest"]}
# Variables that would change what pytest prints: an outer run's.
STRIP_ENV = (*RUN_SCOPED_ENV, "TESTLANE_IT", "PYTEST_ADDOPTS", "PYTEST_XDIST_WORKER", "PYTEST_CURRENT_TEST")


def write_suite(name: str, directory: Path) -> Path:
    """Write suite ``name`` as a project in ``directory``; return the directory."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "pyproject.toml").write_text(PYPROJECT.format(name=name))
    for rel, content in SUITES[name].items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return directory


def run_pytest(directory: Path, args: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """pytest in ``directory``, as a user would run it there (no outer run's variables)."""
    env = {k: v for k, v in os.environ.items() if k not in STRIP_ENV}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def measure(base: Path) -> dict[str, dict[str, int]]:
    sizes: dict[str, dict[str, int]] = {}
    for name in SUITES:
        directory = write_suite(name, base / name)
        sizes[name] = {mode: len(run_pytest(directory, args).stdout) for mode, args in MODES.items()}
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--keep", type=Path, help="write the suites here and keep them")
    args = parser.parse_args()
    if args.keep:
        sizes = measure(args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="testlane-bench-digest-") as tmp:
            sizes = measure(Path(tmp))
    if args.json:
        print(json.dumps(sizes, indent=2))
        return
    print("| suite | `pytest -q` | `pytest --tb=short` | digest | digest / `pytest -q` |")
    print("|---|---|---|---|---|")
    for name, row in sizes.items():
        ratio = row["digest"] / row["pytest -q"] if row["pytest -q"] else float("nan")
        print(
            f"| {name} | {row['pytest -q']:,} | {row['pytest --tb=short']:,} | {row['digest']:,} | "
            f"{ratio:.3f} (1/{1 / ratio:.0f}) |"
        )


if __name__ == "__main__":
    main()
