"""Per-run credentials for the servers testlane starts, and the private files that carry them.

Every server testlane starts requires a password that is random per instance (:func:`new_password`).
A password never appears on a command line (``ps`` shows command lines to every local user): the
server reads it from a file written with :func:`write_private` — mode 0600, atomically
(never through a symbolic link), in the instance's own directory (mode 0700), owned by the user the
server runs as. Valkey reads it from its configuration file (``requirepass``), MariaDB from its
``--init-file`` (``ALTER USER ... IDENTIFIED BY``). Clients get it from the instance record (in the
state directory, private to the invoking user) and from the URLs testlane hands out.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from testlane.core.private import write_private_file
from testlane.services.privileges import ServiceUser

__all__ = ["new_password", "write_private"]


def new_password() -> str:
    """A random password: 32 URL-safe characters (192 bits), usable unquoted in URLs, SQL strings and
    Valkey configuration files."""
    return secrets.token_urlsafe(24)


def write_private(path: Path, text: str, user: ServiceUser | None = None) -> Path:
    """Write ``text`` to ``path`` readable only by its owner (0600): ``user`` when given (the server's,
    as root), else the current user. Atomic, never through a planted link
    (:func:`testlane.core.private.write_private_file`); raises ``OSError`` when the directory is not
    writable."""
    return write_private_file(path, text, owner=(user.uid, user.gid) if user is not None else None)
