"""Per-test Redis/Valkey isolation: a leased *logical database* per test.

Why logical databases rather than key prefixes: tests (and the code under test) use plain clients
and any key names; nothing has to be rewritten, ``KEYS *`` and ``SCAN`` see only the test's keys,
and cleaning up is one ``FLUSHDB`` of the test's own database — never a ``FLUSHALL`` that would wipe
another worker's or another run's data. testlane's own Valkey servers start with
``valkey.databases`` (1024) logical databases, enough for any number of xdist workers.

A lease is ``SET testlane:lease:<n> <owner> NX EX <ttl>`` in database 0 (the coordination
database, never handed out): atomic across workers and runs, and self-expiring if its holder
dies. The leased database is flushed when taken (a crashed holder's leftovers) and when given back.
The last logical database is never leased: it is the one an application's mapped ``REDIS_URL`` uses
(see :mod:`testlane.services.env_mapping`).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any

from testlane.core.errors import ServiceError

__all__ = ["RedisLease", "lease_database"]

LEASE_TTL = 3600


@dataclass
class RedisLease:
    """Logical database ``db`` on a server, leased to one test."""

    host: str
    port: int
    db: int
    password: str | None
    _coordinator: Any

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/{self.db}"

    def client(self, **kwargs: Any) -> Any:
        import redis

        return redis.Redis(host=self.host, port=self.port, db=self.db, password=self.password, **kwargs)

    def async_client(self, **kwargs: Any) -> Any:
        import redis.asyncio

        return redis.asyncio.Redis(host=self.host, port=self.port, db=self.db, password=self.password, **kwargs)

    def release(self) -> None:
        """Flush the database and give it back."""
        pipe = self._coordinator.pipeline(transaction=False)
        pipe.execute_command("SELECT", self.db)
        pipe.flushdb()
        pipe.execute_command("SELECT", 0)
        pipe.delete(f"testlane:lease:{self.db}")
        pipe.execute()


def lease_database(
    coordinator: Any, host: str, port: int, *, password: str | None = None, owner: str | None = None
) -> RedisLease:
    """Lease a free logical database (1..N-1) using ``coordinator`` (a client on database 0)."""
    databases = _database_count(coordinator)
    if databases < 2:
        raise ServiceError(
            f"the Redis server at {host}:{port} has only {databases} logical database; per-test isolation "
            "needs several.",
            hint="start it with more (`--databases 1024`; testlane's own Valkey does this).",
        )
    tag = owner or f"{os.getpid()}"
    # Database 0 coordinates the leases; the last one is the application's (mapped REDIS_URL).
    candidates = list(range(1, databases - 1 if databases > 2 else databases))
    random.shuffle(candidates)
    for db in candidates:
        if coordinator.set(f"testlane:lease:{db}", tag, nx=True, ex=LEASE_TTL):
            pipe = coordinator.pipeline(transaction=False)
            pipe.execute_command("SELECT", db)
            pipe.flushdb()
            pipe.execute_command("SELECT", 0)
            pipe.execute()
            return RedisLease(host, port, db, password, coordinator)
    raise ServiceError(
        f"all {databases - 1} logical databases of the Redis server at {host}:{port} are leased.",
        hint="raise valkey.databases, or reduce the number of concurrent tests.",
    )


_counts: dict[int, int] = {}


def _database_count(client: Any) -> int:
    key = id(client)
    if key not in _counts:
        try:
            _counts[key] = int(client.config_get("databases")["databases"])
        except Exception:
            _counts[key] = 16  # CONFIG may be disabled on managed servers; 16 is Redis' default
    return _counts[key]
