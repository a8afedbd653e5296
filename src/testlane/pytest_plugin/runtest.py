"""Each test's hooks: one implementation per phase, which calls testlane's per-test concerns in order.

The concerns keep their code in their own modules: the lanes' check (:mod:`.lanes`), the network guard's
(:mod:`.network_guard`), the seam check (:mod:`.seams`), the discipline checks (:mod:`.discipline`), the server
logs' offsets (:mod:`.server_logs`) and the async-test message (:mod:`.async_tests`). Each was a hook
implementation of its own: pluggy called about 28 of testlane's for every test (each phase, each report, each log
report), some 0.08 ms of a test that uses no service (docs/benchmarks.md, "The plugin alone"). The lanes' network
guard stays the one ``pytest_runtest_protocol`` wrapper (:mod:`.lanes`); each report's consumers (the databases'
bookkeeping, the findings, the failure context, the collector...) are called by :mod:`.report_hooks`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testlane.pytest_plugin import async_tests, discipline, lanes, network_guard, seams, server_logs

__all__: list[str] = []


# On an item: a check before its fixtures are set up may fail it (decided once, when collection is done).
_checked_key = pytest.StashKey[bool]()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Which tests the set-up checks could fail (by their lane, fixtures and marks, known once collected); when
    there is one, the checks are registered: otherwise no test pays for a call of them."""
    checked = False
    for item in session.items:
        if lanes.may_fail_setup(item) or seams.may_fail_setup(item):
            item.stash[_checked_key] = checked = True
    manager = session.config.pluginmanager
    if checked and manager.get_plugin(_SETUP_CHECKS) is None:
        manager.register(_SetupChecks(), _SETUP_CHECKS)


_SETUP_CHECKS = "testlane-setup-checks"


class _SetupChecks:
    """The checks before a test's fixtures are set up: a plain implementation, so that pytest's skip marks
    (evaluated by a ``tryfirst`` one) come first; an object because this module has its ``pytest_runtest_setup``
    wrapper."""

    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        if item.stash.get(_checked_key, False):
            seams.check_setup(item)
            lanes.check_setup(item)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    """Outermost: the discipline's baselines before anything of the set-up runs (other wrappers included)."""
    # This wrapper's frame is in every set-up error's traceback: not the user's code, so pytest does not show it.
    __tracebackhide__ = True
    watch = discipline.before_setup(item)
    try:
        server_logs.record_offsets(item)
        return (yield)
    finally:
        discipline.after_setup(item, watch)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    __tracebackhide__ = True  # as in pytest_runtest_setup
    server_logs.catch_up(item)
    try:
        result = yield
    except pytest.fail.Exception as exc:
        replaced = async_tests.no_runner_failure(item, exc)
        if replaced is None:
            raise
        raise replaced from None
    discipline.after_call(item)
    return result


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Innermost: after the fixtures' teardown, before other plugins' wrappers see its outcome."""
    __tracebackhide__ = True  # as in pytest_runtest_setup
    try:
        result = yield
        network_guard.check_swallowed(item)
        return result
    finally:
        discipline.after_test(item)
