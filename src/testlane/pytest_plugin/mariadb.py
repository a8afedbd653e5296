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

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from testlane.core.errors import TestlaneError
from testlane.pytest_plugin.plugin import fail_test, warn_at_test
from testlane.services.driver_errors import driver_errors

if TYPE_CHECKING:
    import pymysql.connections

    from testlane.databases.mariadb.engine import MariaDbPool
    from testlane.databases.mariadb.testdb import MysqlTestDatabase
    from testlane.pytest_plugin.plugin import TestlanePlugin
    from testlane.services.mariadb import MariaDbServer

__all__ = ["MariaDbManager"]

log = logging.getLogger("testlane")

MODES = ("database", "transaction")


class MariaDbManager:
    """The MariaDB template, clone pool and per-worker database of one pytest process."""

    def __init__(self, plugin: TestlanePlugin) -> None:
        self.plugin = plugin
        self.settings = plugin.settings
        self._server: MariaDbServer | None = None
        self._template: str | None = None
        self._template_error: TestlaneError | None = None
        self._pool: MariaDbPool | None = None
        self._worker_db: str | None = None
        self._url_warned = False

    @property
    def server(self) -> MariaDbServer:
        if self._server is None:
            self._server = self.plugin.server("mariadb")
        return self._server

    @property
    def run_id(self) -> str:
        from testlane.core.runtime import run_id_from_env

        return run_id_from_env() or self.plugin.provider.context.run_id

    def isolation_for(self, item: pytest.Item) -> str:
        marker = item.get_closest_marker("isolation")
        mode = self.settings.mariadb.isolation
        if marker is not None:
            mode = marker.args[0] if marker.args else marker.kwargs.get("mode", mode)
        if mode not in MODES:
            pytest.fail(
                f"{item.nodeid}: isolation {mode!r} is not available for MariaDB/MySQL (a MySQL schema is a "
                f"database); use one of {', '.join(MODES)}.",
                pytrace=False,
            )
        return str(mode)

    def template(self) -> str:
        """The migrated template's name, built on first use; a failed build fails every test the same way."""
        from testlane.databases.mariadb.template import ensure_template, spec_from_settings

        if self._template_error is not None:
            raise self._template_error
        if self._template is None:
            try:
                self._template = ensure_template(self.server, spec_from_settings(self.settings))
            except TestlaneError as exc:
                self._template_error = exc.blame("template (mariadb)")
                raise
        return self._template

    def pool(self) -> MariaDbPool:
        from testlane.databases.mariadb.engine import MariaDbDatabaseEngine
        from testlane.databases.naming import worker_id
        from testlane.databases.pool import ClonePool

        if self._pool is None:
            self._pool = ClonePool(
                MariaDbDatabaseEngine(self.server),
                self.template(),
                run_id=self.run_id,
                worker=worker_id(),
                size=self.settings.mariadb.pool_size,
                workers=1,
                drop_at_close=True,
            ).start()
        return self._pool

    def worker_database(self) -> str:
        """The worker's migrated database for transaction isolation (a clone of the template)."""
        from testlane.databases.mariadb.engine import admin_connection
        from testlane.databases.naming import worker_database_name, worker_id

        if self._worker_db is None:
            pool = self.pool()
            name = worker_database_name(self.run_id, worker_id(), "mt")
            with contextlib.closing(admin_connection(self.server)) as admin:
                pool.engine.create(admin, pool.template, name)
            self._worker_db = name
        return self._worker_db

    # -- per test ------------------------------------------------------------------------------
    def begin(self, item: pytest.Item) -> MysqlTestDatabase:
        from testlane.databases.guard import require_integration_lane
        from testlane.databases.mariadb.testdb import MysqlTestDatabase

        require_integration_lane(f"{item.nodeid} (fixture mysql_database)")
        mode = self.isolation_for(item)
        server = self.server
        if mode == "database":
            lease = self.pool().acquire()
            return MysqlTestDatabase(lease.name, lease.url, server, "database", lease=lease)
        from testlane.databases.mariadb.transaction import MysqlSavepointConnection

        name = self.worker_database()
        conn = MysqlSavepointConnection(**server.conninfo(name), autocommit=False)
        conn.begin_test()
        return MysqlTestDatabase(name, server.dsn(name), server, "transaction", savepoint_conn=conn)

    def end(self, tdb: MysqlTestDatabase, *, failed: bool) -> str | None:
        """Undo the test's work; a message when transaction isolation did not hold (else None)."""
        if tdb.lease is not None:
            self.pool().release(tdb.lease)
            return None
        conn = tdb.savepoint_conn
        assert conn is not None, "a transaction-isolated database has its savepoint connection"
        try:
            intact = conn.end_test()
        finally:
            conn.close()
        if not intact:
            self._drop_worker_database()  # the next test gets a fresh one
            return (
                "transaction isolation did not hold: a statement committed the test's transaction implicitly "
                "(DDL, or another statement that ends a transaction in MySQL/MariaDB, e.g. inside a stored "
                "procedure), so writes made before it were committed. The worker's database was rebuilt. Use "
                "@pytest.mark.isolation('database') for this test."
            )
        if conn.refused and not failed:
            return (
                f"transaction isolation refused {', '.join(map(repr, conn.refused))}: the statement would have "
                "committed the test's transaction (the error was raised and swallowed). Use "
                "@pytest.mark.isolation('database') for tests that run DDL."
            )
        return None

    def warn_url(self, tdb: MysqlTestDatabase, item: pytest.Item) -> None:
        if tdb.isolation == "transaction" and not self._url_warned:
            self._url_warned = True
            warn_at_test(
                item,
                "mysql_url in transaction isolation: connections you open from this URL are NOT rolled back; "
                "use mysql_conn, or database isolation",
            )

    def _drop_worker_database(self) -> None:
        from testlane.databases.mariadb.template import drop_database

        name, self._worker_db = self._worker_db, None
        if name is not None:
            with contextlib.closing(self.server.connect()) as admin:
                drop_database(admin, name)

    def close(self) -> None:
        """Drop what this process made: the pool's clones and the worker's database."""
        if self._pool is not None:
            self._pool.close()
        if self._worker_db is not None:
            try:
                self._drop_worker_database()
            except Exception as exc:
                log.warning("could not drop the MariaDB worker database: %s", exc)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def _testlane_mariadb(pytestconfig: pytest.Config) -> Iterator[MariaDbManager]:
    """The session's :class:`MariaDbManager`; closed (its databases dropped) before the servers stop."""
    from testlane.pytest_plugin.plugin import plugin_of

    manager = MariaDbManager(plugin_of(pytestconfig))
    try:
        yield manager
    finally:
        manager.close()


@pytest.fixture(scope="session")
def mariadb(pytestconfig: pytest.Config) -> Iterator[MariaDbServer]:
    """The run's MariaDB/MySQL server (``.url``, ``.connect(db)``, ``.dsn(db)``), started on demand."""
    from testlane.pytest_plugin.plugin import plugin_of

    yield plugin_of(pytestconfig).server("mariadb")


def _call_failed(item: pytest.Item) -> bool:
    from testlane.pytest_plugin.databases import outcome_key

    return any(report.failed for report in item.stash.get(outcome_key, {}).values())


@pytest.fixture
def mysql_database(request: pytest.FixtureRequest, _testlane_mariadb: MariaDbManager) -> Iterator[MysqlTestDatabase]:
    """The test's own MariaDB/MySQL database (``database`` or ``transaction`` isolation)."""
    __tracebackhide__ = True
    manager = _testlane_mariadb
    nodeid = request.node.nodeid
    try:
        with driver_errors(f"{nodeid}: preparing its MariaDB database"):
            tdb = manager.begin(request.node)
    except TestlaneError as exc:
        fail_test(exc)
    try:
        yield tdb  # the test runs here: its own driver errors are its own, never translated
    finally:
        try:
            with driver_errors(f"{nodeid}: cleaning up its MariaDB database"):
                problem = manager.end(tdb, failed=_call_failed(request.node))
        except TestlaneError as exc:
            fail_test(exc)
    if problem:
        pytest.fail(f"{request.node.nodeid}: {problem}", pytrace=False)


@pytest.fixture
def mysql_conn(mysql_database: MysqlTestDatabase) -> Iterator[pymysql.connections.Connection]:
    """A PyMySQL connection to the test's database (autocommit off)."""
    if mysql_database.savepoint_conn is not None:
        yield mysql_database.savepoint_conn
        return
    conn = mysql_database.connect(autocommit=False)
    try:
        yield conn
    finally:
        with contextlib.suppress(Exception):
            conn.close()


@pytest.fixture
def mysql_url(
    mysql_database: MysqlTestDatabase, _testlane_mariadb: MariaDbManager, request: pytest.FixtureRequest
) -> str:
    """The test database's URL (``mysql://...``; ``mysql_database.sqlalchemy_url()`` for SQLAlchemy)."""
    _testlane_mariadb.warn_url(mysql_database, request.node)
    return mysql_database.url
