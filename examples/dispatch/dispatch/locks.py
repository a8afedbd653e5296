"""Advisory locks: at most one dispatcher per queue, the lock held by one Postgres session.

A session-level advisory lock (``pg_try_advisory_lock``) belongs to the connection that took it:
only ``pg_advisory_unlock`` *on that connection* releases it — or the end of that session, however
it ends (closed, terminated, the client gone). That makes it a good lease: a dispatcher that
crashes cannot leave its queue locked. It also means each lock needs a connection of its own,
kept open while the lock is held: a pooled connection handed back after acquiring (or a
different one used to unlock) breaks the lock. :class:`AdvisoryLocks` does it that way.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from typing import Any

import psycopg

Connect = Callable[[], Any]


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for a lock name (advisory locks take a bigint)."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class LockHandle:
    """A held lock: its ``name``, ``key`` and the ``connection`` (session) that holds it."""

    def __init__(self, name: str, key: int, connection: Any) -> None:
        self.name = name
        self.key = key
        self.connection = connection

    @property
    def released(self) -> bool:
        return self.connection is None

    def release(self) -> None:
        """Unlock on the holding session and close it. A lock whose session is gone went with it."""
        conn, self.connection = self.connection, None
        if conn is None:
            return
        try:
            conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
        except psycopg.OperationalError:
            pass  # the session ended (killed, network gone): the server released the lock then
        finally:
            conn.close()


class AdvisoryLocks:
    """Named, non-blocking locks, one session each. ``connect()`` opens a new connection."""

    def __init__(self, connect: Connect) -> None:
        self.connect = connect
        self._handles: list[LockHandle] = []

    def try_acquire(self, name: str) -> LockHandle | None:
        """The lock's handle if it was free, else ``None`` (never waits)."""
        key = lock_key(name)
        conn = self.connect()
        conn.autocommit = True
        try:
            got = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]
        except BaseException:
            conn.close()
            raise
        if not got:
            conn.close()
            return None
        handle = LockHandle(name, key, conn)
        self._handles.append(handle)
        return handle

    def close(self) -> None:
        """Release every lock still held (shutdown)."""
        for handle in self._handles:
            with contextlib.suppress(Exception):
                handle.release()
        self._handles.clear()
