"""Each test report's consumers: one ``pytest_runtest_makereport`` and one ``pytest_runtest_logreport``
implementation that call the callables registered here, in the order they were registered.

A report is made and logged for every phase of every test: a pluggy implementation apiece for the databases'
bookkeeping, the discipline's findings, the failure context, the findings and lane counters and the report
collector cost a test that uses no service about 30 µs of the 0.08 ms that pluggy's calls of testlane's hooks
took (docs/benchmarks.md, "The plugin alone"); a loop over plain callables costs a fraction of that. Registered
on first use, so the reports (:mod:`testlane.reports`, which sit a layer above and register the failure context
and the collector) get their reports whether or not testlane's other pytest plugin is enabled.
"""

from __future__ import annotations

from collections.abc import Callable, Generator

import pytest

__all__ = ["on_logreport", "on_makereport"]

MakeReport = Callable[[pytest.Item, "pytest.CallInfo[None]", pytest.TestReport], None]
LogReport = Callable[[pytest.TestReport], None]


class _ReportHooks:
    def __init__(self) -> None:
        self.decorators: list[MakeReport] = []
        self.observers: list[LogReport] = []

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        if call.excinfo is not None:
            _give_every_entry_a_line(call)
        report = yield
        for decorate in self.decorators:
            decorate(item, call, report)
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for observe in self.observers:
            observe(report)


def _give_every_entry_a_line(call: pytest.CallInfo[None]) -> None:
    """A failure whose traceback has an entry with no line number (see
    :func:`testlane.core.tracebacks.with_line_numbers`) gets one, before pytest's report reads it."""
    from testlane.core.tracebacks import with_line_numbers

    assert call.excinfo is not None
    exc = call.excinfo.value
    tb = with_line_numbers(call.excinfo.tb)
    if tb is not None and tb is not call.excinfo.tb:
        call.excinfo = pytest.ExceptionInfo.from_exc_info((type(exc), exc.with_traceback(tb), tb))


_hooks_key = pytest.StashKey[_ReportHooks]()


def _hooks(config: pytest.Config) -> _ReportHooks:
    hooks = config.stash.get(_hooks_key, None)
    if hooks is None:
        hooks = config.stash[_hooks_key] = _ReportHooks()
        config.pluginmanager.register(hooks, "testlane-report-hooks")
    return hooks


def on_makereport(config: pytest.Config, decorate: MakeReport) -> None:
    """Call ``decorate(item, call, report)`` on each report of a test this process runs, as it is made."""
    _hooks(config).decorators.append(decorate)


def on_logreport(config: pytest.Config, observe: LogReport) -> None:
    """Call ``observe(report)`` on each test report logged in this process (the xdist controller: the workers')."""
    _hooks(config).observers.append(observe)
