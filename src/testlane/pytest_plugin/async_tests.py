"""``async def`` tests no plugin ran: one message saying what to install and configure.

pytest runs no coroutine itself; pytest-asyncio does (testlane's docs write async tests and fixtures
for its ``asyncio_mode = "auto"``). Without it — or with it in its default strict mode, where only
tests marked ``@pytest.mark.asyncio`` run — pytest's own error lists five async frameworks and says
nothing of the configuration. Only pytest's own call knows that no plugin ran a test, so this wraps
the call and replaces pytest's refusal with that message. Registered only in an opted-in project.
"""

from __future__ import annotations

import inspect
from collections.abc import Generator

import pytest

__all__ = ["no_async_runner"]

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


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, object, object]:
    try:
        return (yield)
    except pytest.fail.Exception as exc:
        # pytest's own refusal (its text is the only sign: a test run by anyio may fail with pytest.fail too)
        obj = pyfuncitem.obj
        is_async = inspect.iscoroutinefunction(obj) or inspect.isasyncgenfunction(obj)
        if not is_async or "not natively supported" not in str(exc):
            raise
        what = f"{pyfuncitem.nodeid} (an `async def` test)"
        raise pytest.fail.Exception(no_async_runner(pyfuncitem.config, what), pytrace=False) from None
