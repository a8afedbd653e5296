"""S3 fixtures: the run's endpoint, and a bucket of the test's own.

Fixtures:

``s3``         (session) the run's :class:`~testlane.services.s3.S3Server`: ``.endpoint_url``, ``.client()``
               (boto3, signed with the run's key), ``.access_key``/``.secret_key``/``.region``; started on
               demand from ``s3.backend``
``s3_bucket``  the test's own empty bucket (:class:`~testlane.databases.s3_isolation.S3Bucket`: ``.name``,
               ``.endpoint_url``, ``.url``, ``.client()``), deleted with its contents after the test. For the
               test's duration the project's ``[tool.testlane.env]`` variables that refer to ``{s3.*}`` are
               set with this bucket as ``{s3.bucket}``, and restored after.

Integration lane only (a real server). See docs/isolation.md for what a bucket per test cannot isolate.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from testlane.core.runenv import RunEnv
from testlane.pytest_plugin.boundary import around_test, own_work

if TYPE_CHECKING:
    from testlane.databases.s3_isolation import BucketPool, S3Bucket
    from testlane.services.s3 import S3Server

__all__: list[str] = []


@pytest.fixture(scope="session")
def s3(pytestconfig: pytest.Config) -> Iterator[S3Server]:
    """The run's S3 endpoint (``.endpoint_url``, ``.client()``), started on demand."""
    from testlane.pytest_plugin.plugin import plugin_of

    yield plugin_of(pytestconfig).server("s3")


@pytest.fixture(scope="session")
def _testlane_s3_pool(pytestconfig: pytest.Config) -> Iterator[BucketPool]:
    """This process's buckets created ahead (closed, and its buckets deleted, when the session ends)."""
    from testlane.databases.s3_isolation import BucketPool
    from testlane.pytest_plugin.plugin import plugin_of

    plugin = plugin_of(pytestconfig)
    server = plugin.server("s3")
    pool = BucketPool(server, size=plugin.settings.s3.pool_size)
    yield pool
    with own_work("deleting the session's S3 buckets"):
        pool.close()


@contextlib.contextmanager
def _bucket(request: pytest.FixtureRequest) -> Iterator[S3Bucket]:
    from testlane.databases.guard import require_integration_lane
    from testlane.pytest_plugin.lease_env import mapped_for_test
    from testlane.pytest_plugin.plugin import plugin_of

    nodeid = request.node.nodeid
    require_integration_lane(f"{nodeid} (fixture s3_bucket)", env=RunEnv.current())
    pool: BucketPool = request.getfixturevalue("_testlane_s3_pool")
    bucket = pool.lease()
    try:
        with mapped_for_test(plugin_of(request.config), "s3", bucket.server, {("s3", "bucket"): bucket.name}):
            yield bucket
    finally:
        pool.release(bucket)


@pytest.fixture
def s3_bucket(request: pytest.FixtureRequest) -> Iterator[S3Bucket]:
    """The test's own empty S3 bucket (``.name``, ``.endpoint_url``, ``.client()``), deleted after it."""
    __tracebackhide__ = True
    nodeid = request.node.nodeid
    yield from around_test(
        lambda: _bucket(request),
        setup=f"{nodeid}: creating its S3 bucket",
        teardown=lambda bucket: f"{nodeid}: deleting its S3 bucket {bucket.name}",
    )
