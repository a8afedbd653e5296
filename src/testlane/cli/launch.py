"""The ``testlane`` command's entry point: an interrupt while the command is still importing itself.

``testlane.cli.main`` imports click, rich and the services layer (about 0.2-0.3 s); a Ctrl-C in that time
would print the import's traceback. This module imports only the standard library, so the console script
reaches :func:`main` at once; an interrupt before the command's own handlers are installed ends with one
line and 130 (128 + SIGINT), as one during the services' start does. Nothing has been started by then.
"""

from __future__ import annotations

import signal
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    """Import and run the command (:func:`testlane.cli.main.main`); exits 130 when interrupted while importing."""
    try:
        from testlane.cli.main import main as command
    except BaseException as exc:
        if not _interrupted(exc):
            raise
        sys.stderr.write("testlane: interrupted (SIGINT) while starting; nothing was started\n")
        raise SystemExit(128 + signal.SIGINT) from None
    command(argv)


def _interrupted(exc: BaseException | None) -> bool:
    """Whether ``exc`` is a KeyboardInterrupt or was caused by one: Python wraps one raised in a class body's
    ``__set_name__`` (a dataclass field being defined) in a RuntimeError."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False
