"""MariaDB/MySQL fixtures: the server, and a private migrated database per test.

Fixtures:

``mariadb``          (session) the run's :class:`~testlane.services.mariadb.MariaDbServer`: ``.url``,
                     ``.connect(db)``, ``.dsn(db)``; started on demand from the ``mariadb.backend``
``mysql_database``   the test's database: ``.name``, ``.url``, ``.isolation``, ``.connect()``, ``.sqlalchemy_url()``
``mysql_conn``       a PyMySQL connection to it (autocommit off)
``mysql_url``        its URL, ``mysql://root:<password>@127.0.0.1:PORT/tl_...``

Isolation comes from ``mariadb.isolation`` and per test from ``@pytest.mark.isolation("database" |
"transaction")`` (see docs/mariadb.md). Drivers load only when a fixture is used.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from testlane.pytest_plugin.boundary import around_test, own_work

if TYPE_CHECKING:
    import pymysql.connections

    from testlane.databases.mariadb.testdb import MysqlTestDatabase
    from testlane.pytest_plugin.databases import DatabaseManager
    from testlane.services.mariadb import MariaDbServer

__all__: list[str] = []


def _manager(request: pytest.FixtureRequest) -> DatabaseManager:
    from testlane.pytest_plugin.plugin import plugin_of

    return plugin_of(request.config).databases  # one manager for every engine (pytest_plugin/databases.py)


@pytest.fixture(scope="session")
def mariadb(pytestconfig: pytest.Config) -> Iterator[MariaDbServer]:
    """The run's MariaDB/MySQL server (``.url``, ``.connect(db)``, ``.dsn(db)``), started on demand."""
    from testlane.pytest_plugin.plugin import plugin_of

    yield plugin_of(pytestconfig).server("mariadb")


@pytest.fixture
def mysql_database(request: pytest.FixtureRequest) -> Iterator[MysqlTestDatabase]:
    """The test's own MariaDB/MySQL database (``database`` or ``transaction`` isolation)."""
    __tracebackhide__ = True
    from testlane.pytest_plugin.databases import _failed

    manager = _manager(request)
    nodeid = request.node.nodeid
    tdb = yield from around_test(
        lambda: manager.mysql_database_for(request.node),
        setup=f"{nodeid}: preparing its MariaDB database",
        teardown=lambda _: f"{nodeid}: cleaning up its MariaDB database",
    )
    with own_work(f"{nodeid}: cleaning up its MariaDB database"):
        problem = manager.mysql_problem(tdb, failed=_failed(request.node))
    if problem:
        pytest.fail(f"{nodeid}: {problem}", pytrace=False)


@pytest.fixture
def mysql_conn(
    mysql_database: MysqlTestDatabase, request: pytest.FixtureRequest
) -> Iterator[pymysql.connections.Connection]:
    """A PyMySQL connection to the test's database (autocommit off)."""
    from testlane.pytest_plugin.databases import connection_fixture

    yield from connection_fixture(request, "mysql_conn", mysql_database)


@pytest.fixture
def mysql_url(mysql_database: MysqlTestDatabase, request: pytest.FixtureRequest) -> str:
    """The test database's URL (``mysql://...``; ``mysql_database.sqlalchemy_url()`` for SQLAlchemy)."""
    _manager(request).warn_url(request.node, mysql_database, "mysql_url", "mysql_conn")
    return mysql_database.url
