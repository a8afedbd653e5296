"""Where a thread or task is right now, in one short line, for timeout messages.

A seam helper that gives up on a caller says *where* that caller is stuck (``claims.py:31 in
claim -> psycopg/cursor.py:97 in execute``): that is usually the whole diagnosis (a lock wait, a
read on a paused server, a missing timeout).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from types import FrameType
from typing import Any

__all__ = ["frames_line", "task_location", "thread_location"]

_HERE = os.path.dirname(os.path.abspath(__file__)) + os.sep
_MACHINERY = (os.sep + "asyncio" + os.sep, os.sep + "concurrent" + os.sep, _HERE)


def _is_machinery(filename: str) -> bool:
    return filename.endswith(os.sep + "threading.py") or any(part in filename for part in _MACHINERY)


def frames_line(frames: list[FrameType], *, depth: int = 4) -> str:
    """The innermost ``depth`` frames (outermost first), skipping threading, asyncio and testlane.seams."""
    shown = [f for f in frames if not _is_machinery(f.f_code.co_filename)]
    parts = [f"{_short_path(f.f_code.co_filename)}:{f.f_lineno} in {f.f_code.co_name}" for f in shown[-depth:]]
    return " -> ".join(parts) or "(no Python frame)"


def thread_location(thread: threading.Thread, *, depth: int = 4) -> str:
    """Where ``thread`` is executing now (``"not running"`` once it has finished)."""
    if thread.ident is None or not thread.is_alive():
        return "not running"
    frame = sys._current_frames().get(thread.ident)
    frames: list[FrameType] = []
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    return frames_line(list(reversed(frames)), depth=depth)


def task_location(task: asyncio.Task[object], *, depth: int = 4) -> str:
    """Where ``task`` is suspended now (its innermost awaits)."""
    if task.done():
        return "not running"
    # Task.get_stack() gives one frame for a suspended coroutine; follow the await chain instead.
    frames: list[FrameType] = []
    awaited: Any = task.get_coro()
    while awaited is not None and len(frames) < 50:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is not None:
            frames.append(frame)
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return frames_line(frames, depth=depth)


def _short_path(path: str) -> str:
    """``site-packages/psycopg/cursor.py`` -> ``psycopg/cursor.py``; other paths relative to the cwd."""
    marker = f"site-packages{os.sep}"
    if marker in path:
        return path.split(marker, 1)[1]
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel
