"""Runtime discipline: tests fail instead of hanging, and say what they left behind.

Each check is switchable in ``[tool.testlane.discipline]``:

* **timeouts** (``timeout_unit`` 5 s, ``timeout_it`` 60 s): every test without its own
  ``@pytest.mark.timeout`` gets its lane's, through pytest-timeout's *signal* method: the test
  fails with the stack of every thread, and the run (and its reports) carry on. A ``--timeout``
  option or ``timeout`` ini value of your own takes precedence;
* **background errors** (``fail``): an exception in another thread, an unraisable exception
  (``__del__``, callbacks), or an asyncio task exception never retrieved fails the test during which
  it happened (pytest's own collection of the first two, made errors; the third detected here);
* **leaks** (``warn``): threads, child processes, listening sockets and asyncio tasks that a test
  (its body or its function-scoped fixtures) started and left running are reported with its name;
* **environment** (``warn``): variables a test changed are restored after it, and reported. What a
  wider-scoped (class, module, package, session) fixture sets up or tears down is not the test's change:
  it moves the baseline the next tests are compared with.

``warn`` reports a *finding*: listed in the "testlane findings" section at the end of the run, in the
digest's "warnings" and in the JSON report's ``findings``, named with the test — not a Python warning, so a project's
``filterwarnings = error`` does not turn it into an error; ``fail`` fails the test's teardown;
``off`` does nothing (the environment is neither compared nor restored). Background errors set to ``warn`` stay
pytest's own warnings (``PytestUnhandledThreadExceptionWarning``...), which they are, and are findings too.

A background error is described as the exception itself with its project line
(:mod:`testlane.core.tracebacks`); a timeout records where the test's coroutines are suspended.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import select
import stat
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from testlane.core.environment import bookkeeping_names
from testlane.core.redact import redact, redact_nodeid

__all__ = ["FINDINGS_ATTR", "Finding", "finding_from_warning", "location_text", "test_location"]

FINDINGS_ATTR = "testlane_findings"  # on a teardown report: the test's findings, as dicts (xdist ships them)


@dataclass(frozen=True)
class Finding:
    """A discipline finding set to ``warn``: ``kind`` is ``leak``, ``environment``, ``asyncio`` or
    ``thread`` (an exception in another thread, or an unraisable one); ``location`` is ``path:line`` of the test."""

    nodeid: str
    kind: str
    message: str
    location: str

    def line(self) -> str:
        """The finding as testlane prints it: credentials masked, in its test's node id too."""
        return f"{redact_nodeid(self.nodeid)} {redact(self.message)}"


# A plain class with slots, not a dataclass: made once per test or more, and a dataclass costs every run
# about 0.5 ms to build at import (its generated methods are compiled); nothing compares or prints these.
class Snapshot:
    """What the process is running at one moment (cheap to take: no details resolved)."""

    __slots__ = ("children", "descriptors", "tasks", "threads")

    def __init__(
        self, threads: set[threading.Thread], children: set[int], descriptors: Descriptors, tasks: set[int]
    ) -> None:
        self.threads = threads  # the objects, not their idents: an ended thread's ident is reused
        self.children = children
        self.descriptors = descriptors
        self.tasks = tasks

    @property
    def sockets(self) -> set[int]:
        return self.descriptors.sockets

    @classmethod
    def take(cls, since: Snapshot | None = None) -> Snapshot:
        """What runs now; ``since``: an earlier snapshot, whose parts are kept when they did not change, and which
        is itself returned when nothing did (the common case after a test: nothing to compare)."""
        if since is None:
            return cls(_threads(), _child_pids(), Descriptors.take(), {id(t) for t in _live_tasks()})
        descriptors = Descriptors.take(since.descriptors)
        threads = _threads(since.threads)
        children = _child_pids()
        tasks = _live_tasks()
        if (
            descriptors is since.descriptors
            and threads is since.threads
            and not tasks
            and not since.tasks
            and not children
            and not since.children
        ):
            return since
        return cls(threads, children, descriptors, {id(t) for t in tasks})


@dataclass(frozen=True)
class BackgroundError:
    """An exception raised away from the test's own stack: where (``context``) and the exception itself."""

    context: str
    exc: BaseException | None

    def text(self, rootdir: Path) -> str:
        from testlane.core.tracebacks import describe  # only for a failure: not imported at start-up

        return f"{self.context}: {describe(self.exc, rootdir)}" if self.exc is not None else self.context


# A plain class with slots, not a dataclass: made once per test or more, and a dataclass costs every run
# about 0.5 ms to build at import (its generated methods are compiled); nothing compares or prints these.
class TestWatch:
    """Per-test state: the session's discipline settings, snapshots, the environment, asyncio errors,
    higher-scope fixtures set up."""

    __test__ = False
    __slots__ = ("after_setup", "asyncio_errors", "before", "env", "handler", "in_setup", "settings", "wide_fixtures")

    def __init__(self, settings: Any, env: EnvSnapshot | None = None) -> None:
        self.settings = settings  # [tool.testlane.discipline], looked up once per test
        self.before: Snapshot | None = None
        self.after_setup: Snapshot | None = None
        self.env = env  # the baseline: before the test, plus wider-scoped fixtures' changes
        self.asyncio_errors: list[BackgroundError] = []
        self.wide_fixtures: list[str] = []
        self.handler: _AsyncioErrors | None = None
        self.in_setup = False


watch_key = pytest.StashKey[TestWatch]()
findings_key = pytest.StashKey[list[Finding]]()
# The snapshot taken after the previous test's teardown. Between it and the next test's setup only
# pytest's own reporting runs, so it serves as that test's "before" and saves one snapshot per test.
last_snapshot_key = pytest.StashKey[Snapshot]()
# pytest's own, and testlane's bookkeeping (a fixture that starts the first server sets some): not the test's.
IGNORED_ENV = frozenset({"PYTEST_CURRENT_TEST", *bookkeeping_names()})
# The test being run: a wider-scoped fixture's teardown may run for another item's request.
current_watch_key = pytest.StashKey[TestWatch]()


discipline_settings_key = pytest.StashKey[Any]()


def _settings(config: pytest.Config) -> Any:
    """The session's ``[tool.testlane.discipline]`` settings (looked up once, then kept in the stash)."""
    d = config.stash.get(discipline_settings_key, None)
    if d is None:
        from testlane.pytest_plugin.plugin import plugin_of

        d = config.stash[discipline_settings_key] = plugin_of(config).settings.discipline
    return d


# --------------------------------------------------------------------------- configure: timeouts, filters


class _Findings:
    """Collects the findings from the reports (the xdist controller gets the workers') and lists them."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.findings: list[Finding] = []
        # nodeid -> the test's report.location (path, 0-based line, name), written out only for a warning
        self.locations: dict[str, tuple[str, int | None, str]] = {}

    def observe(self, report: pytest.TestReport) -> None:
        """Each log report (:func:`testlane.pytest_plugin.report_hooks.on_logreport`)."""
        self.locations.setdefault(report.nodeid, report.location)  # the same for each phase of a test
        # From the report's __dict__: a getattr of a missing attribute raises (and catches) an AttributeError.
        findings = vars(report).get(FINDINGS_ATTR)
        if findings:
            self.findings += [Finding(**data) for data in findings]

    def pytest_warning_recorded(self, warning_message: warnings.WarningMessage, nodeid: str) -> None:
        location = self.locations.get(nodeid)
        where = location_text(location) if location is not None else None
        finding = finding_from_warning(self.config, warning_message, nodeid, where)
        if finding is not None:
            self.findings.append(finding)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.findings or hasattr(self.config, "workerinput"):
            return
        terminalreporter.section("testlane findings", yellow=True)
        for finding in self.findings:
            terminalreporter.write_line(f"{finding.location}: {finding.line()}")
        count = len(self.findings)
        terminalreporter.write_line(
            f"testlane: {count} finding{'s' if count != 1 else ''}; they do not fail the run. To make them "
            'failures: [tool.testlane.discipline] leaks = "fail" / env_changes = "fail"; to silence them: "off".'
        )


_BACKGROUND_WARNINGS = {
    "PytestUnhandledThreadExceptionWarning": "thread",
    "PytestUnraisableExceptionWarning": "thread",
}


def test_location(report: pytest.TestReport) -> str:
    """A finding's ``location``: the test's ``path:line``."""
    return location_text(report.location)


def location_text(location: tuple[str, int | None, str]) -> str:
    """``path:line`` (1-based) of a report's ``location`` (path, 0-based line, name)."""
    path, lineno, _ = location
    return f"{path}:{(lineno or 0) + 1}"


def finding_from_warning(
    config: pytest.Config, warning_message: warnings.WarningMessage, nodeid: str, location: str | None
) -> Finding | None:
    """pytest's warning for an exception in another thread (or an unraisable one), with ``background_errors
    = "warn"``, as a finding of the test during which it happened: the exception and its project line.
    ``location`` is the test's (:func:`test_location`, known from its reports)."""
    kind = _BACKGROUND_WARNINGS.get(type(warning_message.message).__name__)
    if kind is None or not nodeid or _settings(config).background_errors != "warn":
        return None
    rootdir = Path(str(config.rootpath)).resolve()
    text = str(warning_message.message)
    where = text.strip().splitlines()[0] if text.strip() else "exception"
    from testlane.core.tracebacks import describe_text

    message = f"{where[0].lower()}{where[1:]}: {describe_text(text, rootdir)}"
    return Finding(nodeid, kind, message, location or nodeid.split("::", 1)[0])


def pytest_configure(config: pytest.Config) -> None:
    from testlane.pytest_plugin.report_hooks import on_logreport, on_makereport

    on_makereport(config, attach_findings)
    if not hasattr(config, "workerinput"):  # a worker's findings go to the controller with its reports
        findings = _Findings(config)
        config.pluginmanager.register(findings, "testlane-findings")  # its terminal summary and warnings
        on_logreport(config, findings.observe)
    d = _settings(config)
    if d.background_errors != "off":
        action = "error" if d.background_errors == "fail" else "always"
        for category in ("PytestUnhandledThreadExceptionWarning", "PytestUnraisableExceptionWarning"):
            config.addinivalue_line("filterwarnings", f"{action}::pytest.{category}")
    _configure_timeouts(config, d)


# Whether the unit lane's timeout is pytest-timeout's default for this session (set by testlane, not the user).
unit_timeout_default_key = pytest.StashKey[bool]()


def _configure_timeouts(config: pytest.Config, d: Any) -> None:
    """The unit lane's timeout as pytest-timeout's own default (its ``--timeout`` option, given for the user),
    and the awaits recorded when a timeout interrupts an event loop.

    Runs before pytest-timeout's ``pytest_configure`` (this module is registered by testlane's tryfirst
    ``pytest_configure``), which reads the option. A default costs each test less than a marker on every item:
    pytest-timeout looks a marker up and parses it twice per test. Integration-lane tests whose timeout
    differs get the marker (:func:`pytest_collection_modifyitems`). A timeout or method of the user's own
    (option, ini value) keeps the per-item markers, as before. With testlane's own, the timers are the
    session's watchdog (:mod:`testlane.pytest_plugin.timeout_watchdog`), not a timer per test.
    """
    if not config.pluginmanager.hasplugin("timeout"):
        return
    _record_awaits_on_timeout(config)
    if _user_timeout(config) or _user_timeout_method(config) or d.timeout_unit <= 0:
        return
    config.option.timeout = d.timeout_unit
    config.option.timeout_method = "signal"
    config.stash[unit_timeout_default_key] = True
    from testlane.pytest_plugin import timeout_watchdog

    # Instead of a timer set and cancelled around each test; a timeout says what testlane's wrapper says.
    watchdog = timeout_watchdog.TimeoutWatchdog(_with_context(timeout_watchdog.timeout_sigalrm))
    config.pluginmanager.register(watchdog, "testlane-timeout-watchdog")


def _user_timeout_method(config: pytest.Config) -> bool:
    try:
        option = config.getoption("timeout_method", None)
    except ValueError:
        option = None
    try:
        ini = config.getini("timeout_method")
    except ValueError:
        ini = None
    return option not in (None, "") or ini not in (None, "")


def _user_timeout(config: pytest.Config) -> bool:
    if config.stash.get(unit_timeout_default_key, False):
        return False  # the option holds testlane's default
    try:
        option = config.getoption("timeout", None)
    except ValueError:
        option = None
    try:
        ini = config.getini("timeout")
    except ValueError:
        ini = None
    return option not in (None, "") or ini not in (None, "", "0", 0)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from testlane.pytest_plugin.lanes import lane_of

    if not config.pluginmanager.hasplugin("timeout") or _user_timeout(config):
        return
    d = _settings(config)
    default = d.timeout_unit if config.stash.get(unit_timeout_default_key, False) else None
    for item in items:
        seconds = d.timeout_it if lane_of(item) == "it" else d.timeout_unit
        if seconds == default or item.get_closest_marker("timeout") is not None:
            continue
        if seconds > 0 or default is not None:  # 0 under a default: the marker turns the default off
            item.add_marker(pytest.mark.timeout(seconds, method="signal"))
            item.stash[own_timeout_key] = True


# On an item: its timeout marker is testlane's (its lane's setting), not the project's.
own_timeout_key = pytest.StashKey[bool]()


def _timeout_setting(item: pytest.Item) -> str | None:
    """The setting that gave ``item`` its timeout (``timeout_unit`` or ``timeout_it``); ``None``: the project's
    own (a marker, ``--timeout``)."""
    from testlane.pytest_plugin.lanes import lane_of

    own = item.stash.get(own_timeout_key, False) or (
        item.config.stash.get(unit_timeout_default_key, False) and item.get_closest_marker("timeout") is None
    )
    if not own:
        return None
    return "timeout_it" if lane_of(item) == "it" else "timeout_unit"


def _name_the_setting(item: pytest.Item, exc: BaseException) -> None:
    """pytest-timeout's failure (``Timeout (>5.0s) from pytest-timeout.``) for a timeout of testlane's, with the
    setting that changes it; its traceback stays."""
    key = _timeout_setting(item)
    if key is None or not isinstance(exc, pytest.fail.Exception) or not exc.msg:
        return
    lane = "integration" if key == "timeout_it" else "unit"
    exc.msg = (
        f"{exc.msg} It is testlane's {lane}-lane timeout, discipline.{key}: change it in pyproject.toml "
        f"([tool.testlane.discipline] {key} = <seconds>, 0 for none), for one run (`testlane run --set "
        f"discipline.{key}=<seconds>`, `pytest --testlane-set discipline.{key}=<seconds>`), or for one test "
        "(@pytest.mark.timeout(<seconds>))."
    )
    exc.args = (exc.msg,)


def _record_awaits_on_timeout(config: pytest.Config) -> None:
    """pytest-timeout's signal method, wrapped: a timeout also says where the test's coroutines wait.

    When the alarm interrupts an event loop, the test's coroutine is not on the stack (the loop is in
    ``select``), so the traceback alone points at the ``def`` line. The wrapper walks the loop's pending
    tasks (``cr_await``) at that moment and puts the chains on the timeout's exception (the reports
    point at the innermost ``await`` in the project's code).

    pytest-timeout's SIGALRM handler calls its module's ``timeout_sigalrm(item, settings)``; that function
    is replaced for the session (restored at its end) instead of wrapping the handler in a
    ``pytest_timeout_set_timer`` hook: the hook re-installed a signal handler on every test (three more
    ``signal`` calls and a pluggy call per test), this costs nothing until a test times out.
    """
    import pytest_timeout  # type: ignore[import-untyped]

    original = getattr(pytest_timeout, "timeout_sigalrm", None)
    if original is None or getattr(original, "_testlane", False):
        return
    pytest_timeout.timeout_sigalrm = _with_context(original)
    config.add_cleanup(lambda: setattr(pytest_timeout, "timeout_sigalrm", original))


def _with_context(timed_out: Callable[[pytest.Item, Any], Any]) -> Callable[[pytest.Item, Any], Any]:
    """``timed_out`` (pytest-timeout's ``timeout_sigalrm``, or the watchdog's), its failure with the awaits the
    test's coroutines are suspended on, and the setting that gave a timeout of testlane's."""

    def timeout_sigalrm(item: pytest.Item, settings: Any) -> Any:
        __tracebackhide__ = True
        chains = _suspended_chains(getattr(item, "originalname", item.name))
        try:
            return timed_out(item, settings)
        except BaseException as exc:
            if chains:
                from testlane.core.tracebacks import AWAITING_ATTR

                setattr(exc, AWAITING_ATTR, chains)
            _name_the_setting(item, exc)
            raise

    timeout_sigalrm._testlane = True  # type: ignore[attr-defined]
    return timeout_sigalrm


def _suspended_chains(test_name: str) -> list[Any]:
    """Where each pending task of the running event loop waits, the test's own task first."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return []
    from testlane.core.tracebacks import awaiting

    chains = [awaiting(task.get_coro()) for task in asyncio.all_tasks(loop)]
    chains = [chain for chain in chains if chain]
    chains.sort(key=lambda chain: chain[0].function != test_name)
    return chains


# --------------------------------------------------------------------------- per test


asyncio_handler_key = pytest.StashKey["_AsyncioErrors"]()


def _asyncio_handler(config: pytest.Config) -> _AsyncioErrors:
    """The session's handler for the ``asyncio`` logger (made on first use)."""
    handler = config.stash.get(asyncio_handler_key, None)
    if handler is None:
        handler = config.stash[asyncio_handler_key] = _AsyncioErrors()
    return handler


class _AsyncioErrors(logging.Handler):
    """On the ``asyncio`` logger while a test runs: "exception was never retrieved" records go to ``sink``, the
    running test's list. One per session (a handler costs a lock and a registration to make), added to the
    logger for each test and removed after it: between tests the logger is as the project left it."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.sink: list[BackgroundError] | None = None
        # The logger, looked up once: logging.getLogger takes logging's lock, twice per test otherwise.
        self.logger = logging.getLogger("asyncio")

    def emit(self, record: logging.LogRecord) -> None:
        sink = self.sink
        if sink is None:
            return
        message = record.getMessage()
        if "exception was never retrieved" in message:
            exc = record.exc_info[1] if record.exc_info else None
            sink.append(BackgroundError(message.splitlines()[0], exc))


def _background_failure(item: pytest.Item, errors: list[BackgroundError], more: Sequence[str] = ()) -> BaseException:
    """The test's failure for asyncio errors: its message names each exception and its project line;
    the first exception rides along (``BACKGROUND_ATTR``), so the reports describe it as itself."""
    rootdir = Path(str(item.config.rootpath)).resolve()
    failure = pytest.fail.Exception(
        f"{item.nodeid}: " + "\n".join([*(f"asyncio: {e.text(rootdir)}" for e in errors), *more]), pytrace=False
    )
    first = next((e for e in errors if e.exc is not None), None)
    if first is not None:
        from testlane.core.tracebacks import BACKGROUND_ATTR

        setattr(failure, BACKGROUND_ATTR, (f"asyncio: {first.context}", first.exc))
    return failure


# Called by testlane.pytest_plugin.runtest in each phase of a test.


def before_setup(item: pytest.Item) -> TestWatch:
    """As the test's set-up starts: the baselines (environment, what runs), the asyncio handler on."""
    d = _settings(item.config)
    watch = TestWatch(d, EnvSnapshot.take() if d.env_changes != "off" else None)
    item.stash[watch_key] = watch
    item.config.stash[current_watch_key] = watch
    if d.leaks != "off":
        previous = item.config.stash.get(last_snapshot_key, None)
        if previous is not None:
            del item.config.stash[last_snapshot_key]  # used once: never older than the previous test
        watch.before = previous if previous is not None else Snapshot.take()
    if d.background_errors != "off":
        watch.handler = _asyncio_handler(item.config)
        watch.handler.sink = watch.asyncio_errors
        watch.handler.logger.addHandler(watch.handler)
    watch.in_setup = True
    return watch


def after_setup(item: pytest.Item, watch: TestWatch) -> None:
    """As the test's set-up ends (however it ended)."""
    watch.in_setup = False
    if watch.before is not None:  # leaks are checked
        # Only needed to tell a wider-scoped fixture's resources from the test's own.
        watch.after_setup = Snapshot.take(watch.before) if watch.wide_fixtures else watch.before


def after_call(item: pytest.Item) -> None:
    """Asyncio errors seen while the test body ran fail the test itself (not just its teardown)."""
    watch = item.stash.get(watch_key, None)
    if watch is not None and watch.handler is not None and watch.settings.background_errors == "fail":
        errors = watch.asyncio_errors + _failed_unretrieved_tasks(watch)
        watch.asyncio_errors.clear()
        if errors:
            raise _background_failure(item, errors)


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest) -> Iterator[None]:
    # In every fixture error's traceback: not the user's code, so pytest does not show it (runtest.py's too).
    __tracebackhide__ = True
    node = getattr(request, "_pyfuncitem", None)
    watch = node.stash.get(watch_key, None) if node is not None else None
    if watch is None or fixturedef.scope == "function":
        return (yield)
    if watch.in_setup:
        watch.wide_fixtures.append(f"{fixturedef.argname} ({fixturedef.scope})")
    if watch.env is None:
        return (yield)
    before = EnvSnapshot.take()
    try:
        return (yield)
    finally:
        _move_baseline(watch, before)
        # Added after the fixture's own teardown, so it runs just before it.
        fixturedef.addfinalizer(lambda: _watch_teardown_env(request.config, fixturedef))


_teardown_env_key = pytest.StashKey[dict[int, "EnvSnapshot"]]()


def _watch_teardown_env(config: pytest.Config, fixturedef: pytest.FixtureDef[Any]) -> None:
    config.stash.setdefault(_teardown_env_key, {})[id(fixturedef)] = EnvSnapshot.take()


def pytest_fixture_post_finalizer(fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest) -> None:
    """What a wider-scoped fixture's teardown changed (removing what it set, say) is no test's change either."""
    before = request.config.stash.get(_teardown_env_key, {}).pop(id(fixturedef), None)
    watch = request.config.stash.get(current_watch_key, None)
    if before is not None and watch is not None:
        _move_baseline(watch, before)


def _move_baseline(watch: TestWatch, before: EnvSnapshot) -> None:
    """Apply what changed in the environment since ``before`` (a wider-scoped fixture's doing) to the baseline."""
    if watch.env is not None:
        watch.env.follow(before.changed())


def attach_findings(item: pytest.Item, call: pytest.CallInfo[None], report: pytest.TestReport) -> None:
    """The test's findings, on its teardown report (xdist ships them to the controller): as each report is made
    (:func:`testlane.pytest_plugin.report_hooks.on_makereport`)."""
    # `in` first: Stash.get of a missing key raises and catches a KeyError inside (three reports per test)
    findings = item.stash[findings_key] if report.when == "teardown" and findings_key in item.stash else None
    if findings:
        setattr(report, FINDINGS_ATTR, [dataclasses.asdict(f) for f in findings])


def after_test(item: pytest.Item) -> None:
    """After the test's teardown (however it ended): what it left behind, reported or failed."""
    __tracebackhide__ = True
    if watch_key not in item.stash:
        return
    watch = item.stash[watch_key]
    # Not kept on the test once it is over: pytest keeps every item to the end of the run, and with it the copy of
    # the environment and the snapshots, for its garbage collection to walk at exit (and every collection before).
    del item.stash[watch_key]
    d = watch.settings
    problems: list[tuple[str, str]] = []  # (reaction, message)
    if watch.handler is not None:
        watch.handler.logger.removeHandler(watch.handler)
        watch.handler.sink = None
        for task in _failed_unretrieved_tasks(watch):
            watch.asyncio_errors.append(task)
        if watch.asyncio_errors:
            rootdir = Path(str(item.config.rootpath)).resolve()
            for error in watch.asyncio_errors:
                problems.append((d.background_errors, f"asyncio: {error.text(rootdir)}"))
    changed = _restore_env(watch.env) if watch.env is not None else []
    if changed:
        problems.append((d.env_changes, f"changed environment variables (restored): {', '.join(changed)}"))
    if d.leaks != "off" and watch.before is not None and watch.after_setup is not None:
        leaks = _leaks(item, watch)
        if leaks:
            problems.append((d.leaks, "left running: " + "; ".join(leaks)))
    if not problems:
        return
    failures = [message for reaction, message in problems if reaction == "fail"]
    path, lineno, _ = item.location
    for reaction, message in problems:
        if reaction == "warn":
            kind = message.split(":", 1)[0] if message.startswith("asyncio") else "leak"
            kind = "environment" if message.startswith("changed environment") else kind
            finding = Finding(item.nodeid, kind, message, f"{path}:{(lineno or 0) + 1}")
            item.stash.setdefault(findings_key, []).append(finding)
    if d.background_errors == "fail" and watch.asyncio_errors:
        raise _background_failure(item, watch.asyncio_errors, [m for m in failures if not m.startswith("asyncio")])
    if failures:
        pytest.fail(f"{item.nodeid} " + "\n".join(failures), pytrace=False)


# A plain class with slots, not a dataclass: made once per test or more, and a dataclass costs every run
# about 0.5 ms to build at import (its generated methods are compiled); nothing compares or prints these.
class EnvSnapshot:
    """``os.environ`` at one moment, as the process holds it (encoded keys and values on POSIX): a copy of
    that dictionary costs a fraction of ``dict(os.environ)``, which decodes every variable, and comparing two
    of them (their items, as sets) tells what changed without decoding anything either."""

    __slots__ = ("data",)

    def __init__(self, data: dict[Any, Any]) -> None:
        self.data = data

    @classmethod
    def take(cls) -> EnvSnapshot:
        raw = getattr(os.environ, "_data", None)  # CPython's os._Environ; else the decoded mapping
        return cls(raw.copy() if isinstance(raw, dict) else dict(os.environ))

    def changed(self) -> dict[str, str | None]:
        """Variable -> its value in the snapshot (``None``: it was not set) for each variable that differs now."""
        raw = getattr(os.environ, "_data", None)
        if not isinstance(raw, dict) or raw is self.data:
            now: dict[Any, Any] = dict(os.environ)
            decode_key: Any = str
            decode_value: Any = str
        else:
            now = raw
            decode_key = getattr(os.environ, "decodekey", str)
            decode_value = getattr(os.environ, "decodevalue", str)
        if now == self.data:  # the common case, one comparison in C: nothing changed
            return {}
        differ = {key for key, _ in now.items() ^ self.data.items()}
        out: dict[str, str | None] = {}
        for key in differ:
            name = decode_key(key)
            if name not in IGNORED_ENV:
                value = self.data.get(key)
                out[name] = None if value is None else decode_value(value)
        return out

    def follow(self, names: Iterable[str]) -> None:
        """Take the current values of ``names`` into the snapshot (unset ones out of it)."""
        raw = getattr(os.environ, "_data", None)
        encode = getattr(os.environ, "encodekey", None)
        current: Any = raw if isinstance(raw, dict) and raw is not self.data and encode is not None else os.environ
        for name in names:
            key = encode(name) if current is raw and encode is not None else name
            if key in current:
                self.data[key] = current[key]
            else:
                self.data.pop(key, None)


def _restore_env(before: EnvSnapshot) -> list[str]:
    """Put back the variables that differ from ``before`` (but pytest's and testlane's own); their names."""
    changed = before.changed()
    now = os.environ
    for key, value in changed.items():
        if value is not None:
            now[key] = value
        else:
            now.pop(key, None)
    return sorted(changed)


# --------------------------------------------------------------------------- leaks


def _leaks(item: pytest.Item, watch: TestWatch) -> list[str]:
    assert watch.before is not None and watch.after_setup is not None
    # What appeared in the test body is the test's; what appeared during setup is the test's too,
    # unless a wider-scoped fixture was set up then (its resources legitimately outlive the test).
    baseline = watch.after_setup if watch.wide_fixtures else watch.before
    now = Snapshot.take(baseline)
    item.config.stash[last_snapshot_key] = now
    if now is baseline:  # nothing started, nothing opened: nothing to compare
        return []
    found: list[str] = []
    found += _leaked_threads(now.threads - baseline.threads)
    found += _leaked_children(now.children - baseline.children, item)
    found += _listening(now.sockets - baseline.sockets)
    found += _leaked_tasks(now.tasks - baseline.tasks)
    return found


def _leaked_threads(threads: set[threading.Thread]) -> list[str]:
    out = []
    for thread in sorted(threads, key=lambda t: t.name):
        if thread.name.startswith("testlane-"):
            continue
        thread.join(timeout=0.2)  # a thread already on its way out is not a leak
        if thread.is_alive():
            target = getattr(thread, "_target", None)
            where = f", target={getattr(target, '__qualname__', target)}" if target else ""
            out.append(f"thread {thread.name!r}{' (daemon)' if thread.daemon else ''}{where}")
    return out


def _server_pids(item: pytest.Item) -> set[int]:
    from testlane.pytest_plugin.plugin import PLUGIN_NAME

    plugin = item.config.pluginmanager.get_plugin(PLUGIN_NAME)
    provider = getattr(plugin, "_provider", None)
    stack = getattr(provider, "_stack", None)
    servers = list(getattr(stack, "servers", {}).values()) if stack is not None else []
    return {s.pid for s in servers if s.pid}


def _leaked_children(pids: set[int], item: pytest.Item) -> list[str]:
    if not pids:
        return []
    import psutil

    pids -= _server_pids(item)
    procs = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE:
                procs.append(proc)
        except psutil.Error:
            continue
    _, alive = psutil.wait_procs(procs, timeout=0.2)
    out = []
    for proc in alive:
        try:
            out.append(f"process {proc.pid} ({' '.join(proc.cmdline())[:80]})")
        except psutil.Error:
            continue
    return out


def _listening(inodes: set[int]) -> list[str]:
    if not inodes:
        return []
    out = []
    for table, family in (("/proc/net/tcp", "ipv4"), ("/proc/net/tcp6", "ipv6")):
        try:
            with open(table) as fh:
                next(fh)
                for line in fh:
                    parts = line.split()
                    if parts[3] == "0A" and int(parts[9]) in inodes:  # 0A: LISTEN
                        out.append(f"listening socket {_address(parts[1], family)}")
        except OSError:
            continue
    return out


def _address(hex_address: str, family: str) -> str:
    host_hex, port_hex = hex_address.split(":")
    port = int(port_hex, 16)
    if family == "ipv4":
        host = ".".join(str(int(host_hex[i : i + 2], 16)) for i in (6, 4, 2, 0))
        return f"{host}:{port}"
    return f"[ipv6]:{port}"


def _leaked_tasks(ids: set[int]) -> list[str]:
    out = []
    for task in _live_tasks():
        if id(task) in ids and not task.done():
            coro = task.get_coro()
            name = getattr(coro, "__qualname__", repr(coro))
            out.append(f"asyncio task {task.get_name()!r} ({name})")
    return out


def _failed_unretrieved_tasks(watch: TestWatch) -> list[BackgroundError]:
    """Tasks still alive that failed and whose exception nobody retrieved (not yet garbage collected)."""
    tasks = _live_tasks()
    if not tasks:
        return []
    known = watch.before.tasks if watch.before is not None else set()
    out = []
    for task in tasks:
        if id(task) in known or not task.done() or task.cancelled():
            continue
        if getattr(task, "_log_traceback", False):  # asyncio's own "never retrieved" flag
            exc = task.exception()  # retrieves it: asyncio will not log it again
            out.append(BackgroundError(f"Task exception was never retrieved in {task.get_name()!r}", exc))
    return out


def _live_tasks() -> list[asyncio.Task[Any]]:
    tasks = getattr(asyncio.tasks, "_all_tasks", None)  # 3.11: a WeakSet of every task
    if tasks is not None and not tasks:
        return []  # no task alive (no event loop ran, or every task is gone): the common case, answered at once
    if tasks is None:  # 3.12+
        tasks = list(getattr(asyncio.tasks, "_scheduled_tasks", ())) + list(getattr(asyncio.tasks, "_eager_tasks", ()))
    try:
        return list(tasks)
    except RuntimeError:  # changed size during iteration (another thread); try once more
        return list(tasks)


# --------------------------------------------------------------------------- cheap process facts


T = TypeVar("T")


def _proc_entries(folder: str, read: Callable[[str], T]) -> Iterator[T]:
    """``read(entry)`` for each entry of the /proc ``folder``; an entry gone meanwhile (``OSError``) is
    skipped, a folder that cannot be listed gives nothing."""
    try:
        entries = os.listdir(folder)
    except OSError:
        return
    for entry in entries:
        try:
            value = read(entry)
        except OSError:
            continue
        yield value


def _task_children(tid: str) -> list[str]:
    with open(f"/proc/self/task/{tid}/children") as fh:
        return fh.read().split()


# Linux's __WALL: every kind of child (also those cloned with another exit signal than SIGCHLD).
_WALL = 0x40000000


# Looked up once (after every test otherwise): os.waitid on Linux, else None (not asked).
_waitid: Callable[..., Any] | None = getattr(os, "waitid", None) if sys.platform.startswith("linux") else None
_WAITID_FLAGS = (os.WEXITED | os.WNOHANG | os.WNOWAIT | _WALL) if _waitid is not None else 0


def _has_children() -> bool:
    """Whether this process has a child at all (running, or exited and not yet reaped): one ``waitid`` call
    that neither waits (``WNOHANG``) nor reaps (``WNOWAIT``); it fails with ``ECHILD`` when there is none.
    Where it cannot say (not Linux), assume there may be."""
    if _waitid is None:
        return True
    try:
        _waitid(os.P_ALL, 0, _WAITID_FLAGS)
    except ChildProcessError:
        return False
    except OSError:
        return True
    return True


def _child_pids() -> set[int]:
    if not _has_children():  # the common case: nothing to list, without reading /proc for each thread
        return set()
    return {int(pid) for pids in _proc_entries("/proc/self/task", _task_children) for pid in pids}


def _threads(since: set[threading.Thread] | None = None) -> set[threading.Thread]:
    """The threads alive (started and not ended), from ``threading``'s own table of them without the copies
    ``threading.enumerate`` makes (it where the table is missing). The ``Thread`` objects, not their idents:
    the system reuses an ended thread's ident for the next one, which would hide that one. ``since``: an earlier
    set, returned itself when the same threads are alive (no new set built)."""
    active = getattr(threading, "_active", None)
    if isinstance(active, dict):
        if since is not None and len(active) == len(since) and since.issuperset(active.values()):
            return since
        return set(active.values())
    return {t for t in threading.enumerate() if t.ident is not None}


# How the fast path of :meth:`Descriptors.take` tells that a descriptor is still not a socket, by what it was when
# listed: each a system call that fails on a socket, a fraction of the cost of an ``fstat`` in Python (which builds a
# ``stat_result``, floats included: 1.5 µs here against 0.2-0.4 µs for the others).
_SEEK = 0  # it could be seeked (a file, a directory, /dev/null): ``lseek`` to where it is (a socket: ESPIPE)
_PIPE = 1  # a pipe or FIFO: its buffer size (``F_GETPIPE_SZ``; a socket: EBADF)
_TTY = 2  # a terminal: ``isatty`` (a socket: ENOTTY)
_STAT = 3  # anything else (an eventfd, an epoll instance, a socket already there...): its device and inode
# What poll() says of a file, a directory or /dev/null asked for reading and writing: always ready for both. A
# listening socket is never ready for writing, a socket not yet connected or listening is hung up (POLLHUP).
_FILE_READY = select.POLLIN | select.POLLOUT


# A plain class with slots, not a dataclass: made once per test or more, and a dataclass costs every run
# about 0.5 ms to build at import (its generated methods are compiled); nothing compares or prints these.
class Descriptors:
    """The process's file descriptors at one moment: the inodes of the sockets among them (the numbers
    /proc/net/tcp lists), and what tells, cheaply, whether a socket has been opened since (:meth:`take`): how many
    descriptors the kernel counted (``-1``: unknown), for each one its device and inode and how to check that it
    is still no new socket (``_SEEK``, ``_PIPE``, ``_TTY``, ``_STAT``), and a ``poll`` object for the files among
    them (above 2) with what it said when they were listed (``ready``).

    Inodes, not descriptor numbers: a new socket may reuse the number of a descriptor closed meanwhile (even the
    one ``listdir`` itself held while listing: closed by then, its ``fstat`` fails and it is skipped)."""

    __slots__ = ("count", "ids", "poller", "ready", "sockets")

    def __init__(
        self,
        ids: tuple[tuple[int, int, int, int], ...],
        count: int,
        sockets: set[int],
        poller: Any = None,
        ready: list[tuple[int, int]] | None = None,
    ) -> None:
        self.ids = ids  # (descriptor, device, inode, check): each one checked one by one
        self.count = count
        self.sockets = sockets
        self.poller = poller  # select.poll of the files (above 2), or None
        self.ready = ready if ready is not None else []  # what poller.poll(0) said of them

    @classmethod
    def take(cls, since: Descriptors | None = None) -> Descriptors:
        """The descriptors now: ``since`` itself when no listening socket can have been opened since it was taken.

        This runs after every test, and listing ``/proc/self/fd`` (then an ``fstat`` of each descriptor) is most
        of its cost. Since Linux 6.2 the directory's size is the number of descriptors open (read from the
        directory held open: :func:`_descriptor_count`): when it equals ``since``'s count and each of ``since``'s
        descriptors is still open and still what it was, the process holds the same descriptor numbers, and a
        socket opened since would have taken the place of one closed meanwhile. Each place is checked by what it
        was: the files all at once by one ``poll`` (a file is always ready for reading and writing; a listening
        socket never for writing, a socket neither connected nor listening is hung up: each differs), the others
        one by one (``_PIPE``...: a call that a socket fails). Descriptors 0-2 are not checked: pytest's capture puts
        a file there while a test runs and takes it away after, so a snapshot taken on either side (a class-scoped
        fixture set up inside a test) would never match. Anything else (a count that differs or is unknown, an
        older kernel: size 0) lists them again. Another file, pipe or terminal in the place of one, or a connected
        socket in the place of a file (which can never listen), is no listening socket: the snapshot stands."""
        if since is not None and since.count > 0 and _descriptor_count() == since.count:
            try:
                if since.poller is None or since.poller.poll(0) == since.ready:
                    lseek, isatty, fstat = os.lseek, os.isatty, os.fstat
                    for fd, dev, ino, check in since.ids:
                        if check == _SEEK:
                            lseek(fd, 0, os.SEEK_CUR)
                        elif check == _PIPE:
                            fcntl.fcntl(fd, _F_GETPIPE_SZ)  # type: ignore[arg-type]  # a _PIPE only when it is set
                        elif check == _TTY:
                            if not isatty(fd):
                                break
                        else:
                            info = fstat(fd)
                            if info.st_ino != ino or info.st_dev != dev:
                                break
                    else:
                        return since
            except OSError:  # closed, or a socket (ESPIPE, EBADF) in the place of a file or a pipe
                pass
        return cls._listed()

    @classmethod
    def _listed(cls) -> Descriptors:
        """``fstat`` of each descriptor ``/proc/self/fd`` lists (a third of the cost of ``readlink`` of each), in
        one plain loop; the files among them (above 2) in a ``poll`` object."""
        count = _descriptor_count()
        try:
            fds = os.listdir("/proc/self/fd")
        except OSError:
            return cls((), -1, set())
        fstat, lseek, is_socket = os.fstat, os.lseek, stat.S_ISSOCK
        ids = []
        files = []
        inodes = set()
        listed = 0
        for name in fds:
            fd = int(name)
            try:
                info = fstat(fd)
            except OSError:
                continue
            listed += 1
            mode = info.st_mode
            check = _STAT
            if is_socket(mode):
                inodes.add(info.st_ino)
            elif stat.S_ISFIFO(mode) and _F_GETPIPE_SZ is not None:
                check = _PIPE
            else:
                try:
                    lseek(fd, 0, os.SEEK_CUR)
                    check = _SEEK
                except OSError:  # a terminal, an eventfd...
                    check = _TTY if stat.S_ISCHR(mode) and os.isatty(fd) else _STAT
            if check == _SEEK and fd > 2:
                files.append((fd, info.st_dev, info.st_ino, check))
            elif fd > 2:  # the standard streams are never checked (take)
                ids.append((fd, info.st_dev, info.st_ino, check))
        poller, ready = None, []
        if files:
            poller = select.poll()
            for fd, *_ in files:
                poller.register(fd, _FILE_READY)
            ready = poller.poll(0)
            if any(events != _FILE_READY for _, events in ready) or len(ready) != len(files):
                poller, ready = None, []  # one of them is not always ready: each checked by lseek instead
                ids += files
        # A count that does not match what was listed (a descriptor opened or closed meanwhile; 0 on a kernel
        # before 6.2) cannot vouch for this table next time.
        return cls(tuple(ids), count if count == listed else -1, inodes, poller, ready)


try:
    import fcntl

    # A pipe's buffer size (Linux): a call that a socket fails, cheaper than an ``fstat`` of the pipe.
    _F_GETPIPE_SZ: int | None = getattr(fcntl, "F_GETPIPE_SZ", None)
except ImportError:  # not POSIX
    _F_GETPIPE_SZ = None


# /proc/self/fd held open by this process (pid, descriptor, device, inode): ``fstat`` of it gives the number of
# descriptors in 1.5 µs, where ``os.stat("/proc/self/fd")`` walks the path (/proc/self is a link) in 5-6 µs. After
# a fork the child's copy names the parent's directory: opened again.
_fd_dir: tuple[int, int, int, int] | None = None


def _descriptor_count() -> int:
    """How many descriptors the process has open (the size of /proc/self/fd, Linux ≥ 6.2; 0 on older kernels), the
    directory held open included; -1 when it cannot be read. The held descriptor is checked to still be that
    directory (a test may close it, and a file or socket may then take its number): otherwise it is opened again."""
    global _fd_dir
    held = _fd_dir
    pid = os.getpid()
    if held is not None:
        if held[0] == pid:
            try:
                info = os.fstat(held[1])
            except OSError:
                info = None
            if info is not None and info.st_ino == held[3] and info.st_dev == held[2]:
                return info.st_size
        else:  # a forked child's copy of its parent's
            with contextlib.suppress(OSError):
                os.close(held[1])
        _fd_dir = None
    try:
        fd = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return -1
    try:
        info = os.fstat(fd)
    except OSError:
        os.close(fd)
        return -1
    _fd_dir = (pid, fd, info.st_dev, info.st_ino)
    return info.st_size
