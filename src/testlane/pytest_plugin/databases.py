"""Per-test database and Redis fixtures, markers, and keep-on-failure.

Fixtures (function scope):

``pg_database``        the test's database: ``.name``, ``.url``, ``.isolation``, ``.connect()``
``pg_url``             its URL (libpq form; ``.replace`` the scheme for other drivers, or use ``db_url``)
``pg_conn``            a psycopg connection to it (already open in ``database`` mode)
``pg_aconn``           the same, async (needs pytest-asyncio)
``db_engine``          a SQLAlchemy ``Engine`` on it (psycopg driver)
``db_session``         a SQLAlchemy ``Session`` (in ``transaction`` mode joined to the rolled-back transaction)
``async_db_engine``    an ``AsyncEngine`` (asyncpg when installed, else psycopg), needs pytest-asyncio
``async_db_session``   an ``AsyncSession``, likewise
``redis_db``           a leased logical Valkey/Redis database: ``.url``, ``.db``, ``.client()``, ``.channel_prefix``
``redis_client``       a redis-py client on it;  ``redis_url`` its URL;  ``aredis_client`` async
``redis_channel_prefix`` the test's pub/sub namespace (channels ignore logical databases)

Markers: ``@pytest.mark.isolation("database"|"transaction"|"schema")`` and
``pytest.mark.migrations(SPEC, seed=[...], extensions=[...])`` (usually as a module's ``pytestmark``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pytest

from testlane.core.errors import ConfigError, TestlaneError
from testlane.core.redact import redact_nodeid, redact_url
from testlane.core.runenv import RunEnv
from testlane.databases.testdb import IsolatedDatabase, Isolation, TestDatabase
from testlane.pytest_plugin.boundary import around_test, warn_at_test

if TYPE_CHECKING:
    import psycopg
    import redis
    import redis.asyncio
    import sqlalchemy
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
    from sqlalchemy.orm import Session

    from testlane.databases.isolation import Isolated
    from testlane.databases.mariadb.engine import MariaDbPool
    from testlane.databases.mariadb.testdb import MysqlTestDatabase
    from testlane.databases.postgres_engine import PostgresPool
    from testlane.databases.redis_isolation import RedisLease
    from testlane.databases.template import TemplateSpec
    from testlane.databases.transaction import Escape, SavepointConnection, Sequences
    from testlane.pytest_plugin.plugin import TestlanePlugin
    from testlane.services.mariadb import MariaDbServer
    from testlane.services.postgres import PostgresServer

__all__ = ["DatabaseManager", "TestDatabase"]

log = logging.getLogger("testlane")

# On a test: the reports of its phases that failed ("setup", "call", "teardown"), kept as each is made.
outcome_key = pytest.StashKey[dict[str, pytest.TestReport]]()
active_key = pytest.StashKey["IsolatedDatabase[Any, Any, Any]"]()
DbT = TypeVar("DbT", bound="IsolatedDatabase[Any, Any, Any]")
# Seconds a connection to a transaction-isolated database may still be listed as open after its test before
# the harness stops waiting for it to exit (a client closing it from another thread is done by then).
OPEN_GRACE = 0.1


class DatabaseManager:
    """Templates, pools and per-worker databases of one pytest process, for every database engine.

    One manager for Postgres and MariaDB/MySQL, so both have the same error channel (a bad isolation
    marker is a :class:`~testlane.core.errors.ConfigError` that fails the test with one message), cache a
    failed template build (a broken migration fails every test the same way, built once) and keep a failed
    test's database on request (``db.keep_failed``). The per-test isolation itself is
    :mod:`testlane.databases.isolation`, which ``testlane.db`` uses too.
    """

    def __init__(self, plugin: TestlanePlugin) -> None:
        self.plugin = plugin
        self.settings = plugin.settings
        self._server: PostgresServer | None = None
        self._mysql_server: MariaDbServer | None = None
        self._specs: dict[Any, TemplateSpec] = {}
        self._mysql_spec: TemplateSpec | None = None
        self._templates: dict[tuple[str, int], str] = {}  # (engine, spec id) -> template
        self._template_errors: dict[tuple[str, int], TestlaneError] = {}
        self._pools: dict[str, PostgresPool] = {}
        self._mysql_pool: MariaDbPool | None = None
        self._worker_dbs: dict[str, str] = {}
        self._mysql_worker_db: str | None = None
        self._savepoint_conns: dict[str, SavepointConnection] = {}
        self._sequences: dict[str, Sequences] = {}  # worker database -> its template's sequence state
        self._own_pids: dict[str, set[int]] = {}  # worker database -> server processes of our connections
        self._engines: dict[str, sqlalchemy.Engine] = {}
        self._redis_coordinator: redis.Redis | None = None
        self._url_warned: set[str] = set()  # the engines whose URL fixture warned in transaction isolation
        self._ahead: threading.Thread | None = None  # see prepare_ahead

    # -- ahead of the first test -------------------------------------------------------------------
    def prepare_ahead(self) -> None:
        """Make the default template's first databases while pytest collects (``testlane-ahead-postgres``).

        Called at session start, right after the services were spawned: the thread waits for Postgres, checks
        the template and starts its pool (``database`` isolation; ``transaction``: the worker's database), so
        the clones are being made while collection runs and the other services start, and the first test
        takes a ready one instead of waiting for the server, then for a clone. Every per-test entry point
        joins the thread first (:meth:`_join_ahead`), so the manager is never used by two threads at once.
        An error is not reported here: the first test repeats the step and fails with it (the provider and
        the template cache keep the error: one attempt). On a server that outlives the run (``url``, or detached:
        ``testlane services start``) nothing is made ahead: nothing is left there by a session that uses none.
        """
        mode = str(self.settings.db.isolation)
        if self._ahead is not None or mode not in ("database", "transaction"):
            return

        def prepare() -> None:
            try:
                if self.shared_server:
                    return  # an existing or detached server: nothing is made on it before a test asks
                spec = self._default_spec()
                if mode == "database":
                    self.pool_for(spec)
                else:
                    self.worker_database(spec, "t")
            except BaseException as exc:  # the first test repeats the step and reports it
                log.debug("preparing the first test's database ahead: %s", exc)

        self._ahead = threading.Thread(target=prepare, name="testlane-ahead-postgres", daemon=True)
        self._ahead.start()

    def _join_ahead(self) -> None:
        if self._ahead is not None:
            self._ahead.join()

    def _default_spec(self) -> TemplateSpec:
        from testlane.databases.template import TemplateSpec

        if None not in self._specs:
            try:
                self._specs[None] = TemplateSpec.from_settings(self.settings)
            except ConfigError as exc:  # the run's settings (db.migrations...), not a test's marker: stop the run
                self.plugin.stop_run(exc)
                raise
        return self._specs[None]

    # -- plumbing ------------------------------------------------------------------------------
    @property
    def server(self) -> PostgresServer:
        if self._server is None:
            self._server = self.plugin.server("postgres")
        return self._server

    @property
    def mysql_server(self) -> MariaDbServer:
        if self._mysql_server is None:
            self._mysql_server = self.plugin.server("mariadb")
        return self._mysql_server

    @property
    def run_id(self) -> str:
        from testlane.core.runtime import run_id_from_env

        return run_id_from_env() or self.plugin.provider.context.run_id

    def isolation_for(self, item: pytest.Item, engine: str = "postgres") -> Isolation:
        """The test's isolation mode: its ``isolation`` marker, else the engine's setting.

        Raises :class:`~testlane.core.errors.ConfigError` for a mode the engine does not offer.
        """
        from testlane.databases.isolation import isolation_mode

        marker = item.get_closest_marker("isolation")
        mode: object = self.settings.db.isolation if engine == "postgres" else self.settings.mariadb.isolation
        if marker is not None:
            mode = marker.args[0] if marker.args else marker.kwargs.get("mode", mode)
        return isolation_mode(mode, engine, item.nodeid)

    def spec_for(self, item: pytest.Item) -> TemplateSpec:
        from testlane.databases.template import TemplateSpec

        marker = item.get_closest_marker("migrations")
        key: Any = None
        overrides: dict[str, Any] = {}
        if marker is not None:
            overrides = dict(marker.kwargs)
            if marker.args:
                overrides["migrations"] = list(marker.args)
            key = repr(sorted((k, repr(v)) for k, v in overrides.items()))
        if key is None:
            return self._default_spec()
        if key not in self._specs:
            self._specs[key] = TemplateSpec.from_settings(self.settings, **overrides)
        return self._specs[key]

    def _template(self, engine: str, spec: TemplateSpec, build: Callable[[], str]) -> str:
        """The template's name, built on first use (cached: the per-test path makes no round trip); one build
        attempt per template, so a broken migration fails every test the same way."""
        key = (engine, id(spec))
        if key in self._template_errors:
            raise self._template_errors[key]
        if key not in self._templates:
            try:
                self._templates[key] = build()
            except TestlaneError as exc:
                what = f"template {spec.describe()}" if engine == "postgres" else f"template ({engine})"
                self._template_errors[key] = exc.blame(what)
                if isinstance(exc, ConfigError) and (engine != "postgres" or spec is self._specs.get(None)):
                    self.plugin.stop_run(exc)  # the settings' template, not a marker's
                raise
        return self._templates[key]

    def template_for(self, spec: TemplateSpec) -> str:
        """The Postgres template of ``spec``, built on first use."""
        from testlane.databases.template import ensure_template

        return self._template("postgres", spec, lambda: ensure_template(self.server, spec))

    def mysql_template(self) -> str:
        """The MariaDB/MySQL template of ``mariadb.migrations``, built on first use."""
        from testlane.databases.mariadb.template import ensure_template, spec_from_settings

        if self._mysql_spec is None:
            self._mysql_spec = spec_from_settings(self.settings)
        spec = self._mysql_spec
        return self._template("mariadb", spec, lambda: ensure_template(self.mysql_server, spec))

    @property
    def shared_server(self) -> bool:
        """True when the server outlives the run (an existing or a detached server): then we drop what we
        made, and make nothing ahead of the first test."""
        return bool(self.server.instance.outlives_run)

    def pool_for(self, spec: TemplateSpec) -> PostgresPool:
        from testlane.databases.postgres_engine import PostgresDatabaseEngine, PostgresPool

        template = self.template_for(spec)
        if template not in self._pools:
            db = self.settings.db
            workers = db.pool_workers or (1 if RunEnv.current().workers > 1 else 2)
            self._pools[template] = PostgresPool(
                PostgresDatabaseEngine(self.server, strategy=db.clone_strategy, reuse=db.reuse),
                template,
                run_id=self.run_id,
                worker=RunEnv.current().worker,
                size=db.pool_size,
                workers=workers,
                drop_at_close=self.shared_server,
                drop_backlog=db.drop_backlog,
            ).start()
        return self._pools[template]

    def mysql_pool(self) -> MariaDbPool:
        from testlane.databases.mariadb.engine import MariaDbDatabaseEngine
        from testlane.databases.pool import ClonePool

        if self._mysql_pool is None:
            self._mysql_pool = ClonePool(
                MariaDbDatabaseEngine(self.mysql_server),
                self.mysql_template(),
                run_id=self.run_id,
                worker=RunEnv.current().worker,
                size=self.settings.mariadb.pool_size,
                workers=1,
                drop_at_close=True,
            ).start()
        return self._mysql_pool

    def worker_database(self, spec: TemplateSpec | None, tag: str) -> str:
        """A per-worker database: a clone of the template (transaction mode) or empty (schema mode)."""
        from testlane.databases.isolation import create_database
        from testlane.databases.naming import worker_database_name

        template = self.template_for(spec) if spec is not None else None
        key = f"{tag}:{template}"
        if key not in self._worker_dbs:
            suffix = f"{tag}{(template or '')[-6:]}"
            name = worker_database_name(self.run_id, RunEnv.current().worker, suffix)
            create_database(self.server, name, template)
            self._worker_dbs[key] = name
        return self._worker_dbs[key]

    def mysql_worker_database(self) -> str:
        """The worker's migrated MariaDB/MySQL database for transaction isolation (a clone of the template)."""
        from testlane.databases.mariadb.engine import admin_connection
        from testlane.databases.naming import worker_database_name

        if self._mysql_worker_db is None:
            pool = self.mysql_pool()
            name = worker_database_name(self.run_id, RunEnv.current().worker, "mt")
            with contextlib.closing(admin_connection(self.mysql_server)) as admin:
                pool.engine.create(admin, pool.template, name)
            self._mysql_worker_db = name
        return self._mysql_worker_db

    def savepoint_connection(self, name: str) -> SavepointConnection:
        from testlane.databases.transaction import SavepointConnection, read_sequences

        conn = self._savepoint_conns.get(name)
        if conn is None or conn.closed:
            conn = SavepointConnection.connect(self.server.dsn(name), autocommit=False)
            if name not in self._sequences:
                # Read once, before the first test: the worker's database is still in the template's state.
                self._sequences[name] = read_sequences(conn)
                conn.rollback()
            conn.prepare(self._sequences[name])
            own = self._own_pids.setdefault(name, set())
            own.add(conn.info.backend_pid)
            conn.own_pids = own
            self._savepoint_conns[name] = conn
        return conn

    def worker_engine(self, url: str, name: str) -> sqlalchemy.Engine:
        import sqlalchemy

        if url not in self._engines:
            engine = sqlalchemy.create_engine(url, pool_size=2, max_overflow=4)
            own = self._own_pids.setdefault(name, set())

            # The joined sessions' connections are rolled back like pg_conn: not "another connection".
            @sqlalchemy.event.listens_for(engine, "connect")
            def _own(dbapi_connection: Any, _record: Any) -> None:
                own.add(dbapi_connection.info.backend_pid)

            self._engines[url] = engine
        return self._engines[url]

    def end_transaction_test(self, spec: TemplateSpec, name: str, tdb: TestDatabase) -> Escape | None:
        """Roll the test back and restore what a rollback cannot; rebuild the database if a commit escaped."""
        conn = tdb.savepoint_conn
        assert conn is not None, "a transaction-isolated database has its savepoint connection"
        current = self.savepoint_connection(name)  # a new one when the test closed pg_conn
        if current is not conn:
            # The server rolled the closed connection's transaction back; it may have committed before.
            current.outer_xid, current.escaped_by = conn.outer_xid, conn.escaped_by
        escape = tdb.extra.pop("escape", None) or current.end_test(settle=lambda own: self._settled(name, own))
        if escape is not None:
            self._rebuild_worker_database(spec, name)
        return cast("Escape | None", escape)

    def _settled(self, name: str, own: set[int]) -> bool:
        """Wait until only our own connections serve ``name`` (their statistics are final only then).

        Called after a test during which the database's session counter moved. A connection whose client
        closed it has a server process that exits within milliseconds: that is waited for (bounded by
        ``SETTLE_TIMEOUT``). A connection still open (listed in ``pg_stat_activity``: an application's pool,
        a module-level engine) is not going to close because the harness waits, so after ``OPEN_GRACE`` (a
        client closing it from another thread right now) this answers False at once instead of waiting out
        the bound: 2.2 s of teardown per such test before, about 0.1 s now (``bench/settle.py``).
        """
        import time

        from testlane.databases.postgres_engine import SETTLE_TIMEOUT
        from testlane.databases.reset import backends_serving, can_scan_processes

        local = can_scan_processes() and self.server.instance.backend in ("embedded", "local")
        started = time.monotonic()
        delay = 0.0005
        with contextlib.ExitStack() as stack:
            admin: psycopg.Connection | None = None

            def listed() -> bool:
                """Another session of ``name`` in pg_stat_activity (a backend leaves it just before it exits)."""
                nonlocal admin
                if admin is None:
                    admin = stack.enter_context(self.server.connect(autocommit=True))
                row = admin.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND NOT pid = ANY(%s)",
                    (name, list(own)),
                ).fetchone()
                return bool(row and row[0])

            while True:
                # Without the process list (a remote server): pg_stat_activity alone.
                busy = bool(backends_serving(self.server.pid or 0, {name}, exclude=own)) if local else listed()
                if not busy:
                    return True
                waited = time.monotonic() - started
                if waited > SETTLE_TIMEOUT:
                    return False
                if waited > OPEN_GRACE and (not local or listed()):
                    return False  # still open, not exiting: waiting would not make it exit
                time.sleep(delay)  # polling a process's exit, not readiness: there is nothing to wait on
                delay = min(delay * 2, 0.02)

    def _rebuild_worker_database(self, spec: TemplateSpec, name: str) -> None:
        """Drop the worker's database (its connections ended) and clone it again from the template."""
        from testlane.databases.template import drop_database

        conn = self._savepoint_conns.pop(name, None)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
        for url in [url for url in self._engines if f"/{name}" in url]:
            self._engines.pop(url).dispose()
        self._own_pids.pop(name, None)
        with self.server.connect() as admin:
            drop_database(admin, name)
        self._worker_dbs = {key: value for key, value in self._worker_dbs.items() if value != name}
        self.worker_database(spec, "t")

    def redis_coordinator(self) -> redis.Redis:
        import redis

        if self._redis_coordinator is None:
            server = self.plugin.server("valkey")
            self._redis_coordinator = redis.Redis(
                host=server.host, port=server.port, password=server.instance.password, db=0
            )
        return self._redis_coordinator

    # -- per test ------------------------------------------------------------------------------
    def _keeper(self, item: pytest.Item) -> Callable[[IsolatedDatabase[Any, Any, Any]], bool]:
        """Whether a test's database is kept for inspection (``db.keep_failed`` and the test failed); a kept
        one is marked, and its server asked to outlive the run."""

        def keep(tdb: IsolatedDatabase[Any, Any, Any]) -> bool:
            if not (self.settings.db.keep_failed and _failed(item)):
                return False
            tdb.kept = True
            ttl = self.settings.db.keep_failed_ttl
            tdb.server.request_keep(ttl, f"{item.nodeid}: {redact_url(tdb.url)}")
            if tdb.server.instance.outlives_run:
                # Not stopped with the run: its owner record says until when the reaper leaves it.
                from testlane.databases.leftovers import mark_kept

                with contextlib.suppress(Exception):  # the database stays either way; only the reaper's view
                    mark_kept(tdb.server, tdb.name, time.time() + ttl)
            return True

        return keep

    @contextlib.contextmanager
    def _isolated(self, item: pytest.Item, isolation: Isolated[DbT]) -> Iterator[DbT]:
        with isolation as tdb:
            item.stash[active_key] = cast("IsolatedDatabase[Any, Any, Any]", tdb)  # for the reports' hooks
            yield tdb

    def database_for(self, item: pytest.Item) -> contextlib.AbstractContextManager[TestDatabase]:
        """The test's Postgres isolation (``pg_database``), as a context manager."""
        from testlane.databases.guard import require_integration_lane
        from testlane.databases.isolation import DatabaseIsolation, SchemaIsolation, TransactionIsolation

        require_integration_lane(f"{item.nodeid} (fixture pg_database)", env=RunEnv.current())
        self._join_ahead()
        mode = self.isolation_for(item, "postgres")
        spec = self.spec_for(item)
        isolation: Isolated[TestDatabase]
        if mode == "database":
            isolation = DatabaseIsolation(self.pool_for(spec), self.server, keep=self._keeper(item))
        elif mode == "transaction":
            name = self.worker_database(spec, "t")
            isolation = TransactionIsolation(
                self.server,
                name,
                connection=self.savepoint_connection,
                end=lambda tdb: self.end_transaction_test(spec, name, tdb),
            )
        else:
            from testlane.databases.schema import SchemaDatabase

            name = self.worker_database(None, "s")
            schema = SchemaDatabase(self.server, name, spec, run_id=self.run_id, worker=RunEnv.current().worker)
            isolation = SchemaIsolation(schema, keep=self._keeper(item))
        return self._isolated(item, isolation)

    def mysql_database_for(self, item: pytest.Item) -> contextlib.AbstractContextManager[MysqlTestDatabase]:
        """The test's MariaDB/MySQL isolation (``mysql_database``), as a context manager."""
        from testlane.databases.guard import require_integration_lane
        from testlane.databases.isolation import MysqlDatabaseIsolation, MysqlTransactionIsolation

        require_integration_lane(f"{item.nodeid} (fixture mysql_database)", env=RunEnv.current())
        self._join_ahead()
        isolation: Isolated[MysqlTestDatabase]
        if self.isolation_for(item, "mariadb") == "database":
            isolation = MysqlDatabaseIsolation(self.mysql_pool(), self.mysql_server, keep=self._keeper(item))
        else:
            isolation = MysqlTransactionIsolation(self.mysql_server, self.mysql_worker_database())
        return self._isolated(item, isolation)

    def mysql_problem(self, tdb: MysqlTestDatabase, *, failed: bool) -> str | None:
        """After a MariaDB/MySQL test in transaction isolation: why isolation did not hold (else None)."""
        conn = tdb.savepoint_conn
        if conn is None:
            return None
        if tdb.extra.get("intact") is False:
            self._drop_mysql_worker_database()  # the next test gets a fresh one
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

    def warn_url(self, item: pytest.Item, tdb: IsolatedDatabase[Any, Any, Any], fixture: str, use: str) -> None:
        """Warn once per engine that a URL's connections escape transaction isolation."""
        if tdb.isolation == "transaction" and fixture not in self._url_warned:
            self._url_warned.add(fixture)
            warn_at_test(
                item,
                f"{fixture} in transaction isolation: connections you open from this URL are NOT rolled back; "
                f"use {use}, or database isolation",
            )

    def _drop_mysql_worker_database(self) -> None:
        from testlane.databases.mariadb.template import drop_database

        name, self._mysql_worker_db = self._mysql_worker_db, None
        if name is not None:
            with contextlib.closing(self.mysql_server.connect()) as admin:
                drop_database(admin, name)

    def close(self) -> None:
        """Close connections and pools; drop this process's databases: on a shared Postgres server, and
        MariaDB's always (idempotent)."""
        self._join_ahead()  # bounded by Postgres's start timeout; it must not make a pool after this
        conns, self._savepoint_conns = self._savepoint_conns, {}
        engines, self._engines = self._engines, {}
        pools, self._pools = self._pools, {}
        mysql_pool, self._mysql_pool = self._mysql_pool, None
        worker_dbs, self._worker_dbs = self._worker_dbs, {}
        coordinator, self._redis_coordinator = self._redis_coordinator, None
        for conn in conns.values():
            with contextlib.suppress(Exception):
                conn.close()
        for engine in engines.values():
            with contextlib.suppress(Exception):
                engine.dispose()
        for pool in pools.values():
            pool.close()
        if worker_dbs and self.shared_server:
            from testlane.databases.template import drop_database

            with contextlib.suppress(Exception), self.server.connect() as admin:
                for name in worker_dbs.values():
                    drop_database(admin, name)
        if mysql_pool is not None:
            mysql_pool.close()
        if self._mysql_worker_db is not None:
            try:
                self._drop_mysql_worker_database()
            except Exception as exc:
                log.warning("could not drop the MariaDB worker database: %s", exc)
        if coordinator is not None:
            with contextlib.suppress(Exception):
                coordinator.close()


def _failed(item: pytest.Item) -> bool:
    reports = item.stash.get(outcome_key, {})
    return any(report.failed for report in reports.values())


# --------------------------------------------------------------------------- hooks


def pytest_configure(config: pytest.Config) -> None:
    from testlane.pytest_plugin.report_hooks import on_makereport

    on_makereport(config, record_report)
    config.addinivalue_line(
        "markers",
        "isolation(mode): per-test database isolation for this test: database, transaction or schema",
    )
    config.addinivalue_line(
        "markers",
        "migrations(spec, seed=[...], extensions=[...]): the template for these tests (overrides db.migrations)",
    )


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Drop this process's databases as soon as its tests are done, not at unconfigure.

    An xdist worker reports the end of its session to the controller right after this hook, and
    the controller then ends it: execnet gives a worker 5 s before it sends SIGINT and exits it, so a
    teardown slowed by CPU load lost the clones its pools had not dropped yet (seen on existing
    servers). The run's owner sweeps anything left after that (:func:`sweep_shared_run`).
    """
    from testlane.pytest_plugin.plugin import PLUGIN_NAME

    plugin = session.config.pluginmanager.get_plugin(PLUGIN_NAME)
    manager = getattr(plugin, "_databases", None)
    if manager is not None:
        manager.close()


# On the reports (xdist ships them to the controller, whose terminal summary lists them): the teardown
# report of a test whose database was kept ({"command": psql command, "password_in": file or None}), and
# a failed report of a test in transaction isolation under db.keep_failed (its writes were rolled back).
KEPT_ATTR = "testlane_kept_database"
NOT_KEPT_ATTR = "testlane_not_kept_transaction"


def record_report(item: pytest.Item, call: pytest.CallInfo[None], report: pytest.TestReport) -> None:
    """Each phase's report of a test, kept on it when it failed; a kept (or not kept) database said on the report
    (as each report is made: :func:`testlane.pytest_plugin.report_hooks.on_makereport`)."""
    if report.failed:  # what is read of them: whether one failed (`_failed`, the network guard, http_mock)
        item.stash.setdefault(outcome_key, {})[str(report.when)] = report
    if active_key not in item.stash:  # a test without a database; `in`: a missing key's get raises inside
        return
    tdb = item.stash[active_key]
    from testlane.pytest_plugin.plugin import plugin_of

    keep_failed = plugin_of(item.config).settings.db.keep_failed
    if keep_failed and report.failed and tdb.isolation == "transaction":
        # The rollback already undid the test's writes: there is no database to keep (said once, in the summary).
        setattr(report, NOT_KEPT_ATTR, True)
    elif keep_failed and report.failed and report.when == "call":
        report.sections.append(
            ("testlane", f"database kept for inspection ({tdb.isolation} mode): {redact_url(tdb.url)}")
        )
    if report.when == "teardown" and tdb.kept:
        setattr(report, KEPT_ATTR, {"command": _client_command(tdb), "password_in": _password_file(tdb)})


def _password_file(tdb: IsolatedDatabase[Any, Any, Any]) -> str | None:
    """Where the password of a kept database's server is, when the client command needs one: ``mysql``
    always asks for it; ``psql`` over TCP (no private socket: an existing server)."""
    server = tdb.server
    asks = not isinstance(tdb, TestDatabase) or not server.instance.socket
    if asks and server.instance.password and server.registry is not None:
        return str(server.registry.record_path(server.instance))
    return None


def _client_command(tdb: IsolatedDatabase[Any, Any, Any]) -> str:
    """A ``psql`` (``mysql``) command that opens a kept database and prints no password.

    A server testlane started is reached over its private Unix socket (its directory is open to the
    invoking user only; the socket needs no password), so the command works as printed. An existing or
    container server is shown by its URL with the password masked; the summary says where it is. ``mysql``
    asks for the password (``--password`` without a value).
    """
    if not isinstance(tdb, TestDatabase):
        server = tdb.server
        return f"mysql --host={server.host} --port={server.port} --user={server.user} --password {tdb.name}"
    inst = tdb.server.instance
    if inst.socket:
        return f"psql 'host={inst.socket} port={inst.port} user={inst.user or 'postgres'} dbname={tdb.name}'"
    return f"psql {redact_url(tdb.url)}"


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """The databases kept for failed tests, and the failed tests whose database could not be kept."""
    from testlane.pytest_plugin.plugin import plugin_of

    reports = [report for reports in terminalreporter.stats.values() for report in reports]
    kept = {r.nodeid: getattr(r, KEPT_ATTR) for r in reports if getattr(r, KEPT_ATTR, None)}
    not_kept = list(dict.fromkeys(r.nodeid for r in reports if getattr(r, NOT_KEPT_ATTR, False)))
    if kept:
        terminalreporter.section("testlane: databases kept for inspection")
        for nodeid, info in kept.items():
            terminalreporter.write_line(f"{redact_nodeid(nodeid)}\n    {info['command']}")
        for where in sorted({info["password_in"] for info in kept.values() if info.get("password_in")}):
            terminalreporter.write_line(f"The password is not printed: it is in {where} (readable only by you).")
        hours = plugin_of(config).settings.db.keep_failed_ttl / 3600
        terminalreporter.write_line(f"The server stays up for {hours:g} h; `testlane reap --kept` stops it now.")
    if not_kept:
        terminalreporter.section("testlane: no database kept (transaction isolation)")
        terminalreporter.write_line(
            f"db.keep_failed is on, but transaction isolation rolls a failed test's writes back, so no database "
            f"was kept for {len(not_kept)} failed test(s). To keep one, run it in database isolation: "
            '`--isolation database --keep-failed-db`, or @pytest.mark.isolation("database") on that test.'
        )
        for nodeid in not_kept:
            terminalreporter.write_line(f"    {redact_nodeid(nodeid)}")


# --------------------------------------------------------------------------- fixtures


def _manager(request: pytest.FixtureRequest) -> DatabaseManager:
    from testlane.pytest_plugin.plugin import plugin_of

    return plugin_of(request.config).databases


@pytest.fixture
def pg_database(request: pytest.FixtureRequest) -> Iterator[TestDatabase]:
    """The test's own database (see docs/isolation.md for the three isolation modes)."""
    __tracebackhide__ = True
    nodeid = request.node.nodeid
    tdb = yield from around_test(
        lambda: _manager(request).database_for(request.node),
        setup=f"{nodeid}: preparing its database",
        teardown=lambda db: f"{nodeid}: cleaning up its database {db.name}",
    )
    escape = tdb.extra.pop("escaped", None)
    if escape is not None:
        from testlane.databases.transaction import Escape

        assert isinstance(escape, Escape), escape
        if escape.proven:
            pytest.fail(f"{nodeid}: {escape.message(tdb.name)}", pytrace=False)
        warn_at_test(request.node, f"{nodeid}: {escape.message(tdb.name)}")


@pytest.fixture
def pg_url(pg_database: TestDatabase, request: pytest.FixtureRequest) -> str:
    """The test database's URL (``postgresql://...``; in schema mode with the schema on the search path)."""
    _manager(request).warn_url(request.node, pg_database, "pg_url", "pg_conn or db_session")
    return pg_database.url


def connection_fixture(request: pytest.FixtureRequest, fixture: str, tdb: DbT) -> Generator[Any, None, object]:
    """The body of ``pg_conn`` and ``mysql_conn``: the test database's connection, opened and closed (or
    handed back) as testlane's own work (:func:`~testlane.pytest_plugin.boundary.around_test`)."""
    __tracebackhide__ = True
    from testlane.databases.isolation import connection

    nodeid = request.node.nodeid
    return around_test(
        lambda: connection(tdb),  # type: ignore[call-overload]
        setup=f"{nodeid}: connecting {fixture} to {tdb.name}",
        teardown=lambda _: f"{nodeid}: closing {fixture}",
    )


@pytest.fixture
def pg_conn(pg_database: TestDatabase, request: pytest.FixtureRequest) -> Iterator[psycopg.Connection]:
    """A psycopg connection to the test database (autocommit off)."""
    yield from connection_fixture(request, "pg_conn", pg_database)


@pytest.fixture
def db_engine(pg_database: TestDatabase, request: pytest.FixtureRequest) -> Iterator[sqlalchemy.Engine]:
    """A SQLAlchemy Engine on the test database (psycopg driver)."""
    import sqlalchemy

    if pg_database.isolation == "transaction":
        yield _manager(request).worker_engine(pg_database.sqlalchemy_url(), pg_database.name)
        return
    engine = sqlalchemy.create_engine(pg_database.sqlalchemy_url(), poolclass=sqlalchemy.pool.NullPool)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def db_session(pg_database: TestDatabase, db_engine: sqlalchemy.Engine) -> Iterator[Session]:
    """A SQLAlchemy Session; in transaction mode its commits are savepoints, all rolled back after the test."""
    if pg_database.isolation == "transaction":
        from testlane.databases.transaction import Escape, EscapedCommit, joined_session

        try:
            with joined_session(db_engine) as session:
                yield session
        except EscapedCommit:
            pg_database.extra["escape"] = Escape("session")  # reported by pg_database, which rebuilds
        return
    from sqlalchemy.orm import Session

    with Session(db_engine) as session:
        yield session


def _async_driver() -> str:
    try:
        import asyncpg  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        return "psycopg"
    return "asyncpg"


async_fixture: Any
try:
    import pytest_asyncio

    async_fixture = pytest_asyncio.fixture
except ImportError:  # pragma: no cover - exercised when pytest-asyncio is absent
    async_fixture = None


if async_fixture is not None:

    @async_fixture  # type: ignore[untyped-decorator]
    async def pg_aconn(pg_database: TestDatabase) -> AsyncIterator[psycopg.AsyncConnection]:
        """An async psycopg connection to the test database (not available in transaction mode)."""
        import psycopg

        if pg_database.isolation == "transaction":
            pytest.fail("pg_aconn is not available in transaction isolation; use async_db_session", pytrace=False)
        conn = await psycopg.AsyncConnection.connect(
            pg_database.schema.url if pg_database.schema is not None else pg_database.url
        )
        try:
            yield conn
        finally:
            await conn.close()

    @async_fixture  # type: ignore[untyped-decorator]
    async def async_db_engine(pg_database: TestDatabase) -> AsyncIterator[AsyncEngine]:
        """A SQLAlchemy AsyncEngine on the test database (asyncpg if installed, else psycopg)."""
        import sqlalchemy
        from sqlalchemy.ext.asyncio import create_async_engine

        driver = _async_driver()
        url = pg_database.sqlalchemy_url(driver)
        kwargs: dict[str, Any] = {"poolclass": sqlalchemy.pool.NullPool}
        if driver == "asyncpg" and pg_database.schema is not None:
            url = str(pg_database.server.instance.service_url(pg_database.name).for_sqlalchemy("asyncpg"))
            kwargs["connect_args"] = {"server_settings": {"search_path": f"{pg_database.schema.schema},public"}}
        engine = create_async_engine(url, **kwargs)
        try:
            yield engine
        finally:
            await engine.dispose()

    @async_fixture  # type: ignore[untyped-decorator]
    async def async_db_session(pg_database: TestDatabase, async_db_engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
        """An AsyncSession; in transaction mode joined to a transaction rolled back after the test."""
        if pg_database.isolation == "transaction":
            from testlane.databases.transaction import Escape, EscapedCommit, joined_async_session

            try:
                async with joined_async_session(async_db_engine) as session:
                    yield session
            except EscapedCommit:
                pg_database.extra["escape"] = Escape("session")  # reported by pg_database, which rebuilds
            return
        from sqlalchemy.ext.asyncio import AsyncSession

        async with AsyncSession(async_db_engine) as session:
            yield session

    @async_fixture  # type: ignore[untyped-decorator]
    async def aredis_client(redis_db: RedisLease) -> AsyncIterator[redis.asyncio.Redis]:
        """An async redis-py client on the test's own logical database."""
        client = redis_db.async_client()
        try:
            yield client
        finally:
            await client.aclose()

else:  # pragma: no cover

    def _needs_asyncio(name: str) -> Any:
        @pytest.fixture(name=name)
        def missing(request: pytest.FixtureRequest) -> None:
            from testlane.pytest_plugin.async_tests import no_async_runner

            what = f"{request.node.nodeid} (it uses the async fixture {name})"
            pytest.fail(no_async_runner(request.config, what), pytrace=False)

        return missing

    pg_aconn = _needs_asyncio("pg_aconn")
    async_db_engine = _needs_asyncio("async_db_engine")
    async_db_session = _needs_asyncio("async_db_session")
    aredis_client = _needs_asyncio("aredis_client")


@contextlib.contextmanager
def _redis_lease(request: pytest.FixtureRequest) -> Iterator[RedisLease]:
    from testlane.databases.guard import require_integration_lane
    from testlane.databases.redis_isolation import lease_database

    nodeid = request.node.nodeid
    require_integration_lane(f"{nodeid} (fixture redis_db)", env=RunEnv.current())
    manager = _manager(request)
    server = manager.plugin.server("valkey")
    lease = lease_database(
        manager.redis_coordinator(), server.host, server.port, password=server.instance.password, owner=nodeid
    )
    try:
        yield lease
    finally:
        if not server.gone():  # a dead server has nothing to flush (and would only time out)
            lease.release()


@pytest.fixture
def redis_db(request: pytest.FixtureRequest) -> Iterator[RedisLease]:
    """The test's own logical Valkey/Redis database, flushed before and after."""
    __tracebackhide__ = True
    nodeid = request.node.nodeid
    yield from around_test(
        lambda: _redis_lease(request),
        setup=f"{nodeid}: leasing a Valkey/Redis database",
        teardown=lambda lease: f"{nodeid}: flushing and returning its Valkey/Redis database {lease.db}",
    )


@pytest.fixture
def redis_client(redis_db: RedisLease, request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    """A redis-py client on the test's own logical database."""
    __tracebackhide__ = True
    nodeid = request.node.nodeid
    yield from around_test(
        lambda: contextlib.closing(redis_db.client()),
        setup=f"{nodeid}: connecting redis_client",
        teardown=lambda _: f"{nodeid}: closing redis_client",
    )


@pytest.fixture
def redis_url(redis_db: RedisLease) -> str:
    """URL of the test's own logical database, e.g. ``redis://:<password>@127.0.0.1:41235/17``."""
    return str(redis_db.url)


@pytest.fixture
def redis_channel_prefix(redis_db: RedisLease) -> str:
    """The test's own pub/sub namespace, e.g. ``tl:17:3f9a0c2e:``: pub/sub channels are server-wide (a
    logical database does not isolate them), so tests that publish or subscribe put it in front of
    their channel names (and give it to the code under test, as they give it ``redis_url``)."""
    return str(redis_db.channel_prefix)
