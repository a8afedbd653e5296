"""How the PostgreSQL servers testlane starts let clients in.

* TCP (``127.0.0.1``, ``::1``): password authentication with ``scram-sha-256`` for every role; the
  superuser gets a random password per run (:func:`new_password`), set right after start from a
  verifier computed here (:func:`scram_verifier`), so the plaintext never crosses a connection or
  reaches the server's logs.
* The Unix socket: ``trust``, but the socket lives in the instance directory, which is private to the
  run (mode 0700, owned by the user the server runs as): only that user and root reach it. testlane's
  own first connection (the one that sets the password) goes through it.

The ``pg_hba.conf`` is written per start into the instance directory (:func:`write_hba`) and passed
as ``hba_file``, so what a cached cluster carries never decides who gets in.

The verifier is computed by hand (RFC 5802 / RFC 7677: PBKDF2-HMAC-SHA-256, then two HMACs and a
hash): psycopg has no helper for it outside a connection (libpq's ``PQencryptPasswordConn`` needs an
open connection and always uses the server's iteration count, 4096 by default), and the low iteration
count is the point (see ``postgres.scram_iterations``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from pathlib import Path

__all__ = ["HBA_FILE", "hba_lines", "md5_password", "scram_verifier", "stored_password", "write_hba"]

HBA_FILE = "pg_hba.conf"


def scram_verifier(password: str, *, iterations: int, salt: bytes | None = None) -> str:
    """The ``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`` text Postgres stores.

    ``ALTER ROLE ... PASSWORD '<this>'`` stores it as is (Postgres recognizes a verifier and does not
    hash it again). ``salt`` defaults to 16 random bytes. Raises ValueError for ``iterations < 1``.
    """
    if iterations < 1:
        raise ValueError(f"SCRAM iterations must be at least 1, not {iterations}")
    salt = salt if salt is not None else secrets.token_bytes(16)
    # Postgres normalizes passwords with SASLprep; ours are ASCII (token_urlsafe), which it keeps as is.
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode("ascii")

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def hba_lines(major: int) -> list[str]:
    """``pg_hba.conf`` lines: trust on the private socket, password authentication on TCP.

    Servers before 10 have no SCRAM; they get ``md5`` (the password is still random per run).
    """
    method = "scram-sha-256" if major >= 10 else "md5"
    return [
        "# written by testlane for this run: see testlane.services.postgres_auth",
        "local all all trust",
        f"host all all 127.0.0.1/32 {method}",
        f"host all all ::1/128 {method}",
    ]


def write_hba(directory: Path, major: int) -> Path:
    """Write ``pg_hba.conf`` into ``directory`` (world-readable: it holds no secret); returns its path."""
    path = directory / HBA_FILE
    path.write_text("\n".join(hba_lines(major)) + "\n")
    path.chmod(0o644)
    return path


def md5_password(password: str, user: str) -> str:
    """The ``md5...`` form Postgres before 10 stores (``md5`` + md5(password + user))."""
    return "md5" + hashlib.md5((password + user).encode("utf-8"), usedforsecurity=False).hexdigest()


def stored_password(password: str, user: str, *, major: int, iterations: int) -> str:
    """What ``ALTER ROLE user PASSWORD '...'`` should carry: a SCRAM verifier (10+), else the md5 form."""
    return scram_verifier(password, iterations=iterations) if major >= 10 else md5_password(password, user)
