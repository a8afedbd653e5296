"""``async def`` tests no plugin ran: one message saying what to install and configure.

pytest runs no coroutine itself; pytest-asyncio does (testlane's docs write async tests and fixtures
for its ``asyncio_mode = "auto"``). Without it — or with it in its default strict mode, where only
tests marked ``@pytest.mark.asyncio`` run — pytest's own error lists five async frameworks and says
nothing of the configuration. Only pytest's own call knows that no plugin ran a test, so the test's call is
wrapped (:mod:`testlane.pytest_plugin.runtest`) and pytest's refusal replaced with that message. Only in an
opted-in project.
"""

from __future__ import annotations

import inspect

import pytest

__all__ = ["no_async_runner", "no_runner_failure"]

INSTALL = "pip install pytest-asyncio (or pip install 'testlane[all]')"
CONFIG = (
    'asyncio_mode = "auto" under [tool.pytest.ini_options] in pyproject.toml (testlane init writes it; '
    "testlane's async examples are written for it)"
)


def no_async_runner(config: pytest.Config, what: str) -> str:
    """Why ``what`` (an async test or fixture) did not run, and the fix: install, or configure."""
    if config.pluginmanager.has_plugin("asyncio"):  # pytest-asyncio, in strict mode
        return (
            f"{what} did not run: pytest-asyncio is in strict mode, where it runs only tests marked "
            f"@pytest.mark.asyncio. Set {CONFIG}, or mark the test."
        )
    return (
        f"{what} did not run: pytest-asyncio is not installed (or is disabled), and nothing else here runs "
        f"async code. {INSTALL}, and set {CONFIG}."
    )


def no_runner_failure(item: pytest.Item, exc: BaseException) -> BaseException | None:
    """The failure to raise instead of ``exc``, pytest's own refusal of an ``async def`` test no plugin ran
    (called by :mod:`testlane.pytest_plugin.runtest` when a test's call fails); ``None`` for any other failure."""
    # pytest's own refusal (its text is the only sign: a test run by anyio may fail with pytest.fail too)
    if "not natively supported" not in str(exc):
        return None
    obj = getattr(item, "obj", None)
    if not (inspect.iscoroutinefunction(obj) or inspect.isasyncgenfunction(obj)):
        return None
    what = f"{item.nodeid} (an `async def` test)"
    return pytest.fail.Exception(no_async_runner(item.config, what), pytrace=False)
