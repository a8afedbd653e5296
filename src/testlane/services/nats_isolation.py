"""Per-test NATS/JetStream isolation: a leased *account* per test on testlane's own server, a subject
and stream-name prefix per test on an existing one.

Accounts (testlane's servers): the server starts with ``nats.accounts`` accounts ``T1``...``T<n>``, each
with JetStream enabled and its own user and password (see :mod:`testlane.services.nats`). A test leases
one, like a Valkey logical database: the lease is an exclusive ``flock`` on ``T<n>.lock`` in a
directory of the run (shared by the run's xdist workers; a holder that dies drops its lock with its
process). Subjects, streams, consumers, key-value and object stores of one account are invisible to
every other, so nothing a test names can collide with another test's: a ``>`` subscriber hears only
its own account, two tests may both create stream ``ORDERS`` with subjects ``orders.>`` and a durable
consumer ``worker``. Giving the account back deletes its streams (key-value buckets and object stores
are streams, ``KV_*`` and ``OBJ_*``; a stream's consumers go with it). The holder writes its name into
the lock file and empties it once the account is clean, so the next holder finds out that a holder
died mid-test and cleans first.

What an account does not isolate: connections. A client the test (or the code under test) leaves
open keeps its subscriptions; a test that follows in the same account may hear what is published to
them while the old client lives. Close clients in the test (the fixture's ``connect()`` clients are
the test's to close).

Prefixes (an existing server, ``url`` backend: testlane cannot create accounts there): the test gets
``subject_prefix`` ``tl.<run>.<8 hex>.`` and ``stream_prefix`` ``tl_<run>_<8 hex>_`` and must put them
in front of its subjects and stream names (and bucket names); giving it back deletes the streams with
its stream prefix (also as ``KV_``/``OBJ_`` streams). It is a convention, not enforced: a ``>`` (or any
wildcard) subscriber hears every test's and every run's messages, a stream without the prefix (or whose
subjects overlap another's: JetStream refuses overlapping subjects) collides, and durable consumer names
collide only within a stream, so they are isolated exactly when their stream is.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testlane.core.errors import ServiceError
from testlane.core.waiting import Deadline
from testlane.services.nats import NatsServer, connect_url, run_sync

if TYPE_CHECKING:
    import nats.aio.client

__all__ = ["JetStreamLease", "lease_jetstream", "reset_account"]

LEASE_WAIT = 30.0  # seconds a test waits for a free account before failing


@dataclass
class JetStreamLease:
    """One test's JetStream: an account of its own (``account`` ``T<n>``), or a prefix on a shared server."""

    url: str = field(repr=False)
    subject_prefix: str = ""
    stream_prefix: str = ""
    account: str = ""  # "T5"; "" on an existing server
    _fd: int | None = field(default=None, repr=False)
    _lock_path: Path | None = field(default=None, repr=False)

    def subject(self, name: str) -> str:
        """``name`` in the test's subject namespace (unchanged when an account isolates the test)."""
        return self.subject_prefix + name

    def stream(self, name: str) -> str:
        """``name`` as the test's stream (or bucket) name (unchanged when an account isolates the test)."""
        return self.stream_prefix + name

    async def connect(self, **kwargs: Any) -> nats.aio.client.Client:
        """A nats-py client logged into the test's account (``kwargs`` go to ``nats.connect``); the test
        closes it (``await client.close()``)."""
        return await connect_url(self.url, **kwargs)

    def release(self, *, reset: bool = True) -> None:
        """Delete what the test left (see module docstring) and give the account back; ``reset=False``
        (the server is gone): only give it back."""
        try:
            if reset:
                run_sync(lambda: reset_account(self.url, self.stream_prefix if not self.account else ""), timeout=30)
        finally:
            if self._fd is not None:
                if self._lock_path is not None:
                    os.ftruncate(self._fd, 0)
                with contextlib.suppress(OSError):
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
                self._fd = None


async def reset_account(url: str, stream_prefix: str = "") -> int:
    """Delete the streams of the account ``url`` logs into (only those named with ``stream_prefix``,
    as themselves or as ``KV_``/``OBJ_`` streams, when it is given); the number deleted."""
    client = await connect_url(url)
    deleted = 0
    try:
        js = client.jetstream(timeout=10)
        names = await js.streams_info()
        for info in names:
            name = info.config.name or ""
            if stream_prefix and not any(
                name.startswith(p) for p in (stream_prefix, f"KV_{stream_prefix}", f"OBJ_{stream_prefix}")
            ):
                continue
            await js.delete_stream(name)
            deleted += 1
    finally:
        await client.close()
    return deleted


def lease_jetstream(server: NatsServer, lock_dir: Path, *, owner: str = "", wait: float = LEASE_WAIT) -> JetStreamLease:
    """The test's JetStream on ``server``: a free account (locks in ``lock_dir``), or prefixes on an
    existing server. Raises :class:`ServiceError` naming ``nats.accounts`` when every account stays
    leased for ``wait`` seconds."""
    if server.instance.backend == "url" or server.accounts == 0:
        token = secrets.token_hex(4)
        run = server.instance.run_id
        return JetStreamLease(server.url, f"tl.{run}.{token}.", f"tl_{run}_{token}_")
    lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    count = server.accounts
    start = random.randrange(count)
    deadline = Deadline.after(wait)
    while True:
        for offset in range(count):
            index = 1 + (start + offset) % count
            path = lock_dir / f"T{index}.lock"
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            lease = JetStreamLease(server.account_url(index), account=f"T{index}", _fd=fd, _lock_path=path)
            try:
                if os.fstat(fd).st_size:  # its last holder died before cleaning up
                    run_sync(lambda lease=lease: reset_account(lease.url), timeout=30)  # type: ignore[misc]
                os.ftruncate(fd, 0)
                os.pwrite(fd, (owner or str(os.getpid())).encode("utf-8", "replace")[:500] + b"\n", 0)
            except BaseException:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
                raise
            return lease
        if deadline.remaining <= 0:
            raise ServiceError(
                f"no free NATS account on {server.name}: all {count} are leased by running tests (waited {wait:g} s).",
                hint="raise nats.accounts (one per concurrently running test, e.g. per xdist worker), or "
                "release leases sooner.",
            )
        time.sleep(min(0.02, deadline.remaining))  # polling the locks, under the deadline
