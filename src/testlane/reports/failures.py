"""Turning a failing pytest report into a :class:`~testlane.reports.model.Failure`.

Two halves. In the process that runs the test, :func:`facts_from_excinfo` reads the live exception:
its type, message, the assertion's explanation, and the deepest frame in the project's own code (the
failing assertion, or the line of the fixture that raised). The facts travel on the report as a plain
dict (attribute ``testlane_failure``), which pytest-xdist serializes with the report. In the process
that reports, :func:`failure_from_report` combines them with the report's captured output; reports
without facts (collection errors, an xdist worker that crashed) are read from their text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from testlane.core.errors import TestlaneError
from testlane.core.tracebacks import awaiting_project_frame, background_cause
from testlane.core.tracebacks import is_project_file as _is_project_file
from testlane.core.tracebacks import relative as _relative
from testlane.reports.model import Failure, Kind

__all__ = ["FACTS_ATTR", "facts_from_excinfo", "failure_from_report", "internal_failure", "tail", "testlane_cause"]

FACTS_ATTR = "testlane_failure"
MAX_DETAIL_LINES = 60
MAX_TAIL_LINES = 40
_TESTLANE_DIR = Path(__file__).resolve().parents[1]
_PYTEST_DIRS = frozenset({"_pytest", "pluggy"})
# pytest's hints about its own verbosity: noise in a digest, which has its own folding.
_NOISE = re.compile(r"^\s*(Use -v to get more diff|.*use '-vv' to show|Full diff:|Omitting \d+ identical items)")


def dedent(lines: list[str]) -> list[str]:
    """Lines without the indentation they all share."""
    cut = min((len(line) - len(line.lstrip()) for line in lines if line.strip()), default=0)
    return [line[cut:] for line in lines]


def tail(text: str | None, lines: int = MAX_TAIL_LINES) -> list[str]:
    """The last ``lines`` non-blank lines of ``text``."""
    if not text:
        return []
    kept = [line.rstrip() for line in text.splitlines() if line.strip()]
    return kept[-lines:]


def _statement(entry: Any) -> str | None:
    try:
        text = str(entry.statement).strip()
    except Exception:  # source unavailable (compiled, deleted, generated)
        return None
    first = text.splitlines()[0].strip() if text else ""
    return first[:120] or None


def _message_lines(excinfo: Any) -> list[str]:
    value = excinfo.value
    argname = getattr(value, "argname", None)
    if excinfo.typename == "FixtureLookupError" and argname:
        return [getattr(value, "msg", None) or f"fixture {argname!r} not found"]
    text = str(value)
    return text.splitlines() or [""]


def _is_testlanes(excinfo: Any) -> bool:
    """Whether the message is testlane's own prose (a :class:`TestlaneError`, or ``pytest.fail`` and the
    like called by testlane's code): the reports never cut it."""
    if isinstance(excinfo.value, TestlaneError):
        return True
    for entry in reversed(list(excinfo.traceback)):
        path = Path(str(entry.path))
        if _PYTEST_DIRS.intersection(path.parts):
            continue  # pytest.fail, pytest.skip...: who called them is what counts
        try:
            path.resolve().relative_to(_TESTLANE_DIR)
        except (ValueError, OSError):
            return False
        return True
    return False


def testlane_cause(value: BaseException | None) -> TestlaneError | None:
    """The testlane error with a root cause behind ``value``: itself, or one it was raised from or
    while handling (the plugin fails a test with ``pytest.fail`` over the error: see ``boundary.fail_test``)."""
    seen: set[int] = set()
    while value is not None and id(value) not in seen:
        seen.add(id(value))
        if isinstance(value, TestlaneError) and value.cause:
            return value
        value = value.__cause__ or value.__context__
    return None


def _cause_facts(error: TestlaneError, rootdir: Path) -> dict[str, Any]:
    """The facts of a failure testlane caused: its cause, its type, and the file and line to fix."""
    # The error's own words: the test's framing ("could not provide postgres: ...") adds nothing to it.
    first, *rest = str(error).splitlines() or [""]
    facts: dict[str, Any] = {
        "cause": error.cause,
        "type": type(error).__name__,
        "message": first.strip(),
        "detail": dedent([line.rstrip() for line in rest if line.strip()]),  # testlane's own text: all of it
        "own": True,
    }
    if error.origin is not None:
        path, line = Path(error.origin[0]), error.origin[1]
        facts.update(path=_relative(path, rootdir), line=line)
        if line:
            try:
                text = path.read_text(encoding="utf-8", errors="replace").splitlines()[line - 1].strip()
            except (OSError, IndexError):
                text = ""
            facts["source"] = text[:120] or None
    else:  # no file to point at (a service, a set-up command): not the test's line either
        facts.update(path=None, line=None)
    # The project's files by their paths in the project, as the location says them.
    prefix = f"{rootdir}/"
    facts["message"] = facts["message"].replace(prefix, "")
    facts["detail"] = [line.replace(prefix, "") for line in facts["detail"]]
    return facts


def failure_from_error(error: TestlaneError, rootdir: Path) -> Failure:
    """A root cause of testlane's that stopped the run before any test (``testlane run`` could not start a
    service or build the template) as the failure the digest would show for the tests it broke."""
    facts = _cause_facts(error, rootdir)
    return Failure(
        nodeid="(start-up)",
        phase="setup",
        kind="error",
        exc_type=facts["type"],
        message=facts["message"],
        detail=facts["detail"],
        path=facts.get("path"),
        line=facts.get("line"),
        source=facts.get("source"),
        own=True,
        cause=facts["cause"],
    )


def facts_from_excinfo(
    excinfo: Any, rootdir: Path, *, nodeid_location: tuple[str, int] | None = None
) -> dict[str, Any]:
    """What a failure's exception says, as JSON-compatible data (runs in the test's process).

    An exception from a thread, an unraisable one or an asyncio task's, which pytest (or the discipline
    checks) re-raise wrapped, is described as itself: its type, message and innermost project frame;
    the wrapper's first line ("Exception in thread worker-1") becomes the first line of the detail.
    A timeout in an async test points at the ``await`` the test's coroutine is suspended on.
    """
    background = background_cause(excinfo.value)
    if background is not None:
        cause, context = background
        inner = type(excinfo).from_exception(cause)
        described = facts_from_excinfo(inner, rootdir, nodeid_location=nodeid_location)
        described["detail"] = [context, *described["detail"]][:MAX_DETAIL_LINES]
        return described
    lines = _message_lines(excinfo)
    facts: dict[str, Any] = {
        "type": excinfo.typename,
        "message": lines[0].strip(),
        "detail": dedent([line.rstrip() for line in lines[1:] if line.strip() and not _NOISE.match(line)])[
            :MAX_DETAIL_LINES
        ],
    }
    if _is_testlanes(excinfo):
        facts["own"] = True
        facts["detail"] = dedent([line.rstrip() for line in lines[1:] if line.strip()])  # all of it
    error = testlane_cause(excinfo.value)
    if error is not None:
        facts.update(_cause_facts(error, rootdir))
        return facts
    suspended = awaiting_project_frame(excinfo.value, rootdir)
    if suspended is not None:
        facts.update(
            path=_relative(Path(suspended.filename), rootdir),
            line=suspended.lineno,
            function=suspended.function,
            source=suspended.source(),
            suspended=True,  # pytest's own output says so too (FailureContext)
        )
        return facts
    chosen = None
    for entry in reversed(list(excinfo.traceback)):
        path = entry.path
        if not isinstance(path, Path):
            continue
        try:
            hidden = bool(entry.ishidden(excinfo))
        except Exception:  # an unusual frame; treat it as visible
            hidden = False
        if not hidden and _is_project_file(path, rootdir):
            chosen = entry
            break
    if chosen is not None:
        facts.update(
            path=_relative(chosen.path, rootdir),
            line=chosen.lineno + 1,
            function=chosen.name,
            source=_statement(chosen),
        )
    elif nodeid_location is not None:
        facts.update(path=nodeid_location[0], line=nodeid_location[1])
    return facts


# --------------------------------------------------------------------------- reporting side

TIMEOUT_MESSAGE = re.compile(r"Timeout \(>([\d.]+s)\) from pytest-timeout\.?")  # group 1: the limit
_CRASH = re.compile(r"worker '[^']+' crashed|node down|Fatal Python error|Segmentation fault")
_E_LINE = re.compile(r"^E(\s.*)$")


def _kind(phase: str, exc_type: str, message: str) -> Kind:
    if phase == "collect":
        return "collection"
    if TIMEOUT_MESSAGE.search(message):
        return "timeout"
    if _CRASH.search(message):
        return "crash"
    if phase in ("setup", "teardown"):
        return "error"
    if exc_type == "AssertionError":
        return "assertion"
    return "failure"


_TYPE_AND_MESSAGE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Failed|Warning)): (.*)$")
# Locations in a report's text: pytest's "path.py:12: in f" lines and Python's 'File "path", line 12'.
_LOCATIONS = re.compile(r'^\s*(?:E\s+)?(?:([^\s:"]+\.py):(\d+): |File "([^"]+)", line (\d+))')


def _last_project_location(text: str, rootdir: Path | None) -> tuple[str, int] | None:
    found = None
    for line in text.splitlines():
        match = _LOCATIONS.match(line)
        if not match:
            continue
        raw, number = (match.group(1), match.group(2)) if match.group(1) else (match.group(3), match.group(4))
        path = Path(raw)
        if rootdir is not None:
            absolute = path if path.is_absolute() else rootdir / path
            if not _is_project_file(absolute, rootdir):
                continue
            path = Path(_relative(absolute, rootdir))
        found = (path.as_posix(), int(number))
    return found


def _facts_from_text(report: Any, rootdir: Path | None) -> dict[str, Any]:
    """Facts read from a report's representation (no live exception available)."""
    longrepr = report.longrepr
    crash = getattr(longrepr, "reprcrash", None)
    text = str(getattr(report, "longreprtext", "") or "")
    facts: dict[str, Any] = {"type": "", "message": "", "detail": []}
    e_lines = dedent([m.group(1).rstrip() for m in map(_E_LINE.match, text.splitlines()) if m])
    if crash is not None and getattr(crash, "message", None):
        first, *rest = str(crash.message).splitlines() or [""]
        facts["message"] = first
        facts["detail"] = dedent([line for line in rest if line.strip() and not _NOISE.match(line)])[:MAX_DETAIL_LINES]
        path = Path(str(crash.path))
        if rootdir is not None and path.is_absolute():
            path = Path(_relative(path, rootdir))
        facts["path"], facts["line"] = path.as_posix(), crash.lineno
    elif e_lines:
        # The exception is the last "Type: message" line; the lines before it are its context.
        typed = [i for i, line in enumerate(e_lines) if _TYPE_AND_MESSAGE.match(line.strip())]
        index = typed[-1] if typed else 0
        facts["message"] = e_lines[index].strip()
        context = [line for line in e_lines[:index] if not _LOCATIONS.match(line)]
        facts["detail"] = dedent(context + e_lines[index + 1 :])[:MAX_DETAIL_LINES]
    else:
        lines = [line for line in text.splitlines() if line.strip()]
        facts["message"] = lines[-1].strip() if lines else "(no message)"
    type_and_message = _TYPE_AND_MESSAGE.match(facts["message"])
    if type_and_message:
        facts["type"] = type_and_message.group(1).rsplit(".", 1)[-1]
        facts["message"] = type_and_message.group(2)
    if "path" not in facts:
        location = _last_project_location(text, rootdir)
        if location is not None:
            facts["path"], facts["line"] = location
        else:
            where = getattr(report, "location", None)
            if where and where[0]:
                facts["path"] = where[0]
                facts["line"] = where[1] + 1 if where[1] is not None else None
    return facts


def _sections(report: Any, prefix: str) -> str:
    return "\n".join(content for name, content in getattr(report, "sections", ()) if name.startswith(prefix))


def failure_from_report(report: Any, *, phase: str | None = None, rootdir: Path | None = None) -> Failure:
    """A :class:`Failure` from a failing TestReport or CollectReport (runs where reports are made)."""
    phase = phase or getattr(report, "when", None) or "collect"
    facts = getattr(report, FACTS_ATTR, None)
    if not isinstance(facts, dict):
        facts = {}
    if not facts.get("message") and not facts.get("type"):
        facts = {**_facts_from_text(report, rootdir), **{k: v for k, v in facts.items() if v}}
    message = str(facts.get("message") or "")
    exc_type = str(facts.get("type") or "")
    servers = facts.get("servers") or {}
    output = tail(_sections(report, "Captured stdout"), 20) + tail(_sections(report, "Captured stderr"), 20)
    return Failure(
        nodeid=report.nodeid or str(getattr(report, "fspath", "")),
        phase=phase,
        kind=_kind(phase, exc_type, message),
        exc_type=exc_type,
        message=message,
        detail=list(facts.get("detail") or []),
        path=facts.get("path"),
        line=facts.get("line"),
        function=facts.get("function"),
        source=facts.get("source"),
        logs=tail(_sections(report, "Captured log"), MAX_TAIL_LINES),
        output=output[-MAX_TAIL_LINES:],
        servers={str(k): list(v) for k, v in servers.items()} if isinstance(servers, dict) else {},
        lane=facts.get("lane"),
        own=bool(facts.get("own")),
        hints=[str(hint) for hint in facts.get("hints") or []],
        cause=facts.get("cause"),
    )


def internal_failure(lines: Sequence[str]) -> Failure:
    """A pytest INTERNALERROR as a failure: its last exception line and where it happened."""
    text = [line.removeprefix("INTERNALERROR>").rstrip() for line in lines]
    message = next((line.strip() for line in reversed(text) if line.strip()), "INTERNALERROR")
    location = None
    for line in reversed(text):
        match = re.search(r'File "([^"]+)", line (\d+)', line)
        if match:
            location = (match.group(1), int(match.group(2)))
            break
    exc_type, _, rest = message.partition(": ")
    return Failure(
        nodeid="(session)",
        phase="session",
        kind="internal",
        exc_type=exc_type if rest else "",
        message=rest or message,
        detail=[],
        path=location[0] if location else None,
        line=location[1] if location else None,
    )
