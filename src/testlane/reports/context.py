"""What the process running a test adds to its failing report.

* the failure's facts (:func:`testlane.reports.failures.facts_from_excinfo`), on the report as a
  plain dict that pytest-xdist carries to the controller;
* the hints recorded on the test while it ran (``HINT_PROPERTY`` in ``item.user_properties``: an
  outbound request ``http_mock`` did not match, for example) and, for a timeout, the ``await`` the
  test's coroutine is suspended on — also as a ``testlane`` section that pytest's own output shows
  with the failure;
* the lines each testlane server (Postgres, Valkey) wrote to its log while the test ran — a
  Postgres ``ERROR:`` with the statement that caused it, for example. They also go into the
  report's sections, so pytest's own output shows them under ``postgres server log``.

The window is the test's: from the log's size when the test started, or — for a server started or
attached during the test's set-up — when its call started (so a failing call never shows the
server's boot or the template's build). In that window, lines of testlane's own housekeeping (the
server starting, listening, shutting down) are dropped, and when the server reported a problem
(``ERROR``, ``FATAL``, ``WARNING``...) only the problems and their ``DETAIL``/``HINT``/``STATEMENT``
lines are kept: :func:`excerpt`.

Per test this costs one ``stat`` per running server when the test starts
(:mod:`testlane.pytest_plugin.server_logs`); the log is read only for a failure. Under xdist several tests
share a server, so lines from tests running at the same time on other workers can appear too.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import pytest

from testlane.pytest_plugin.server_logs import active_servers, offsets_key

__all__ = ["FailureContext", "excerpt", "read_log_since"]

READ_LIMIT = 64 * 1024
READ_LINES = 2000  # read before choosing (excerpt): a problem may be followed by many ordinary lines


def read_log_since(path: Path, offset: int, lines: int) -> list[str]:
    """The last ``lines`` non-blank lines written to ``path`` after byte ``offset``, without terminal
    escapes (a server that colours its log: RabbitMQ's console)."""
    try:
        size = path.stat().st_size
        if size < offset:  # rotated or truncated: read what is there
            offset = 0
        start = max(offset, size - READ_LIMIT)
        with path.open("rb") as fh:
            fh.seek(start)
            data = fh.read(size - start)
    except OSError:
        return []
    from testlane.services.process import strip_ansi  # only for a failure: psutil and ctypes stay unimported

    text = strip_ansi(data.decode("utf-8", errors="replace"))
    if start > offset:  # the first line is probably cut
        text = text.split("\n", 1)[-1]
    return [line.rstrip() for line in text.splitlines() if line.strip()][-lines:]


@functools.cache  # compiled for the first failure's excerpt, not at start-up (0.7 ms of every run)
def _patterns() -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    """The log lines that report a problem, that add to one, and testlane's own housekeeping."""
    # A server reporting a problem: Postgres severities, MariaDB's [ERROR]/[Warning], Valkey's "#" (warning),
    # RabbitMQ's "[error] <0.806.0>" (and warning, critical...).
    problem = re.compile(
        r"\b(?:ERROR|FATAL|PANIC|WARNING):\s|\[(?:ERROR|Warning)\]|^\d+:[CMSX] .*? # "
        r"|\[(?:warning|error|critical|alert|emergency)\] <\d+\.\d+\.\d+>"
    )
    # What Postgres adds to a problem, each on its own line (same prefix): kept with the problem.
    context = re.compile(r"\b(?:DETAIL|HINT|CONTEXT|STATEMENT|QUERY|LOCATION):\s")
    # testlane's housekeeping, not the test's doing: a server starting, listening, becoming ready, stopping.
    housekeeping = re.compile(
        r"LOG:\s+(?:starting PostgreSQL|listening on|database system (?:was|is)|redirecting log output|"
        r"received \w+ shutdown request|aborting any active transactions|background worker|shutting down|checkpoint)"
        r"|Valkey is starting|Valkey version=|Configuration loaded|monotonic clock|Running mode=|Server initialized|"
        r"Ready to accept connections|Increased maximum number of open files|Memory overcommit must be enabled"
        r"|\] <[\d.]+> (?:Feature flags:|Logging: switching|Application syslog exited|Message store .*: rebuilding)"
    )
    return problem, context, housekeeping


def excerpt(lines: list[str], limit: int) -> list[str]:
    """What a failing test needs from a server's log window: no housekeeping; only the problems (with
    their DETAIL/HINT/STATEMENT lines) when there are any; the last ``limit`` lines of that."""
    entries: list[list[str]] = []  # a line and its continuation lines (a multi-line statement is indented)
    for line in lines:
        if entries and line[:1].isspace():
            entries[-1].append(line)
        else:
            entries.append([line])
    problem, context, housekeeping = _patterns()
    entries = [entry for entry in entries if not housekeeping.search(entry[0])]
    problems: list[list[str]] = []
    attached = False
    for entry in entries:
        if problem.search(entry[0]):
            problems.append(entry)
            attached = True
        elif attached and context.search(entry[0]):
            problems.append(entry)
        else:
            attached = False
    chosen = problems or entries
    return [line for entry in chosen for line in entry][-limit:]


def _hints(item: pytest.Item) -> list[str]:
    from testlane.pytest_plugin.web import HINT_PROPERTY

    return list(dict.fromkeys(str(value) for name, value in item.user_properties if name == HINT_PROPERTY))


class FailureContext:
    """Adds facts and log lines to a test's failing reports (the logs' offsets when the test started:
    :mod:`testlane.pytest_plugin.server_logs`)."""

    def __init__(self, config: pytest.Config, log_lines: int) -> None:
        self.config = config
        self.rootdir = Path(str(config.rootpath)).resolve()
        self.log_lines = log_lines

    def _servers(self) -> dict[str, Any]:
        return active_servers(self.config)

    def _server_lines(self, item: pytest.Item) -> dict[str, list[str]]:
        started = item.stash.get(offsets_key, {})
        out: dict[str, list[str]] = {}
        for name, server in self._servers().items():
            log_file = getattr(server, "log_file", None)
            if log_file is None:
                continue
            path, offset = started.get(name, (str(log_file), 0))  # started during this set-up: all of it
            lines = excerpt(read_log_since(Path(path), offset, READ_LINES), self.log_lines * 3)
            if lines:
                out[name] = lines
        return out

    def _stopped_servers(self, exc: BaseException) -> list[str]:
        """When the test failed on a lost connection: a line for each of the run's servers that is no longer
        running (the test's own driver error is left as it is; this says why it happened)."""
        from testlane.services.driver_errors import lost_connection
        from testlane.services.process import pid_alive

        if not lost_connection(exc):
            return []
        said = []
        for name, server in self._servers().items():
            instance = getattr(server, "instance", None)
            if instance is None or instance.pid is None or instance.backend not in ("embedded", "local"):
                continue  # a container's or an existing server's process is not ours to check
            if not pid_alive(instance.pid, instance.pid_create_time):
                said.append(
                    f"the run's {name} server (pid {instance.pid}) is not running: it stopped during or before "
                    "this test, so the connection was lost; the tests after this one that need it fail too "
                    "(its log lines, if any, are below)"
                )
        return said

    def decorate(self, item: pytest.Item, call: pytest.CallInfo[None], report: pytest.TestReport) -> None:
        """Each report as it is made (:func:`testlane.pytest_plugin.report_hooks.on_makereport`): a failing one gets the
        failure's facts, hints and server log lines."""
        if report.failed:
            try:
                self._enrich(item, call, report)
            except Exception as exc:  # a report must never be lost to its decoration
                report.sections.append(("testlane report", f"could not describe the failure: {exc!r}"))

    def _enrich(self, item: pytest.Item, call: pytest.CallInfo[None], report: pytest.TestReport) -> None:
        from testlane.pytest_plugin.lanes import lane_of
        from testlane.reports.failures import FACTS_ATTR, facts_from_excinfo

        facts: dict[str, Any] = {}
        if call.excinfo is not None:
            path, lineno, _ = item.location
            facts = facts_from_excinfo(call.excinfo, self.rootdir, nodeid_location=(path, (lineno or 0) + 1))
        facts["lane"] = lane_of(item)
        hints = _hints(item)
        if call.excinfo is not None:
            hints += self._stopped_servers(call.excinfo.value)
        if hints:
            facts["hints"] = hints
        said = list(hints)
        if facts.pop("suspended", False):  # pytest-timeout's thread stacks do not show a coroutine's await
            said.append(f"suspended at {facts['path']}:{facts['line']} in {facts['function']}: {facts.get('source')}")
        if said:
            report.sections.append(("testlane", "\n".join(said)))
        servers = self._server_lines(item)
        if servers:
            facts["servers"] = servers
            for name, lines in servers.items():
                report.sections.append((f"{name} server log {report.when}", "\n".join(lines)))
        setattr(report, FACTS_ATTR, facts)
