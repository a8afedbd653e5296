"""Where an exception happened, in the project's own code: one rule for every report.

A frame is the project's when its file is under the project's root directory and not in an installed
package (``site-packages``) or the interpreter's own library. The failure reports, the discipline
checks (exceptions in threads and asyncio tasks) and the timeout's "suspended at" all point at the
innermost such frame: the line a user can open and change.
"""

from __future__ import annotations

import linecache
import re
import sys
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = [
    "AWAITING_ATTR",
    "BACKGROUND_ATTR",
    "Frame",
    "awaiting",
    "awaiting_project_frame",
    "background_cause",
    "describe",
    "describe_text",
    "is_project_file",
    "project_frame",
    "relative",
    "with_line_numbers",
]

_LIBRARY_DIRS = frozenset({"site-packages", "dist-packages"})
# On an exception: where the test's coroutines were suspended when it was raised (a timeout), as a list
# of :func:`awaiting` chains, the test's own first.
AWAITING_ATTR = "testlane_awaiting"
# On an exception that stands for one raised elsewhere: ``(where, that exception)``, e.g. ("asyncio: Task exception
# was never retrieved", KeyError(...)). Not its ``__cause__``: pytest would print the cause's traceback first.
BACKGROUND_ATTR = "testlane_background"
# pytest's wrappers for an exception in another thread or an unraisable one, made errors: the exception
# is their ``__cause__``, their message says where it happened.
_PYTEST_WRAPPERS = frozenset({"PytestUnhandledThreadExceptionWarning", "PytestUnraisableExceptionWarning"})


@dataclass(frozen=True)
class Frame:
    """One frame: its file (as Python names it), line and function."""

    filename: str
    lineno: int
    function: str

    def source(self) -> str | None:
        text = linecache.getline(self.filename, self.lineno).strip()
        return text[:120] or None


def is_project_file(path: Path, rootdir: Path) -> bool:
    try:
        rel = path.resolve().relative_to(rootdir)
    except (ValueError, OSError):
        return False
    if _LIBRARY_DIRS.intersection(rel.parts):
        return False
    return not any(str(path).startswith(prefix + "/") for prefix in {sys.prefix, sys.base_prefix} if prefix)


def relative(path: Path, rootdir: Path) -> str:
    try:
        return path.resolve().relative_to(rootdir).as_posix()
    except (ValueError, OSError):
        return str(path)


def project_frame(frames: Iterable[Frame], rootdir: Path) -> Frame | None:
    """The innermost of ``frames`` (outermost first) in the project's own code."""
    found = None
    for frame in frames:
        if frame.filename and not frame.filename.startswith("<") and is_project_file(Path(frame.filename), rootdir):
            found = frame
    return found


def _where(frame: Frame | None, rootdir: Path) -> str:
    if frame is None:
        return ""
    return f" at {relative(Path(frame.filename), rootdir)}:{frame.lineno} in {frame.function}"


def describe(exc: BaseException, rootdir: Path) -> str:
    """``Type: message at path:line in function`` (the innermost project frame of its traceback)."""
    frames = [Frame(f.filename, f.lineno or 0, f.name) for f in traceback.extract_tb(exc.__traceback__)]
    message = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {message[0]}" if message else type(exc).__name__
    return text + _where(project_frame(frames, rootdir), rootdir)


_FILE_LINE = re.compile(r'^\s*File "([^"]+)", line (\d+), in (\S+)')
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*)(?::\s(.*))?$")


def describe_text(text: str, rootdir: Path) -> str:
    """:func:`describe` for an exception already formatted as a traceback (a warning's text, a log)."""
    lines = text.splitlines()
    # A chained exception prints several tracebacks: the last one is the exception that was raised.
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback")]
    block = lines[starts[-1] :] if starts else lines
    frames = [Frame(m.group(1), int(m.group(2)), m.group(3)) for m in map(_FILE_LINE.match, block) if m]
    exception = None
    if starts:
        # The exception line is the first unindented line after the traceback's frames.
        exception = next((line for line in block[1:] if line and not line[0].isspace()), None)
    if exception is None or not _EXCEPTION_LINE.match(exception.split(":", 1)[0]):
        exception = next((line.strip() for line in lines if line.strip()), "")
    return exception + _where(project_frame(frames, rootdir), rootdir)


def awaiting(coro: Any) -> list[Frame]:
    """Where a suspended coroutine waits, outermost first: its frame, then each one it awaits.

    Follows ``cr_await`` (coroutines), ``gi_yieldfrom`` (generator-based awaitables) and ``ag_await``
    (async generators) until a future or anything without a frame.
    """
    frames: list[Frame] = []
    seen: set[int] = set()
    while coro is not None and id(coro) not in seen:
        seen.add(id(coro))
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None) or getattr(coro, "ag_frame", None)
        if frame is None:
            break
        frames.append(Frame(frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name))
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None) or getattr(coro, "ag_await", None)
    return frames


def awaiting_project_frame(exc: BaseException, rootdir: Path) -> Frame | None:
    """The innermost project frame a suspended coroutine waits in (set by the timeout), if any."""
    for chain in getattr(exc, AWAITING_ATTR, None) or ():
        frame = project_frame(chain, rootdir)
        if frame is not None:
            return frame
    return None


def _wrapped(exc: BaseException) -> tuple[BaseException, str] | None:
    ours = getattr(exc, BACKGROUND_ATTR, None)
    if isinstance(ours, tuple) and len(ours) == 2 and isinstance(ours[1], BaseException):
        return ours[1], str(ours[0])
    if exc.__cause__ is None or type(exc).__name__ not in _PYTEST_WRAPPERS:
        return None
    lines = str(exc).strip().splitlines()
    return exc.__cause__, lines[0] if lines else type(exc).__name__


def background_cause(exc: BaseException) -> tuple[BaseException, str] | None:
    """The exception a background-error wrapper stands for, and where it happened; or ``None``.

    A group of such wrappers (several threads failed) is described by its first member.
    """
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        members = [_wrapped(member) for member in exc.exceptions]
        return members[0] if all(members) else None
    return _wrapped(exc)


def with_line_numbers(tb: TracebackType | None) -> TracebackType | None:
    """``tb`` itself, or (when an entry maps to no source line) a copy whose such entries name their frame's line.

    CPython 3.11+ computes ``tb_lineno`` from the instruction an exception interrupted, and an instruction with no
    source location (exception clean-up code, where a timeout's ``SIGALRM`` can land) gives ``None``. pytest 9's
    failure report subtracts from it and raises: an INTERNALERROR that ends the run (under xdist, the worker and
    every test left to it). The copy names the frame's current line (``f_lineno``), else the function's first.
    """
    entries = []
    entry = tb
    while entry is not None:
        entries.append(entry)
        entry = entry.tb_next
    if all(entry.tb_lineno is not None for entry in entries):
        return tb
    rebuilt: TracebackType | None = None
    for entry in reversed(entries):
        frame = entry.tb_frame
        lineno = entry.tb_lineno or frame.f_lineno or frame.f_code.co_firstlineno
        rebuilt = TracebackType(rebuilt, frame, entry.tb_lasti, lineno)
    return rebuilt
