"""testlane's reports as a pytest plugin (entry point ``pytest11: testlane_reports``).

Options (each also a ``[tool.testlane.reports]`` setting, see docs/feedback.md):

``--format terminal|digest|json|jsonl``  what the run prints (``--digest`` = ``--format digest``)
``--digest-budget CHARS``                the digest's size budget
``--report-json PATH``                   also write the JSON document there
``--report-jsonl PATH``                  also stream JSON Lines there

With ``digest``, ``json`` or ``jsonl`` the report owns standard output: pytest's terminal reporter
is created writing into a buffer (the stream that is ``sys.stdout`` while pytest configures its
plugins), so its progress and tracebacks stay out of the way, and the last lines of it are shown
only when they explain a failure the report could not attribute. Everything else of pytest — the
exit code, other plugins, ``--junitxml`` — works as usual. Under pytest-xdist the controller
reports; workers only add the failure context (:mod:`testlane.reports.context`).

The module stays cheap to import: rendering is imported when a session ends.
"""

from __future__ import annotations

import collections
import contextlib
import io
import os
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from testlane.core.environment import WORKER_ADDOPTS
from testlane.core.redact import redact_data, redact_nodeid
from testlane.core.runenv import RunEnv

if TYPE_CHECKING:
    from testlane.reports.jsonreport import JsonLines
    from testlane.reports.model import Failure, Group, RunResult, TestOutcome

__all__ = ["ReportCollector", "TailBuffer"]

FORMATS = ("terminal", "digest", "json", "jsonl")
COLLECTOR_NAME = "testlane-reports"


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--digest``, short for ``--format digest``. ``--format``, ``--digest-budget``, ``--report-json`` and
    ``--report-jsonl`` are settings: the plugin generates them from the settings table."""
    from testlane.core.config import DIGEST_FLAG, DIGEST_FLAG_HELP, iter_options
    from testlane.pytest_plugin.optin import record_options
    from testlane.pytest_plugin.options import NOT_GIVEN

    fmt = next(o for o in iter_options() if o.key == "reports.format")
    group = parser.getgroup("testlane-reports", "testlane: reports for people, coding agents and CI")
    group.addoption(
        DIGEST_FLAG,
        dest=fmt.dest,  # the same destination as --format: the last one given wins
        action="store_const",
        const="digest",
        default=NOT_GIVEN,
        help=DIGEST_FLAG_HELP,
    )
    record_options(group)  # using one opts the project in


class TailBuffer(io.TextIOBase):
    """A write-only text stream that keeps only its last ``keep`` characters (pytest's output, muted)."""

    def __init__(self, keep: int = 32_000) -> None:
        super().__init__()
        self._parts: collections.deque[str] = collections.deque()
        self._size = 0
        self._keep = keep

    def write(self, text: str) -> int:
        self._parts.append(text)
        self._size += len(text)
        while self._size > self._keep and len(self._parts) > 1:
            self._size -= len(self._parts.popleft())
        return len(text)

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def tail(self, lines: int) -> list[str]:
        kept = [line.rstrip() for line in "".join(self._parts).splitlines() if line.strip()]
        return kept[-lines:]


# Options whose whole point is pytest's own output (help, collection listings): never muted.
_OWN_OUTPUT_OPTIONS = ("help", "collectonly", "showfixtures", "show_fixtures_per_test", "markers", "setupplan")
# Options with which pytest runs no test: its exit code stands (nothing tested is the point).
_LISTING_OPTIONS = (*_OWN_OUTPUT_OPTIONS, "setuponly")


def _listing(config: pytest.Config) -> bool:
    return any(getattr(config.option, name, False) for name in _LISTING_OPTIONS)


def _resolve_format(config: pytest.Config, setting: str) -> str:
    """The format for this process: the setting, but pytest's own output for --help, --collect-only..."""
    if setting == "auto" or any(getattr(config.option, name, False) for name in _OWN_OUTPUT_OPTIONS):
        return "terminal"
    return setting


def _path(config: pytest.Config, value: str | None) -> Path | None:
    if not value:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else Path(str(config.invocation_params.dir)) / path


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Decide the format; when a report owns stdout, let pytest's terminal reporter be created muted.

    pytest's terminal reporter writes to whatever ``sys.stdout`` is when it is created, in its own
    ``pytest_configure``; this one runs first and points ``sys.stdout`` at a :class:`TailBuffer`,
    and the collector puts the real stdout back as the session starts (or at clean-up, should a
    later ``pytest_configure`` fail).
    """
    from testlane.pytest_plugin.optin import opted_in
    from testlane.pytest_plugin.options import command_line_overrides
    from testlane.pytest_plugin.plugin import settings_for

    if hasattr(config, "workerinput"):
        _restore_worker_addopts()  # before anything else of this worker: it has what it was for
    if not opted_in(config):
        return  # installed is not opted in: pytest's output stays pytest's
    from testlane.pytest_plugin.report_hooks import on_logreport, on_makereport
    from testlane.reports.context import FailureContext

    all_settings = settings_for(config)
    settings = all_settings.reports
    worker = hasattr(config, "workerinput")
    on_makereport(config, FailureContext(config, settings.log_lines).decorate)
    given = command_line_overrides(config.option)  # already in the settings; here: where a value came from
    fmt, from_cli = _resolve_format(config, settings.format), "reports.format" in given
    if settings.junit_path and not getattr(config.option, "xmlpath", None):
        config.option.xmlpath = str(all_settings.resolve_path(settings.junit_path))  # for pytest's junitxml

    def output_path(key: str, value: str) -> Path | None:
        # Paths from the command line are relative to where pytest runs; from configuration, to the project.
        if not value:
            return None
        return _path(config, value) if key in given else all_settings.resolve_path(value)

    json_path = output_path("reports.json_path", settings.json_path)
    jsonl_path = output_path("reports.jsonl_path", settings.jsonl_path)
    if worker or (_listing(config) and json_path is None and jsonl_path is None):
        return  # the controller (or a plain session) decides the verdict and reports; a listing has none
    # Registered in every format: the collector decides the run's verdict and exit status
    # (testlane.reports.verdict), which pytest's own output must agree with too.
    sink = TailBuffer() if fmt != "terminal" else None
    collector = ReportCollector(
        config,
        fmt=fmt,
        out=sys.stdout if sink is not None else None,
        sink=sink,
        budget=settings.digest_budget,  # the resolved setting: --digest-budget 0 is 0
        json_path=json_path,
        jsonl_path=jsonl_path,
        digest_from_cli=from_cli and fmt == "digest",
        all_skipped=all_settings.lanes.all_skipped,
    )
    config.pluginmanager.register(collector, COLLECTOR_NAME)
    on_logreport(config, collector.observe)
    if sink is not None:
        sys.stdout = sink
        config.add_cleanup(collector.unmute)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_setupnodes(config: pytest.Config, specs: list[Any]) -> None:
    """Each pytest-xdist worker finds its rootdir and configuration file as the controller did.

    A worker parses the controller's command line again, and pytest looks for the rootdir before it knows
    any plugin's options: the value of ``--report-jsonl /elsewhere/r.jsonl`` is taken for a path to test as
    soon as that file exists, and it does once the controller has opened it. The workers' rootdir then
    became the common ancestor of the project and that directory (node ids and failure locations relative
    to it, the project's configuration file not found). ``--rootdir`` and ``--config-file`` in the workers'
    PYTEST_ADDOPTS (execnet sets a popen worker's environment before pytest starts in it) make them use the
    controller's."""
    from testlane.pytest_plugin.optin import opted_in

    if not opted_in(config):
        return
    import json

    pinned = [f"--rootdir={config.rootpath}"]
    if config.inipath is not None:
        pinned.append(f"--config-file={config.inipath}")
    for spec in specs:
        env = getattr(spec, "env", None)
        if getattr(spec, "popen", False) and isinstance(env, dict):
            before = env.get("PYTEST_ADDOPTS", os.environ.get("PYTEST_ADDOPTS"))
            env[WORKER_ADDOPTS] = json.dumps(before)
            env["PYTEST_ADDOPTS"] = f"{before or ''} {shlex.join(pinned)}".lstrip()


def _restore_worker_addopts() -> None:
    """In a worker: PYTEST_ADDOPTS as the controller had it, for its tests and any pytest they run."""
    saved = os.environ.pop(WORKER_ADDOPTS, None)
    if saved is None:
        return
    import json

    before = json.loads(saved)
    if before is None:
        os.environ.pop("PYTEST_ADDOPTS", None)
    else:
        os.environ["PYTEST_ADDOPTS"] = before


def _is_xdist_stop(error: BaseException) -> bool:
    """pytest-xdist's controller stops the run for a worker's ``shouldstop``/``shouldfail`` (``-x``, ``--maxfail``,
    testlane's stop) by raising its ``Interrupted``: told apart from a Ctrl-C by its class (xdist is optional, so
    not imported to check)."""
    kind = type(error)
    return kind.__name__ == "Interrupted" and kind.__module__.startswith("xdist.")


def _rerun_prefix(config: pytest.Config, digest_from_cli: bool) -> tuple[str, bool]:
    """How to re-run tests the way this run ran them, and whether integration tests need ``--it``: the
    command (``testlane run --`` under ``testlane run``), then the user's own options that change how tests
    run (:mod:`testlane.reports.rerun`)."""
    from testlane.core.config import iter_options
    from testlane.reports.rerun import parser_actions, rerun_options

    invocation, rootdir = Path(str(config.invocation_params.dir)), Path(str(config.rootpath))
    elsewhere = invocation.resolve() != rootdir.resolve()
    under_run = RunEnv.current().rerun_prefix
    reports = frozenset(o.dest for o in iter_options() if o.key.startswith("reports."))  # the digest's own
    options = rerun_options(
        [str(a) for a in config.invocation_params.args],
        parser_actions(config),
        drop=reports,
        absolute_from=str(invocation) if elsewhere and not under_run else None,
    )
    tail = f" {shlex.join(options)}" if options else ""
    if under_run:
        return under_run + tail, False
    prefix = ("pytest --digest" if digest_from_cli else "pytest") + tail
    if elsewhere:
        prefix = f"cd {shlex.quote(str(rootdir))} && {prefix}"
    return prefix, True


def _signal_exit() -> int | None:
    """Under ``testlane run``, the signal that interrupted this run: ``testlane run`` exits 128+N for it (the
    shell's convention, cli/main.py), and so does this process, so the verdict says that code. Plain pytest
    keeps its own 2."""
    if not RunEnv.current().reported_file:  # set only for testlane run's pytest
        return None
    from testlane.core.interrupts import last_signal

    return last_signal()


def _grouped(failures: list[Failure]) -> list[Group]:
    """The failures grouped by root cause (the grouping is imported only when there is a failure)."""
    if not failures:
        return []
    from testlane.reports.grouping import group_failures

    return group_failures(failures)


def _skip_reason(report: pytest.TestReport) -> str:
    """A skip's reason as pytest reports it (``Skipped: no Django settings`` -> ``no Django settings``)."""
    longrepr = report.longrepr
    reason = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else ""
    return reason.removeprefix("Skipped: ").strip()


def _masked(finding: dict[str, str]) -> dict[str, str]:
    """A discipline finding with its credentials masked, its node id as the tests' are (``model.TestOutcome``):
    the two are matched by node id."""
    return {**redact_data(finding), "nodeid": redact_nodeid(finding.get("nodeid", ""))}


class ReportCollector:
    """Collects the session's outcomes and failures; prints or writes the reports at its end."""

    def __init__(
        self,
        config: pytest.Config,
        *,
        fmt: str,
        out: Any,
        sink: TailBuffer | None,
        budget: int,
        json_path: Path | None,
        jsonl_path: Path | None,
        digest_from_cli: bool,
        all_skipped: str = "fail",
    ) -> None:
        from testlane.pytest_plugin.discipline import FINDINGS_ATTR, location_text  # opted in: imported already
        from testlane.reports.model import TestOutcome  # the verdict needs the model at the end of every run anyway

        self.findings_attr, self.location_text, self.outcome_type = FINDINGS_ATTR, location_text, TestOutcome
        self.config = config
        self.fmt = fmt
        self.out = out
        self.sink = sink
        self.budget = budget
        self.json_path = json_path
        self.rootdir = Path(str(config.rootpath)).resolve()
        self.digest_from_cli = digest_from_cli
        self.all_skipped = all_skipped
        self.streams: list[JsonLines] = []
        if (fmt == "jsonl" and out is not None) or jsonl_path is not None:
            from testlane.reports.jsonreport import JsonLines

            if fmt == "jsonl" and out is not None:
                self.streams.append(JsonLines(out))
            if jsonl_path is not None:
                self.streams.append(JsonLines.to_file(jsonl_path))
        self.started = time.monotonic()
        self.failures: list[Failure] = []
        self.tests: dict[str, TestOutcome] = {}
        self.finished_tests: set[str] = set()
        self.collected = 0
        self.deselected = 0
        self.first_skip = ""  # the first skipped test's reason: names who skipped it (a plugin, a mark)
        self.notes: list[str] = []
        self.stop_reason: str | None = None  # why xdist's controller stopped the run (a worker asked it to)
        self.findings: list[dict[str, str]] = []  # discipline findings (leaks, environment changes, ...)
        # nodeid -> the test's report.location, for findings that come as warnings (written out only for one)
        self.locations: dict[str, tuple[str, int | None, str]] = {}
        self.done = False
        self.terminal_line: tuple[str, bool] | None = None  # the verdict for pytest's output (line, success)

    def _emit(self, event: str, **fields: Any) -> None:
        for stream in self.streams:
            stream.emit(event, **fields)

    def unmute(self) -> None:
        """Give stdout back (pytest's terminal reporter, created meanwhile, keeps writing to the buffer)."""
        if self.sink is not None and sys.stdout is self.sink:
            sys.stdout = self.out

    # ----------------------------------------------------------------- hooks

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.unmute()
        self.started = time.monotonic()
        self._emit("start", rootdir=str(self.rootdir), args=list(self.config.invocation_params.args))

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            from testlane.reports.failures import failure_from_report

            failure = failure_from_report(report, phase="collect", rootdir=self.rootdir)
            self.failures.append(failure)
            self._emit("collect_error", nodeid=failure.nodeid, message=failure.message, location=failure.location)

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        self.deselected += len(items)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if hasattr(self.config, "workerinput") or not self.config.pluginmanager.hasplugin("dsession"):
            self.collected = len(session.items)
            self._emit("collected", count=self.collected, deselected=self.deselected)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """Under xdist the controller collects nothing; every worker collects the same items."""
        if not self.collected:
            self.collected = len(ids)
            self._emit("collected", count=self.collected, deselected=self.deselected)

    def observe(self, report: pytest.TestReport) -> None:
        """Each test report (:func:`testlane.pytest_plugin.report_hooks.on_logreport`)."""
        # The attributes other plugins may have set, read from the report's __dict__: a getattr or hasattr of one
        # that is missing raises (and catches) an AttributeError, three times per test.
        attrs = vars(report)
        findings = attrs.get(self.findings_attr)
        if findings:
            self.findings += [_masked(f) for f in findings]
        nodeid = report.nodeid
        test = self.tests.get(nodeid)
        if test is None:  # the test's first report: once per test
            self.locations[nodeid] = report.location
            test = self.tests[nodeid] = self.outcome_type(nodeid, "incomplete")
        test.duration += report.duration
        facts = attrs.get("testlane_failure")
        if isinstance(facts, dict) and facts.get("lane"):
            test.lane = facts["lane"]
        xfail = "wasxfail" in attrs
        when = report.when
        outcome = report.outcome  # once: report.failed and report.skipped are properties that read it
        if when == "call":
            if xfail:
                test.outcome = "xfailed" if outcome == "skipped" else "xpassed"
            else:
                test.outcome = outcome
        elif when not in ("setup", "teardown"):  # a report xdist made up for a crashed worker
            test.outcome = outcome
        elif outcome == "failed" and test.outcome != "failed":
            test.outcome = "error"
        elif outcome == "skipped" and when == "setup":
            test.outcome = "xfailed" if xfail else "skipped"
        if outcome == "skipped" and not xfail and not self.first_skip:
            self.first_skip = _skip_reason(report)
        if outcome == "failed":
            from testlane.reports.failures import failure_from_report

            failure = failure_from_report(report, rootdir=self.rootdir)
            if failure.lane is None:
                failure.lane = test.lane
            self.failures.append(failure)
        if when == "teardown" or (when not in ("setup", "call") and report.failed):
            self._finish_test(test)

    def _finish_test(self, test: TestOutcome) -> None:
        if test.nodeid in self.finished_tests:
            return
        self.finished_tests.add(test.nodeid)
        if self.streams:
            from testlane.reports.digest import failure_headline

            event: dict[str, Any] = {
                "nodeid": test.nodeid,
                "outcome": test.outcome,
                "duration": round(test.duration, 4),
            }
            mine = [f for f in self.failures if f.nodeid == test.nodeid]
            if mine:
                event["message"] = failure_headline(mine[0])
                hints = list(dict.fromkeys(h for f in mine for h in f.hints))
                if hints:
                    event["hints"] = hints
            findings = [f for f in self.findings if f.get("nodeid") == test.nodeid]
            if findings:
                event["findings"] = findings
            self._emit("test", **event)

    def pytest_warning_recorded(self, warning_message: Any, nodeid: str) -> None:
        """Exceptions in other threads with ``background_errors = "warn"`` are pytest warnings: findings too."""
        from dataclasses import asdict

        from testlane.pytest_plugin.discipline import finding_from_warning

        location = self.locations.get(nodeid)
        where = self.location_text(location) if location is not None else None
        finding = finding_from_warning(self.config, warning_message, nodeid, where)
        if finding is not None:
            self.findings.append(_masked(asdict(finding)))

    def pytest_internalerror(self, excrepr: Any, excinfo: Any) -> None:
        from testlane.reports.failures import internal_failure

        self.failures.append(internal_failure(str(excrepr).splitlines()))

    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        message = getattr(excinfo.value, "msg", None) or str(excinfo.value) or excinfo.typename
        if "during collection" in message:  # pytest's way to stop on collection errors: a failure, not a Ctrl-C
            self.notes.append(f"{message}: pytest ran no test")
        elif _is_xdist_stop(excinfo.value):
            self.stop_reason = message  # a worker's shouldstop/shouldfail (-x, --maxfail, testlane's stop): no Ctrl-C
        else:
            self.notes.append(f"interrupted: {message}")

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int | pytest.ExitCode) -> None:
        self._finish(session, int(session.exitstatus))  # as other hooks left it (lanes: all skipped is 5)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if not self.done and self.failures:  # an INTERNALERROR before the session started
            self.notes.append("pytest stopped before its session started")
            self._finish(None, 3)
        for stream in self.streams:
            stream.close()

    # ----------------------------------------------------------------- the end

    def result(self, session: pytest.Session | None, exit_code: int | None) -> RunResult:
        from testlane.reports.model import RunResult

        for test in self.tests.values():
            self._finish_test(test)
        notes = list(self.notes)
        ran = len(self.tests)
        left = self.collected - ran
        # Stopped after the last test (-x and the last one failed) left nothing out: nothing to say.
        reason: str | bool | None
        if session is not None and (session.shouldstop or session.shouldfail):
            reason = session.shouldstop or session.shouldfail
        else:
            reason = self.stop_reason  # under xdist the controller learns it as an interruption
        if reason and left > 0:
            notes.append(f"stopped early ({reason}): {left} of {self.collected} tests did not run")
        # How to rerun a group of failures: worked out only when there are failures to group (the argument parser's
        # actions, reports.rerun), not on every run.
        rerun_prefix, it_flag = _rerun_prefix(self.config, self.digest_from_cli) if self.failures else ("pytest", False)
        result = RunResult(
            exit_code=exit_code,
            duration=time.monotonic() - self.started,
            collected=self.collected,
            deselected=self.deselected,
            tests=list(self.tests.values()),
            groups=_grouped(self.failures),
            notes=notes,
            rerun_prefix=rerun_prefix,
            it_flag=it_flag,
            findings=list(self.findings),
            lane_off=bool(getattr(self._selection(), "all_skipped", False)),
            all_skipped=self.all_skipped,
            listing=_listing(self.config),
            signal_exit=_signal_exit(),
            service_error=self._stopped_by() == "service",
        )
        verdict = result.verdict
        if verdict.nothing_tested and verdict.outcome in ("no_tests", "passed"):
            reason, lane = self._nothing_tested(result)
            if verdict.outcome == "no_tests":
                result.notes.append(f"no tests ran: {reason}" + (" (`testlane run` or `pytest --it`)" if lane else ""))
            elif lane:
                result.notes.append(f'nothing was tested: {reason}; exit 0 because lanes.all_skipped = "pass"')
            else:
                result.notes.append(
                    f"nothing was tested: {reason}; exit 0 as pytest says (skipped by the project or its plugins)"
                )
        result.notes += self._lane_note()
        if not result.success and not result.groups and self.sink is not None and exit_code in (1, 3):
            result.output_tail = self.sink.tail(12)
        return result

    def _stopped_by(self) -> str | None:
        """What stopped the run at a test ("configuration", "service": TestlanePlugin.stop_run), if anything."""
        from testlane.pytest_plugin.plugin import PLUGIN_NAME

        stopped = getattr(self.config.pluginmanager.get_plugin(PLUGIN_NAME), "stopped_by", None)
        return stopped[0] if stopped else None

    def _selection(self) -> Any:
        from testlane.pytest_plugin.lanes import selection_key

        return self.config.stash.get(selection_key, None)

    def _nothing_tested(self, result: RunResult) -> tuple[str, bool]:
        """Why nothing was tested, and whether it is because the integration lane is off."""
        selection = self._selection()
        skipped = result.count("skipped")
        if selection is not None and selection.all_skipped:
            count = selection.lane_skipped
            which = (
                f"all {count} selected tests are integration tests"
                if count != 1
                else "the one selected test is an integration test"
            )
            return f"{which}, skipped because the integration lane is off", True
        if skipped:
            lane = selection.lane_skipped if selection is not None else 0
            why = f"{lane} of them integration tests with the lane off" if lane else "skip marks or conditions"
            if not lane and self.first_skip:
                why = f"the first: {self.first_skip}"
            which = f"all {skipped} selected tests were" if skipped != 1 else "the one selected test was"
            return f"{which} skipped ({why})", False
        if self.deselected:
            if selection is not None and selection.no_lanes and selection.explicit == "unit":
                from testlane.pytest_plugin.lanes import NO_UNIT_LANE

                return f"--lane unit: {NO_UNIT_LANE}", False
            return f"all {self.deselected} collected tests were deselected (-k, -m or --lane)", False
        if selection is not None and selection.not_collected:
            return (
                f"--lane unit: all {selection.not_collected} test file(s) are in the integration lane "
                "(lanes.integration_patterns), not collected",
                False,
            )
        return "nothing was collected (check the paths, -k, -m and --lane)", False

    def _lane_note(self) -> list[str]:
        selection = self._selection()
        if selection is None or selection.all_skipped:
            return []  # said as the reason nothing was tested
        count = selection.lane_skipped or len(selection.skipped)
        if count:
            return [
                f"{count} integration test(s) skipped: the integration lane is off (`testlane run` or `pytest --it`)"
            ]
        return []

    def _terminal_line(self, result: RunResult) -> str | None:
        """The verdict in pytest's own output, when pytest's last line does not already say it."""
        verdict = result.verdict
        if verdict.exit_code is None:
            return None
        if verdict.nothing_tested and verdict.lane_off:
            # testlane's own skips (the lane is off): exit 5 unless lanes.all_skipped = "pass" accepts it.
            reason, _ = self._nothing_tested(result)
            why = "no tests ran" if verdict.outcome == "no_tests" else '[tool.testlane.lanes] all_skipped = "pass"'
            return (
                f"testlane: {reason}: nothing was tested, exit status {verdict.exit_code} ({why}). "
                "Run them with `testlane run` (services included) or `pytest --it`."
            )
        if verdict.exit_code != verdict.pytest_exit_code:
            return (
                f"testlane: {verdict.label} — exit status {verdict.exit_code} "
                f"(pytest's own code was {verdict.pytest_exit_code})"
            )
        return None

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.terminal_line is not None:
            green = self.terminal_line[1]
            terminalreporter.write_line(self.terminal_line[0], red=not green, yellow=green)

    def _finish(self, session: pytest.Session | None, exit_code: int | None) -> None:
        """The verdict (the exit status), then each report asked for; rendering is imported only for those."""
        import json

        self.done = True
        result = self.result(session, exit_code)
        verdict = result.verdict
        if session is not None and verdict.exit_code is not None and verdict.exit_code != exit_code:
            # the process says what the reports say (130/143 are not pytest's: a plain int)
            code = verdict.exit_code
            session.exitstatus = pytest.ExitCode(code) if code in set(pytest.ExitCode) else code
        line = self._terminal_line(result)
        self.terminal_line = (line, verdict.success) if line is not None else None
        marker = RunEnv.current().reported_file
        if marker:
            with contextlib.suppress(OSError):
                Path(marker).touch()
        if self.streams:
            from testlane.reports.digest import summary_line

            self._emit(
                "finish",
                outcome=verdict.outcome,
                exit_code=verdict.exit_code,
                summary=result.counts,
                line=summary_line(result),
            )
        doc = None
        if self.json_path is not None or self.fmt == "json":
            from testlane.reports.jsonreport import document

            doc = document(result, digest_budget=self.budget)
        if self.json_path is not None and doc is not None:
            self.json_path.parent.mkdir(parents=True, exist_ok=True)
            self.json_path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        if self.out is None:
            return
        if self.fmt == "digest":
            from testlane.reports.digest import render_digest

            self.out.write(render_digest(result, self.budget))
        elif self.fmt == "json" and doc is not None:
            self.out.write(json.dumps(doc, indent=2) + "\n")
        self.out.flush()
