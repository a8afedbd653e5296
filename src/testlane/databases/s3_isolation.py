"""Per-test S3 isolation: a bucket per test, created ahead and deleted after the test in the background.

Each pytest process keeps a :class:`BucketPool`: ``s3.pool_size`` empty buckets created ahead by a
background thread, named ``tl-<run id>-<6 hex of this process>-<n>`` (unique per run and test; within
S3's naming rules: 3-63 lower-case letters, digits and hyphens). A test takes one (no round trip when the
pool has one ready); when it ends the bucket is handed to the same thread, which empties (every version,
delete marker and unfinished multipart upload) and deletes it while the next test runs. The pool's
closing waits for that thread and deletes the buckets nobody took.

On an endpoint that outlives the run (an existing one, the ``url`` backend, or a detached one, ``testlane
services start``) every bucket is also tagged with the run's owner record
(:mod:`testlane.databases.owner`), and only buckets whose name *and* tag say they are testlane's are
ever emptied or deleted: the run's own when it ends (:meth:`testlane.services.s3.S3Server.stop`, existing
endpoints; each pool deletes its own buckets anyway), and those of dead runs of this host when a pool
starts (:func:`reap_leftovers`).

What a bucket per test does not isolate: anything account-wide. ``ListBuckets`` lists every test's
buckets (and the application's); IAM users, policies and access keys are the run's, shared by every
test; account-level settings (public access block, S3 Control) are shared. A test that needs them alone
runs in a session of its own.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from testlane.databases.owner import OwnerRecord, this_host
from testlane.services.process import pid_alive
from testlane.services.s3 import S3Server, run_bucket_prefix
from testlane.services.s3_buckets import create_bucket, delete_bucket, owner_tag

__all__ = ["BucketPool", "S3Bucket", "ensure_app_bucket", "reap_leftovers"]

log = logging.getLogger("testlane")


@dataclass
class S3Bucket:
    """The test's own bucket on the run's S3 endpoint."""

    name: str
    server: S3Server = field(repr=False)

    @property
    def endpoint_url(self) -> str:
        return self.server.endpoint_url

    @property
    def url(self) -> str:
        """The bucket's path-style URL: ``http://127.0.0.1:PORT/tl-...``."""
        return f"{self.endpoint_url}/{self.name}"

    @property
    def region(self) -> str:
        return self.server.region

    def client(self, **kwargs: Any) -> Any:
        """A boto3 S3 client with the run's credentials (``kwargs`` go to ``boto3.client``)."""
        return self.server.client(**kwargs)


def _owner(server: S3Server) -> str | None:
    """The owner record to tag buckets with: on endpoints that outlive the run only (existing or detached;
    a run's own server goes away with its buckets)."""
    if not server.instance.outlives_run:
        return None
    from testlane.core.runtime import owner_pid

    inst = server.instance
    return OwnerRecord.for_run(inst.run_id, inst.owner_pid if inst.owner_pid is not None else owner_pid()).render()


def ensure_app_bucket(server: S3Server, client: Any | None = None) -> str:
    """Create the run's application bucket (``{s3.bucket}``) unless it exists; its name."""
    from botocore.exceptions import ClientError

    name = server.app_bucket
    client = client or server.client()
    # On a detached endpoint the application bucket is the detached services' (`testlane services env` points
    # the shell at it): untagged, no session's reaper ever takes it; it goes when they stop.
    owner = _owner(server) if server.instance.backend == "url" else None
    try:
        create_bucket(client, name, region=server.region, owner=owner)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    return name


def reap_leftovers(server: S3Server, client: Any) -> list[str]:
    """Delete the buckets of dead runs of this host on an existing or detached endpoint (name and owner tag
    agree). On a detached endpoint every session names its buckets after the endpoint's run (so they share a
    prefix): there the owner's pid alone tells a dead session's from a live one's.

    Creating a bucket and tagging it are two requests: a session killed between them leaves a bucket with
    no tag. Such a bucket is deleted only when a tagged bucket of the same pool (``tl-<run id>-<6 hex>-``,
    random per pytest process) proves that pool's owner gone, as :mod:`testlane.databases.leftovers` does
    for an unmarked database; any other untagged bucket is never guessed at.
    """
    host = this_host()
    own = run_bucket_prefix(server.instance.run_id) if server.instance.backend == "url" else None
    gone_pools: set[str] = set()
    untagged: list[str] = []
    doomed: list[str] = []
    for bucket in client.list_buckets().get("Buckets", []):
        name = str(bucket["Name"])
        if not name.startswith("tl-") or (own is not None and name.startswith(own)):
            continue
        tag = owner_tag(client, name)
        if tag is None:
            untagged.append(name)
            continue
        record = OwnerRecord.parse(tag)
        if record is None or not name.startswith(run_bucket_prefix(record.run_id)) or record.host != host:
            continue
        if pid_alive(record.pid, record.ctime):
            continue
        doomed.append(name)
        gone_pools.add(_pool_prefix(name))
    doomed += [name for name in untagged if _pool_prefix(name) in gone_pools]
    deleted = []
    for name in doomed:
        try:
            delete_bucket(client, name)
            deleted.append(name)
        except Exception as exc:
            log.warning("could not delete the leftover S3 bucket %s: %s", name, exc)
    if deleted:
        log.info("deleted %d leftover S3 bucket(s) of dead runs: %s", len(deleted), ", ".join(deleted))
    return deleted


def _pool_prefix(name: str) -> str:
    """``tl-<run id>-<6 hex>-`` of a pool's bucket ``tl-<run id>-<6 hex>-<n>`` (see :class:`BucketPool`)."""
    return name.rsplit("-", 1)[0] + "-"


class BucketPool:
    """Buckets for one pytest process's tests (see module docstring)."""

    def __init__(self, server: S3Server, *, size: int = 2) -> None:
        self.server = server
        self.size = size
        self.prefix = f"{run_bucket_prefix(server.instance.run_id)}{secrets.token_hex(3)}-"
        self.client = server.client()
        self._owner = _owner(server)
        self._count = 0
        self._ready: deque[str] = deque()
        self._lock = threading.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="testlane-s3-buckets")
        self._pending: list[Future[None]] = []
        self._errors: list[BaseException] = []
        if server.instance.outlives_run:  # an existing or detached endpoint: what dead sessions left there
            self._submit(self._reap)
        self._refill()

    def _reap(self) -> None:
        reap_leftovers(self.server, self.client)

    def _next_name(self) -> str:
        with self._lock:
            self._count += 1
            return f"{self.prefix}{self._count}"

    def _create(self) -> str:
        name = self._next_name()
        create_bucket(self.client, name, region=self.server.region, owner=self._owner)
        return name

    def _submit(self, job: Callable[[], None]) -> None:
        def run() -> None:
            try:
                job()
            except BaseException as exc:  # reported when the pool closes
                self._errors.append(exc)

        self._pending = [f for f in self._pending if not f.done()]
        self._pending.append(self._worker.submit(run))

    def _refill(self) -> None:
        def fill() -> None:
            while True:
                with self._lock:
                    if len(self._ready) >= self.size:
                        return
                name = self._create()
                with self._lock:
                    self._ready.append(name)

        if self.size > 0:
            self._submit(fill)

    def lease(self) -> S3Bucket:
        """An empty bucket of the test's own (from the pool when one is ready, else created now)."""
        with self._lock:
            name = self._ready.popleft() if self._ready else None
        if name is None:
            name = self._create()
        self._refill()
        return S3Bucket(name, self.server)

    def release(self, bucket: S3Bucket) -> None:
        """Empty and delete the test's bucket in the background (not when the server is gone)."""
        if self.server.gone():
            return
        self._submit(lambda: delete_bucket(self.client, bucket.name))

    def close(self, timeout: float = 60.0) -> None:
        """Wait for the deletions, delete the buckets nobody took; raise the first background error."""
        with self._lock:
            self.size = 0
        if self.server.gone():  # its buckets went with it: nothing to wait for or delete
            self._worker.shutdown(wait=False, cancel_futures=True)
            return
        deadline = time.monotonic() + timeout
        for future in list(self._pending):
            future.result(timeout=max(0.0, deadline - time.monotonic()))
        with self._lock:
            unused, self._ready = list(self._ready), deque()
        for name in unused:
            delete_bucket(self.client, name)
        self._worker.shutdown(wait=True)
        if self._errors:
            raise self._errors[0]
