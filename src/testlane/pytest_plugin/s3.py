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
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from testlane.core.runenv import RunEnv, restore
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
    from testlane.pytest_plugin.plugin import plugin_of
    from testlane.services.env_mapping import render_mapping

    nodeid = request.node.nodeid
    require_integration_lane(f"{nodeid} (fixture s3_bucket)", env=RunEnv.current())
    pool: BucketPool = request.getfixturevalue("_testlane_s3_pool")
    bucket = pool.lease()
    saved: dict[str, str | None] = {}
    try:
        mapping = plugin_of(request.config).settings.env
        if mapping:
            values = render_mapping(
                mapping,
                {"s3": bucket.server},
                only="s3",
                only_available=True,
                overrides={("s3", "bucket"): bucket.name},
            )
            for key, value in values.items():
                saved[key] = os.environ.get(key)
                os.environ[key] = value
        yield bucket
    finally:
        restore(os.environ, saved)
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
