"""testlane's pytest plugin (entry point ``pytest11: testlane``).

This module stays cheap to import: it registers options (every feature's), and
in ``pytest_configure`` decides whether the project opted in
(:mod:`testlane.pytest_plugin.optin`). Only then does it build one
:class:`TestlanePlugin` object that owns the session's settings and services, and
register the feature modules (:data:`FEATURES`), which own the hooks, fixtures
and markers; a project that has not opted in gets none of them. Drivers are
imported by the fixtures that use them, or at session start in the integration
lane for the configured services (their kinds' ``client_modules``: psycopg,
redis-py), and only the configured services' kinds are imported.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any, Literal, NoReturn, overload

import pytest

from testlane.core.config import Settings, command_options, load_settings, parse_set_options, set_usage
from testlane.core.errors import ConfigError, ServiceError, TestlaneError
from testlane.core.redact import redact_nodeid
from testlane.core.runenv import RunEnv, restore
from testlane.pytest_plugin.boundary import fail_test
from testlane.pytest_plugin.optin import NotOptedIn, it_env_on, opted_in, record_options

if TYPE_CHECKING:
    from testlane.pytest_plugin.databases import DatabaseManager
    from testlane.pytest_plugin.provider import ServiceProvider
    from testlane.services.base import Server
    from testlane.services.mariadb import MariaDbServer
    from testlane.services.mqtt import MqttServer
    from testlane.services.nats import NatsServer
    from testlane.services.postgres import PostgresServer
    from testlane.services.rabbitmq import RabbitMqServer
    from testlane.services.s3 import S3Server
    from testlane.services.valkey import ValkeyServer

__all__ = ["FEATURES", "TestlanePlugin", "plugin_of", "settings_for"]

PLUGIN_NAME = "testlane-session"
# pytest's option to override a setting (the testlane command's --set): the settings' hints name it.
SET_OPTION = "--testlane-set"
# Why the run stopped early (pytest's ``session.shouldfail``), after the first test a configuration error, or a
# service that could not start, failed: what it was, and the exit code (``testlane run``'s for the same error).
STOPPED_FOR = {
    "configuration": "testlane: configuration error (above): the run stops here, as every test that needs it would "
    "fail the same way; fix it and run again",
    "service": "testlane: a service could not be started (above): the run stops here, as every test that needs it "
    "would fail the same way; fix it and run again",
}
STOP_EXIT = {"configuration": int(pytest.ExitCode.USAGE_ERROR), "service": 3}  # as `testlane run` (cli.main)
# The attribute of an xdist worker's report of a test that such an error failed ("configuration" or "service",
# and the message): reports cross to the controller with their attributes, and the controller shows it once.
STOP_ERROR_ATTR = "testlane_stop_error"


# Feature modules, registered only for a project that opted in: each owns its hooks, fixtures and markers.
FEATURES = (
    "testlane.pytest_plugin.lanes",
    "testlane.pytest_plugin.servers",
    "testlane.pytest_plugin.databases",
    "testlane.pytest_plugin.mariadb",
    "testlane.pytest_plugin.nats",
    "testlane.pytest_plugin.s3",
    "testlane.pytest_plugin.mqtt",
    "testlane.pytest_plugin.rabbitmq",
    "testlane.pytest_plugin.discipline",
    "testlane.pytest_plugin.sharding",
    "testlane.pytest_plugin.web",
    "testlane.pytest_plugin.seams",
    "testlane.pytest_plugin.async_tests",
    "testlane.pytest_plugin.runtest",  # each test's hooks, calling the modules above
)
settings_key = pytest.StashKey["Settings"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """Every feature's options, registered whether or not the project opted in (``pytest --help`` lists them)."""
    from testlane.pytest_plugin import lanes, sharding
    from testlane.pytest_plugin.options import add_setting_options

    group = parser.getgroup("testlane", "testlane: real services for the integration lane")
    group.addoption(
        SET_OPTION,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a [tool.testlane] setting for this run, e.g. "
        + set_usage("postgres.backend", "local", SET_OPTION),
    )
    add_setting_options(group, parser)  # --isolation, --format, --digest-budget...: from the settings table
    lanes.add_options(group)
    sharding.add_options(group)
    record_options(group)


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


class TestlanePlugin:
    """Per-session state: settings, the service provider, and the environment we set."""

    __test__ = False

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self._provider: ServiceProvider | None = None
        self._databases: DatabaseManager | None = None
        self._env_saved: dict[str, str | None] = {}
        self.session_failed = False
        self.session: pytest.Session | None = None
        # The first configuration error, or service that could not start, met while providing for a test (this
        # process's, or an xdist worker's): "configuration" or "service", and its message.
        self.stopped_by: tuple[str, str] | None = None
        self._env_set: list[str] = []
        if not _is_xdist_worker(config):
            from testlane.core.runtime import new_run_id

            # The controller (or a plain session) names the run and owns it; xdist workers,
            # started later, inherit both and so share one server per service.
            env = RunEnv.current()
            named = RunEnv(
                run_id=None if env.run_id else new_run_id(),
                owner_pid=None if env.owner_pid is not None else os.getpid(),
            )
            named.write(os.environ)
            self._env_set += list(named.to_environ())

    @property
    def provider(self) -> ServiceProvider:
        if self._provider is None:
            from testlane.pytest_plugin.provider import ServiceProvider

            self._provider = ServiceProvider(self.settings, progress=self._progress)
        return self._provider

    @property
    def databases(self) -> DatabaseManager:
        if self._databases is None:
            from testlane.pytest_plugin.databases import DatabaseManager

            self._databases = DatabaseManager(self)
        return self._databases

    def _progress(self, message: str) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"testlane: {message}")

    def active_servers(self) -> dict[str, Server]:
        """The servers this session knows so far (none started for asking): for reporters."""
        return self._provider.active() if self._provider is not None else {}

    @overload
    def server(self, name: Literal["postgres"]) -> PostgresServer: ...
    @overload
    def server(self, name: Literal["valkey"]) -> ValkeyServer: ...
    @overload
    def server(self, name: Literal["mariadb"]) -> MariaDbServer: ...
    @overload
    def server(self, name: Literal["nats"]) -> NatsServer: ...
    @overload
    def server(self, name: Literal["s3"]) -> S3Server: ...
    @overload
    def server(self, name: Literal["mqtt"]) -> MqttServer: ...
    @overload
    def server(self, name: Literal["rabbitmq"]) -> RabbitMqServer: ...
    @overload
    def server(self, name: str) -> Server: ...

    def server(self, name: str) -> Server:
        """The server for ``name`` (typed by the name: ``server("postgres")`` is a ``PostgresServer``); a
        testlane error becomes a clean test error (a configuration error, or a service that cannot start, also
        stops the run: see :meth:`stop_run`)."""
        __tracebackhide__ = True
        try:
            return self.provider.get(name)
        except TestlaneError as exc:
            if isinstance(exc, ConfigError | ServiceError):
                self.stop_run(exc)
            fail_test(exc, f"testlane could not provide {name}: ")

    def stop_run(self, error: ConfigError | ServiceError) -> None:
        """A configuration error of the run's (a service's or the template's settings, not a test's marker), or a
        service that cannot start (an existing server that does not answer, a configured port taken, binaries
        not found), met while providing for a test: that test fails with it, and the run stops after it
        (pytest's ``shouldfail``, as ``-x`` does) and exits as ``testlane run`` does for the same error (4 for
        configuration, 3 for a service), instead of failing every other test that needs the same thing with the
        same message. Under xdist the worker stops and tells the controller, which stops the others; tests that
        other workers were running meanwhile and that failed the same way say where the error is
        (:class:`OneStopError`)."""
        if self.stopped_by is not None or threading.current_thread() is not threading.main_thread():
            # Met while readying services ahead, in a thread (collection is running): the first test that asks
            # meets the same error (the provider keeps it) and stops the run then, showing it.
            return
        kind = "configuration" if isinstance(error, ConfigError) else "service"
        message = str(error)  # masked: TestlaneError redacts its message and hint
        self.stopped_by = (kind, message)
        if self.session is not None and not self.session.shouldfail:
            self.session.shouldfail = STOPPED_FOR[kind]
        if _is_xdist_worker(self.config):
            from testlane.pytest_plugin.report_hooks import on_makereport

            def tag(item: pytest.Item, call: pytest.CallInfo[None], report: pytest.TestReport) -> None:
                # the report of the phase this error failed (fail_test keeps it as the failure's context)
                if call.excinfo is not None and call.excinfo.value.__context__ is error:
                    setattr(report, STOP_ERROR_ATTR, [kind, message])

            on_makereport(self.config, tag)

    def set_env(self, values: dict[str, str]) -> None:
        """Set variables for the session, restored when it ends."""
        for key, value in values.items():
            if key not in self._env_saved:
                self._env_saved[key] = os.environ.get(key)
            os.environ[key] = value

    def share_services(self) -> None:
        """Describe this session's servers in a services file, for xdist workers started later."""
        stack = self.provider._own_stack()
        if stack.servers:
            self.set_env(RunEnv(services_file=str(stack.write_services_file())).to_environ())

    def close(self) -> None:
        if self._env_saved:
            from testlane.databases.appdb import drop_app_databases

            drop_app_databases(self.provider.active(), self.provider.context.run_id)
        restore(os.environ, self._env_saved)
        self._env_saved.clear()
        if self._databases is not None:
            self._databases.close()
        owns_run = RunEnv.current().owned_by(os.getpid())
        if self._provider is None and owns_run:
            # Workers may have started servers this process owns, without it ever asking for one.
            from testlane.core.runtime import RunContext

            if RunContext.from_settings(self.settings).run_dir.exists():
                _ = self.provider
        if self._provider is not None:
            self._provider.close(keep_databases=self.settings.db.keep_failed and self.session_failed)
            self._provider = None
        for key in self._env_set:
            os.environ.pop(key, None)
        self._env_set.clear()


def plugin_of(config: pytest.Config) -> TestlanePlugin:
    plugin = config.pluginmanager.get_plugin(PLUGIN_NAME)
    assert isinstance(plugin, TestlanePlugin), "testlane's pytest plugin is not configured"
    return plugin


def _install_interrupt_handlers(config: pytest.Config) -> None:
    """SIGTERM becomes an orderly stop (fixtures tear down, servers stop, reports are written), like
    SIGINT; a copy of the same signal arriving within a second is ignored (a group's signal, forwarded
    again by ``testlane run``): it would interrupt the clean-up and print a second traceback."""
    from testlane.core.interrupts import install_interrupt_handler

    parent = os.getppid()
    # `testlane run`'s pytest (its parent owns the run) gets SIGTERM when `testlane run` dies (PDEATHSIG)
    started_by_run = RunEnv.current().owner_pid == parent

    def on_sigterm() -> None:
        if started_by_run and os.getppid() != parent:  # reparented: `testlane run` is gone
            _abandon_orphaned_run()
        pytest.exit("testlane: received SIGTERM; stopping the run", returncode=pytest.ExitCode.INTERRUPTED)

    restore = install_interrupt_handler("running the tests", on_sigterm=on_sigterm)
    if restore is not None:
        config.add_cleanup(restore)


def _abandon_orphaned_run() -> NoReturn:
    """``testlane run`` died (SIGKILL) and its servers with it: end this pytest now, silently.

    An orderly stop would tear fixtures down against dead servers (network timeouts, tracebacks of every
    release) and print onto a terminal whose command has already returned. Instead nothing more is
    written, this process's xdist workers (and whatever else it started) are killed and reaped, and it
    exits. What stays on disk belongs to the dead run: the next ``testlane reap`` (or run) removes it.
    """
    import psutil

    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        with contextlib.suppress(OSError):
            os.dup2(devnull, fd)
    with contextlib.suppress(psutil.Error):
        descendants = psutil.Process().children(recursive=True)
        for proc in descendants:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(descendants, timeout=2)  # reaps the direct children: no zombie
    os._exit(128 + signal.SIGTERM)


def settings_for(config: pytest.Config) -> Settings:
    """The session's settings, resolved once (by whichever plugin asks first) and kept in the stash."""
    settings = config.stash.get(settings_key, None)
    if settings is None:
        settings = _load(config, config.option)
        config.stash[settings_key] = settings
    return settings


def _load(config: pytest.Config, namespace: Any) -> Settings:
    """Settings with this session's command line as overrides: ``--testlane-set`` items, then the options
    generated from the settings table (only those given: an option left out never hides a setting)."""
    from testlane.pytest_plugin.options import command_line_overrides

    try:
        overrides: dict[str, Any] = parse_set_options(list(getattr(namespace, "testlane_set", None) or []), SET_OPTION)
        given = command_line_overrides(namespace)
        overrides.update(given)
        flags = {info.key: info.cli for info in command_options("run") if info.key in given and info.cli}
        return load_settings(start=config.rootpath, overrides=overrides, set_option=SET_OPTION, flags=flags)
    except ConfigError as exc:
        raise pytest.UsageError(f"testlane: {exc}") from None


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    """Apply ``[tool.testlane.env]`` before the project's conftest — and the settings it imports — load.

    Only in the integration lane (there is nothing to point the application at otherwise), only in the
    process that owns the run (xdist workers inherit the environment), and not under ``testlane run``,
    which already did it.
    """
    from testlane.pytest_plugin.options import check_rootdir, check_run_settings

    check_rootdir(early_config, args)  # first: whether the project opted in is read from its rootdir
    env = RunEnv.current()
    check_run_settings(early_config, env)
    if env.xdist_worker or env.services_file:
        return
    if not opted_in(early_config):
        return
    namespace = early_config.known_args_namespace
    settings = _load(early_config, namespace)
    early_config.stash[settings_key] = settings
    if not settings.env:
        return
    if not (
        getattr(namespace, "testlane_it", False)
        or it_env_on(env)
        or getattr(namespace, "testlane_lane", None) in ("it", "all")
    ):
        notice = (
            f"testlane: [tool.testlane.env] ({', '.join(sorted(settings.env))}) is not applied: the integration "
            "lane is off. Run `testlane run` or `pytest --it` to point the application at testlane's servers."
        )
        # Past pytest's capture, which holds start-up output (and pytest before 9.2 drops it): said now, it
        # is there even when the project's conftest then fails for want of the variables.
        capture = early_config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            print(notice, file=sys.stderr, flush=True)
        return
    from testlane.core.envmap import referenced_services
    from testlane.databases.appdb import mapped_environment

    plugin = TestlanePlugin(early_config, settings)
    early_config.pluginmanager.register(plugin, PLUGIN_NAME)
    try:
        servers = {name: plugin.provider.get(name) for name in sorted(referenced_services(settings.env))}
        mapped = mapped_environment(settings, servers, plugin.provider.context.run_id)
    except BaseException as exc:
        # pytest stops before it configures anything, so no unconfigure will close the plugin: a start that
        # failed (a bad binary, a server that exits) must leave nothing, not the run directory for `reap`.
        _abandon(early_config, plugin)
        if isinstance(exc, TestlaneError):
            raise pytest.UsageError(f"testlane could not prepare [tool.testlane.env]: {exc}") from None
        raise
    plugin.set_env(mapped)
    plugin.share_services()  # xdist workers attach to these servers instead of starting their own


def _abandon(config: pytest.Config, plugin: TestlanePlugin) -> None:
    """Stop what ``plugin`` started and remove its run directory (the session will not run)."""
    try:
        with contextlib.suppress(Exception):  # the failed start's error is the one to report
            plugin.close()
    finally:
        config.pluginmanager.unregister(plugin, PLUGIN_NAME)


@pytest.hookimpl(tryfirst=True)  # before the feature modules' configure hooks, which read the settings
def pytest_configure(config: pytest.Config) -> None:
    if not opted_in(config):
        config.pluginmanager.register(NotOptedIn(), "testlane-not-opted-in")
        return
    _install_interrupt_handlers(config)
    existing = config.pluginmanager.get_plugin(PLUGIN_NAME)
    if isinstance(existing, TestlanePlugin):  # created early, to apply [tool.testlane.env]
        config.stash[settings_key] = existing.settings
    settings = settings_for(config)
    if settings.log_level.lower() != "warning":
        from testlane.core.logs import setup_logging

        setup_logging(settings.log_level)
    if not isinstance(existing, TestlanePlugin):
        config.pluginmanager.register(TestlanePlugin(config, settings), PLUGIN_NAME)
    _register_features(config)


def _register_features(config: pytest.Config) -> None:
    """Register the feature modules; each one's ``pytest_configure`` runs as it is registered.

    Not ``pluginmanager.import_plugin``: that asks pytest to assertion-rewrite the module, and some are
    imported already (``pytest_addoption`` reads their options), so pytest before 9.2 warns "Module already
    imported so cannot be rewritten" — an INTERNALERROR under ``filterwarnings = ["error"]``. testlane's own
    code has no test assertions to rewrite. A name blocked with ``-p no:<module>`` stays unregistered.
    """
    import importlib

    manager = config.pluginmanager
    for name in FEATURES:
        if manager.is_blocked(name) or manager.get_plugin(name) is not None:
            continue
        manager.register(importlib.import_module(name), name)


def pytest_sessionstart(session: pytest.Session) -> None:
    """In the integration lane, spawn the configured services now: they boot while pytest collects. A
    configuration error of theirs stops pytest here, once (a usage error, exit 4), as ``testlane run`` stops."""
    config = session.config
    plugin = config.pluginmanager.get_plugin(PLUGIN_NAME)
    if isinstance(plugin, TestlanePlugin):
        plugin.session = session
    if not isinstance(plugin, TestlanePlugin) or _is_xdist_worker(config):
        return
    if config.getoption("collectonly", False):
        return
    from testlane.pytest_plugin.lanes import selection_key

    selection = config.stash.get(selection_key, None)
    if selection is None or not selection.runs_integration:
        return
    _notice_shared_servers(plugin)
    if not plugin.settings.data_dir:
        from testlane.core.runtime import default_data_root

        # Choose where the run's data goes now, before xdist starts its workers and before any test: the
        # workers inherit the choice (TESTLANE_CHOSEN_DATA_ROOT) instead of making it while a test runs.
        default_data_root()
    if config.pluginmanager.hasplugin("dsession"):
        # Under xdist the first worker that needs a service starts it: checked here, before the workers start.
        _check_services(plugin)
        config.pluginmanager.register(OneStopError(plugin), "testlane-one-stop-error")
        return
    if plugin.settings.services:
        services = list(plugin.settings.services)
        plugin.provider.prestart(services)
        if isinstance(plugin.provider.prestart_error, ConfigError):
            raise pytest.UsageError(f"testlane: {plugin.provider.prestart_error}")
        # While pytest collects: Postgres's first databases (and its driver's import), and the other services'
        # readiness (and their clients' imports): the first test then finds them ready.
        from testlane.core.service_names import canonical_services

        try:
            services = canonical_services(services)
        except TestlaneError:
            return  # reported by the tests that use the services
        _import_clients(services)
        if "postgres" in services:
            plugin.databases.prepare_ahead()
        plugin.provider.ready_ahead([name for name in services if name != "postgres"])


def _check_services(plugin: TestlanePlugin) -> None:
    """The configured services' settings checked without starting them (:func:`check_services`), in a process
    that leaves the starting to its xdist workers: a configuration error is one usage error, not one error
    per test on every worker. Those ``testlane run`` (or detached services) provide were checked when started."""
    from testlane.databases.provision import check_services

    names = [name for name in plugin.settings.services if not plugin.provider.provided_by_run(name)]
    if not names:
        return
    try:
        check_services(plugin.settings, names)
    except ConfigError as exc:
        raise pytest.UsageError(f"testlane: {exc}") from None


def _import_clients(services: list[str]) -> None:
    """Import what readying ``services`` ahead will use (each kind's ``client_modules``), here on pytest's
    thread: an import creates loggers, and pytest iterates over the loggers while it runs ("dictionary
    changed size during iteration") — the threads readying services must not be the first to import them.
    Only the configured services' kinds are imported (:func:`testlane.services.kinds.find`)."""
    import importlib

    from testlane.services import kinds

    for name in services:
        kind = kinds.find(name)
        for module in kind.client_modules if kind is not None else ():
            with contextlib.suppress(ImportError):  # a missing driver is reported by the tests that need it
                importlib.import_module(module)


def _notice_shared_servers(plugin: TestlanePlugin) -> None:
    """Once per run, in the process that owns it: say that an existing server holds other databases.

    Under ``testlane run`` (a services file) the command said it already; xdist workers never do.
    """
    if RunEnv.current().services_file:
        return
    from testlane.core.envmap import referenced_services
    from testlane.databases.shared_server import configured_url_servers, shared_server_notices

    settings = plugin.settings
    try:
        servers = configured_url_servers(settings, [*settings.services, *referenced_services(settings.env)])
    except TestlaneError:
        return  # a misconfigured URL is reported by the tests that use the service
    reporter = plugin.config.pluginmanager.get_plugin("terminalreporter")
    for notice in shared_server_notices(servers):
        if reporter is not None:
            reporter.write_line(f"testlane: {notice}", yellow=True)


class OneStopError:
    """pytest-xdist's controller, in the integration lane: a configuration error, or a service that could not
    start, that its workers met (reports tagged by :meth:`TestlanePlugin.stop_run`). The run stops, exiting as
    ``testlane run`` would (4 or 3); the first report shows the error, and a test another worker was running
    meanwhile, failed by the same error, says where it is shown."""

    def __init__(self, plugin: TestlanePlugin) -> None:
        self.plugin = plugin
        self.first: str | None = None

    @pytest.hookimpl(tryfirst=True)  # before the terminal and testlane's reports read it
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        tagged = getattr(report, STOP_ERROR_ATTR, None)
        if not tagged:
            return
        kind, message = str(tagged[0]), str(tagged[1])
        if self.first is None:
            self.first = report.nodeid
            self.plugin.stopped_by = (kind, message)
        elif report.nodeid != self.first:
            what = "configuration error" if kind == "configuration" else "error of a service that could not start"
            report.longrepr = f"testlane: the {what} shown at {redact_nodeid(self.first)} (the run stops)."

    @pytest.hookimpl(trylast=True)  # after the terminal reporter kept the interruption to show it
    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        """xdist stops the run by raising its own ``Interrupted``, which the terminal's last line shows with the
        class's module path (``! xdist.dsession.Interrupted: testlane: ... !``); when testlane stopped it, the line
        says only why, as without xdist. The reporter keeps that line in an attribute pytest has no API for: left
        alone when it is not there."""
        if self.plugin.stopped_by is None:
            return
        reporter = self.plugin.config.pluginmanager.get_plugin("terminalreporter")
        memo = getattr(reporter, "_keyboardinterrupt_memo", None)
        crash = getattr(memo, "reprcrash", None)
        if crash is not None and hasattr(crash, "message"):
            crash.message = STOPPED_FOR[self.plugin.stopped_by[0]]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    plugin = session.config.pluginmanager.get_plugin(PLUGIN_NAME)
    if isinstance(plugin, TestlanePlugin):
        plugin.session_failed = exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED)
        if plugin.stopped_by is not None and not _is_xdist_worker(session.config):
            # as when the error stops `testlane run` before pytest: 4 (configuration), 3 (a service)
            session.exitstatus = pytest.ExitCode(STOP_EXIT[plugin.stopped_by[0]])


def pytest_unconfigure(config: pytest.Config) -> None:
    plugin = config.pluginmanager.get_plugin(PLUGIN_NAME)
    if isinstance(plugin, TestlanePlugin):
        owns_run = RunEnv.current().owned_by(os.getpid())  # before close() unsets it
        plugin.close()
        config.pluginmanager.unregister(plugin, PLUGIN_NAME)
        if owns_run:
            _say_interrupted(config)


def _say_interrupted(config: pytest.Config) -> None:
    """After an interruption, once everything is cleaned up: one line saying what was interrupted.
    Only by the process that owns the run (``testlane run`` says it itself, xdist workers never do)."""
    from testlane.core.interrupts import interrupted_line, last_interruption

    interruption = last_interruption()
    if interruption is None:
        return
    line = interrupted_line(interruption)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line, yellow=True)
    else:
        print(line, file=sys.stderr)
