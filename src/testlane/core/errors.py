"""testlane's exceptions: one root, one class per kind of user mistake.

Every error a user can cause says three things: what happened, what testlane
checked (when that helps), and what to do. The message is the first line(s);
``hint`` is the advice, rendered after it. Tracebacks are for testlane's bugs,
not for user mistakes: the CLI prints ``str(error)`` and exits, the pytest
plugin reports it with ``pytrace=False``.

Hierarchy::

    TestlaneError
    ├── ConfigError              bad [tool.testlane] key/value, TESTLANE_* variable or option
    ├── ServiceError             a service could not be found, started or reached
    │   ├── BinaryNotFoundError  no server executable where we looked
    │   ├── ServiceStartError    the server did not become ready (carries the log tail)
    │   ├── PortUnavailableError no free port could be reserved / the port is taken
    │   ├── PrivilegeError       running as root and no unprivileged user could be used
    │   └── UnreachableError     an existing server given by URL did not answer
    ├── DatabaseError            something inside a server went wrong
    │   ├── MigrationError       a migration source failed (file, statement, server error)
    │   ├── ExtensionMissingError a required extension is not installed in these binaries
    │   └── UnsafeDatabaseError  a helper was pointed at a database testlane did not create
    ├── LaneError                integration-lane helper used outside the integration lane
    └── SeamError                a seam helper (testlane.seams) could not do what was asked:
                                 a racer's setup failed, a process could not be signalled, ...

Root causes: an error that many tests can hit at once (a service that cannot start, a template whose
migration fails, a set-up command that exits non-zero) carries ``cause``, a stable key naming what
broke ("migration migrations/002.sql:3", "service postgres"), and ``origin``, the file and line to fix
when known. The reports group failures by ``cause`` instead of by message text, so one broken
migration is one root cause however many tests needed the template, in one process or in many.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Self, TypeVar

from testlane.core.redact import redact

# A file to fix and its line (None when only the file is known).
Origin = tuple[str, int | None]

__all__ = [
    "BinaryNotFoundError",
    "ConfigError",
    "DatabaseError",
    "ExtensionMissingError",
    "LaneError",
    "MigrationError",
    "Origin",
    "PortUnavailableError",
    "PrivilegeError",
    "SeamError",
    "ServiceError",
    "ServiceStartError",
    "TestlaneError",
    "UnreachableError",
    "UnsafeDatabaseError",
    "config_errors",
]

E = TypeVar("E", bound=BaseException)


class TestlaneError(Exception):
    """Root of every error testlane raises on purpose.

    ``message`` says what happened; ``hint`` says what to do about it. Both are passed through
    :func:`~testlane.core.redact.redact`: a URL or connection string quoted in an error never shows
    its password.
    """

    __test__ = False  # not a test class, whatever pytest's name patterns say

    def __init__(
        self, message: str, *, hint: str | None = None, cause: str | None = None, origin: Origin | None = None
    ) -> None:
        message = redact(message)
        hint = redact(hint) if hint else hint
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.cause = cause
        self.origin = origin

    def blame(self, cause: str, origin: Origin | None = None) -> Self:
        """Give the error a root-cause identity (see the module's docstring), unless it has one already:
        the place that raised it knows best (a migration's file and line beats "the template")."""
        if self.cause is None:
            self.cause = cause
        if self.origin is None:
            self.origin = origin
        return self

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class ConfigError(TestlaneError):
    """Raised when configuration (pyproject, environment, options) is invalid."""


@contextlib.contextmanager
def config_errors(catch: type[E], message: Callable[[E], str], hint: str) -> Iterator[None]:
    """Turn a ``catch`` raised in the block into a :class:`ConfigError` of ``message(exc)`` and ``hint``.

    The original is left out of the traceback (``from None``): the message says what of it matters.
    """
    try:
        yield
    except catch as exc:
        raise ConfigError(message(exc), hint=hint) from None


class ServiceError(TestlaneError):
    """Raised when a service cannot be found, started, stopped or reached."""


class BinaryNotFoundError(ServiceError):
    """Raised when no server executable is found; the message lists every place looked."""


class ServiceStartError(ServiceError):
    """Raised when a server process exits or does not become ready in time.

    ``log_tail`` holds the last lines of the server's log; they are part of the message.
    """

    def __init__(self, message: str, *, hint: str | None = None, log_tail: str = "", cause: str | None = None) -> None:
        if log_tail:
            message = f"{message}\n--- last lines of the server log ---\n{log_tail.rstrip()}\n---"
        super().__init__(message, hint=hint, cause=cause)
        self.log_tail = redact(log_tail)


class PortUnavailableError(ServiceError):
    """Raised when no free port could be reserved, or a configured port is taken."""


class PrivilegeError(ServiceError):
    """Raised when testlane runs as root and cannot run a server as an unprivileged user."""


class UnreachableError(ServiceError):
    """Raised when an existing server given by URL does not accept connections."""


class DatabaseError(TestlaneError):
    """Raised when an operation inside a database server fails."""


class MigrationError(DatabaseError):
    """Raised when a migration source fails; names the file, the statement and the server error."""


class ExtensionMissingError(DatabaseError):
    """Raised when a migration needs a Postgres extension the chosen binaries do not ship."""


class UnsafeDatabaseError(DatabaseError):
    """Raised when a helper is pointed at a database testlane did not create."""


class LaneError(TestlaneError):
    """Raised when an integration-lane helper is used outside the integration lane."""


class SeamError(TestlaneError):
    """Raised when a seam helper cannot do what was asked.

    Examples: a racer's ``setup`` raised (the race never started), a process to pause or kill is
    not on this machine or may not be signalled, a paused process had to be resumed by the watchdog.
    A seam helper that runs out of time raises :class:`~testlane.core.waiting.WaitTimeout` instead.
    """
