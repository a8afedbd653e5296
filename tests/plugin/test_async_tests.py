"""`async def` tests nothing runs (issue 16): one message naming what to install and configure, only in opted-in
projects; `testlane init`'s pytest table is the configuration that makes them run."""

from __future__ import annotations

import pytest

from testlane.cli.init import template
from tests.helpers import run_inner

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("plain_env")]

LOOP_SCOPE = '[tool.pytest.ini_options]\nasyncio_default_fixture_loop_scope = "function"\n'
OPTED_IN = "[tool.testlane]\nservices = []\n" + LOOP_SCOPE

ASYNC_SUITE = """
import asyncio

async def test_waits():
    await asyncio.sleep(0)

def test_after_it():
    pass
"""

INSTALL = "pip install pytest-asyncio (or pip install 'testlane[all]')"
CONFIG = 'asyncio_mode = "auto" under [tool.pytest.ini_options]'


def suite(pytester: pytest.Pytester, pyproject: str) -> None:
    pytester.makefile(".toml", pyproject=pyproject)
    pytester.makepyfile(test_async=ASYNC_SUITE)


def test_an_async_test_without_pytest_asyncio_says_what_to_install_and_configure(pytester: pytest.Pytester) -> None:
    suite(pytester, OPTED_IN)
    result = run_inner(pytester, "-p", "no:asyncio")
    result.assert_outcomes(passed=1, failed=1)
    output = result.stdout.str()
    message = "test_async.py::test_waits (an `async def` test) did not run: pytest-asyncio is not installed"
    assert message in output and INSTALL in output and CONFIG in output
    assert "not natively supported" not in output and "pytest-tornasync" not in output


def test_an_async_test_under_strict_pytest_asyncio_says_to_set_auto_mode(pytester: pytest.Pytester) -> None:
    suite(pytester, OPTED_IN)
    result = run_inner(pytester)
    result.assert_outcomes(passed=1, failed=1)
    output = result.stdout.str()
    assert "did not run: pytest-asyncio is in strict mode, where it runs only tests marked" in output
    assert CONFIG in output and "not natively supported" not in output


def test_the_pytest_table_init_writes_runs_async_tests(pytester: pytest.Pytester) -> None:
    suite(pytester, "[tool.testlane]\nservices = []\n" + template("pytest.toml.tmpl"))
    run_inner(pytester).assert_outcomes(passed=2)


def test_a_project_that_did_not_opt_in_keeps_pytests_own_message(pytester: pytest.Pytester) -> None:
    suite(pytester, LOOP_SCOPE)
    result = run_inner(pytester, "-p", "no:asyncio")
    result.assert_outcomes(passed=1, failed=1)
    assert "not natively supported" in result.stdout.str() and INSTALL not in result.stdout.str()
