"""The two lanes: a unit lane that never touches a real service, and a gated integration lane.

A test is in the **integration lane** when it is marked ``integration`` or lives in a file matching
``lanes.integration_patterns`` (default ``*_it.py`` and ``tests/integration/*``); every other test is
in the **unit lane**. A project that never set ``lanes.integration_patterns`` and has no test in the
integration lane by the default patterns or the mark has declared no lanes: when it asks for services
(``testlane run``, ``--it``, ``--lane it|all``) all its tests are integration tests. Which lanes run:

================================  ==========================================================
(nothing)                         unit lane; integration tests are *skipped*, with one summary
                                  line saying how to run them; when *every* selected test was
                                  skipped so, the run exits 5 (``lanes.all_skipped``)
``--it`` or ``TESTLANE_IT=1``      both lanes (``testlane run`` sets ``TESTLANE_IT=1``)
``--lane unit|it|all``            exactly that; the other lane's tests are *deselected* (under
                                  ``--lane unit``, files the patterns select are not even
                                  collected: :func:`pytest_ignore_collect`)
================================  ==========================================================

In the unit lane, testlane's service fixtures are an error naming the test and the fix (a fixture
counts as testlane's by the definition pytest resolved for the test, not by its name: a project's own
``redis_url`` is the project's), and network connections are blocked (see
:mod:`testlane.pytest_plugin.network_guard`). The lane of the running test is published to
:data:`testlane.databases.guard.current_lane` for the database helpers.
"""

from __future__ import annotations

import fnmatch
import functools
import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from testlane.core.config import LaneSettings, Settings
from testlane.core.runenv import RunEnv
from testlane.databases.guard import current_lane
from testlane.pytest_plugin.optin import it_env_on

__all__ = ["SERVICE_FIXTURES", "LaneSelection", "add_options", "declares_lanes", "integration_patterns", "lane_of"]

SERVICE_FIXTURES = frozenset(
    {
        "postgres",
        "valkey",
        "mariadb",
        "pg_database",
        "pg_url",
        "pg_conn",
        "pg_aconn",
        "db_engine",
        "db_session",
        "async_db_engine",
        "async_db_session",
        "redis_db",
        "redis_client",
        "redis_url",
        "redis_channel_prefix",
        "aredis_client",
        "mysql_database",
        "mysql_conn",
        "mysql_url",
        "nats",
        "jetstream",
        "s3",
        "s3_bucket",
        "mqtt",
        "mqtt_namespace",
        "rabbitmq",
        "rabbitmq_vhost",
    }
)

lane_key = pytest.StashKey[str]()
selection_key = pytest.StashKey["LaneSelection"]()


@dataclass
class LaneSelection:
    """What this session runs, decided once from ``--it``, ``--lane`` and ``TESTLANE_IT``."""

    it_enabled: bool
    explicit: str | None  # --lane value, if given
    skipped: list[str] = field(default_factory=list)
    deselected: int = 0
    not_collected: int = 0  # test files under explicit --lane unit that the patterns put in the integration lane
    tests_run: int = 0  # tests whose setup was reported (on the xdist controller too)
    lane_skipped: int = 0  # of those, skipped because the integration lane is off
    no_lanes: bool = False  # the suite declares no lanes (declares_lanes): under --lane, all of it is integration

    @property
    def all_skipped(self) -> bool:
        """Every test that ran was an integration test skipped because the lane is off: nothing was tested."""
        return self.tests_run > 0 and self.lane_skipped == self.tests_run

    @property
    def runs_integration(self) -> bool:
        return self.it_enabled and self.explicit in (None, "it", "all")

    @classmethod
    def from_config(cls, config: pytest.Config) -> LaneSelection:
        explicit = config.getoption("testlane_lane")
        it_enabled = bool(config.getoption("testlane_it")) or it_env_on(RunEnv.current()) or explicit in ("it", "all")
        return cls(it_enabled=it_enabled, explicit=explicit)


SKIP_REASON = "integration lane is off (run `testlane run` or `pytest --it`)"
NO_UNIT_LANE = (
    "the suite declares no lanes, so every test is an integration test (`--lane it`, `testlane run`); "
    "to have a unit lane, set [tool.testlane.lanes] integration_patterns"
)


def declares_lanes(
    settings: Settings, items: Sequence[pytest.Item], rootdir: Path, marked: Sequence[bool] | None = None
) -> bool:
    """Whether the project has lanes: it set ``lanes.integration_patterns``, or one of ``items`` is in the
    integration lane by the default patterns or the ``integration`` mark (``marked``: whether each item has the
    mark, when already known)."""
    if "lanes.integration_patterns" in settings.explicit:
        return True
    patterns = settings.lanes.integration_patterns
    if marked is None:
        return any(_is_integration(item, patterns, rootdir) for item in items)
    return any(_is_integration(item, patterns, rootdir, mark) for item, mark in zip(items, marked, strict=True))


def integration_patterns(settings: Settings, selection: LaneSelection, declared: bool) -> list[str]:
    """The patterns in force: the project's; a project without lanes that asked for services (``testlane run``,
    ``--it``, ``--lane it|all``) has every test in the integration lane, and so has one asked for a lane by name
    (``--lane unit``): it has no unit lane, so the gate's unit check (``python -m pytest --lane unit``) has nothing
    to test instead of running integration tests without their services. Plain ``pytest`` runs it as it always did."""
    if not declared and (selection.it_enabled or selection.explicit is not None):
        return ["*"]
    return list(settings.lanes.integration_patterns)


def add_options(group: pytest.OptionGroup) -> None:
    """``--it`` and ``--lane`` (registered by the plugin whether or not the project opted in)."""
    group.addoption(
        "--it",
        action="store_true",
        dest="testlane_it",
        default=False,
        help="turn the integration lane on (same as TESTLANE_IT=1; `testlane run` does it)",
    )
    group.addoption(
        "--lane",
        choices=("unit", "it", "all"),
        dest="testlane_lane",
        default=None,
        help="run only this lane (`it` and `all` turn the integration lane on)",
    )


def pytest_configure(config: pytest.Config) -> None:
    from testlane.pytest_plugin.report_hooks import on_logreport

    config.addinivalue_line("markers", "integration: the test needs real services (the integration lane)")
    selection = config.stash[selection_key] = LaneSelection.from_config(config)
    on_logreport(config, _Counter(selection).count)


def _is_integration(item: pytest.Item, patterns: Sequence[str], rootdir: Path, marked: bool | None = None) -> bool:
    if marked is None:
        marked = item.get_closest_marker("integration") is not None
    if marked:
        return True
    return _path_matches(str(item.path), tuple(patterns), str(rootdir))


@functools.lru_cache(maxsize=4096)
def _path_matches(item_path: str, patterns: tuple[str, ...], rootdir: str) -> bool:
    """Whether a test file is in the integration lane by ``patterns``: once per file, not once per test."""
    path = Path(item_path)
    try:
        rel = path.relative_to(rootdir).as_posix()
    except ValueError:
        rel = path.as_posix()
    return any(fnmatch.fnmatch(rel, pattern) or fnmatch.fnmatch(path.name, pattern) for pattern in patterns)


def _dir_matches(dir_path: str, patterns: tuple[str, ...], rootdir: str) -> bool:
    """Whether every file under a directory is in the integration lane by ``patterns``: a pattern ``D/*`` whose
    ``D`` matches it (fnmatch's ``*`` matches ``/`` too, so ``D/*`` matches everything below ``D``)."""
    path = Path(dir_path)
    try:
        rel = path.relative_to(rootdir).as_posix()
    except ValueError:
        rel = path.as_posix()
    return any(pattern.endswith("/*") and fnmatch.fnmatch(rel, pattern[:-2]) for pattern in patterns)


def _is_test_file(path: Path, config: pytest.Config) -> bool:
    return path.suffix == ".py" and any(fnmatch.fnmatch(path.name, glob) for glob in config.getini("python_files"))


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Under an explicit ``--lane unit``, files (and directories) the integration patterns select are not
    collected: every test in them would be deselected, and importing them can fail without the integration
    lane's variables (a module asserting its database URL at import time). Plain ``pytest`` still collects
    them (it skips their tests and says how to run them); the mark alone is only known after import, so a
    marked test in another file is still collected, then deselected."""
    selection = config.stash.get(selection_key, None)
    if selection is None or selection.explicit != "unit":
        return None
    patterns = tuple(_lane_settings(config).integration_patterns)
    rootdir = str(config.rootpath)
    if collection_path.is_dir():
        if not _dir_matches(str(collection_path), patterns, rootdir):
            return None
        selection.not_collected += sum(1 for path in collection_path.rglob("*.py") if _is_test_file(path, config))
        return True
    if not _path_matches(str(collection_path), patterns, rootdir):
        return None
    selection.not_collected += _is_test_file(collection_path, config)
    return True


def lane_of(item: pytest.Item) -> str:
    """``"it"`` or ``"unit"`` (after collection)."""
    return item.stash.get(lane_key, "unit")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    from testlane.pytest_plugin.plugin import plugin_of

    settings = plugin_of(config).settings
    selection = config.stash[selection_key]
    rootdir = Path(str(config.rootpath))
    # Each item's mark looked up once (pytest walks the item's parents for it), for both passes.
    marked = [item.get_closest_marker("integration") is not None for item in items]
    # A test file left uncollected (pytest_ignore_collect) matched the patterns: the project has lanes.
    declared = bool(selection.not_collected) or declares_lanes(settings, items, rootdir, marked)
    selection.no_lanes = not declared and bool(items)
    patterns = integration_patterns(settings, selection, declared)
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item, mark in zip(items, marked, strict=True):
        lane = "it" if _is_integration(item, patterns, rootdir, mark) else "unit"
        item.stash[lane_key] = lane
        if lane == "it" and not mark:
            item.add_marker(pytest.mark.integration)
        if (selection.explicit == "unit" and lane == "it") or (selection.explicit == "it" and lane == "unit"):
            dropped.append(item)
            continue
        if lane == "it" and not selection.it_enabled:
            selection.skipped.append(item.nodeid)
            item.add_marker(pytest.mark.skip(reason=SKIP_REASON))
        keep.append(item)
    if dropped:
        selection.deselected = len(dropped)
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def _is_testlanes(fixturedef: pytest.FixtureDef[object]) -> bool:
    func = inspect.unwrap(fixturedef.func)
    return str(getattr(func, "__module__", "") or "").startswith("testlane.pytest_plugin.")


def _resolves_to_testlane(name: str, defs: Sequence[pytest.FixtureDef[object]]) -> bool:
    """Whether the definition pytest resolved for ``name`` is testlane's, or a project's override of the same
    name that requests it (``def pg_url(pg_url)``)."""
    for fixturedef in reversed(defs):  # the last one is the closest: the one the test gets
        if _is_testlanes(fixturedef):
            return True
        if name not in fixturedef.argnames:
            return False
    return False


def service_fixtures_used(item: pytest.Item) -> list[str]:
    """testlane's service fixtures ``item`` uses, by the definitions pytest resolved for it (names sorted)."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return []
    return sorted(
        name
        for name in getattr(item, "fixturenames", ())
        if name in SERVICE_FIXTURES and _resolves_to_testlane(name, info.name2fixturedefs.get(name, ()))
    )


def _fixtures_phrase(item: pytest.Item, used: list[str]) -> str:
    """``service fixture 'pg_conn' (through 'pg_database'), which needs a real server``: the fixtures the test
    asked for first (its own parameters; else the first in pytest's order), the ones they pulled in after."""
    order = [name for name in getattr(item, "fixturenames", ()) if name in used]
    info = getattr(item, "_fixtureinfo", None)
    asked = [name for name in order if name in getattr(info, "argnames", ())] or order[:1]
    through = [name for name in order if name not in asked]

    def quoted(names: list[str]) -> str:
        words = [f"'{name}'" for name in names]
        return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"

    phrase = f"service fixture {quoted(asked)}" if len(asked) == 1 else f"service fixtures {quoted(asked)}"
    if through:
        phrase += f" (through {quoted(through)})"
    return phrase + (", which needs a real server" if len(asked) == 1 else ", which need real servers")


def may_fail_setup(item: pytest.Item) -> bool:
    """Whether :func:`check_setup` may fail ``item`` (a unit-lane test asking for a fixture named like one of
    testlane's service fixtures): once per test, after collection."""
    return lane_of(item) == "unit" and not SERVICE_FIXTURES.isdisjoint(getattr(item, "fixturenames", ()))


def check_setup(item: pytest.Item) -> None:
    """Before a test's fixtures are set up (after its skip marks): a unit-lane test that uses testlane's service
    fixtures fails, naming them and the fix (called by :mod:`testlane.pytest_plugin.runtest`)."""
    if lane_of(item) != "unit":
        return
    used = service_fixtures_used(item)
    if used:
        pytest.fail(
            f"{item.nodeid} is in the unit lane but uses testlane's {_fixtures_phrase(item, used)}. "
            "Mark the test @pytest.mark.integration, or move it to tests/integration/ or a *_it.py file, "
            "or list its files in [tool.testlane.lanes] integration_patterns; in the unit lane, use a fake instead.",
            pytrace=False,
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """The lane of the running test published, and its network blocked in the unit lane."""
    from testlane.pytest_plugin.network_guard import block_network, lift_network_guard

    lane = lane_of(item)
    token = current_lane.set(lane)
    lanes = _lane_settings(item.config)
    guard = None
    try:
        if lane == "unit" and lanes.block_network:
            guard = block_network(item, lanes.unit_allow_hosts)
        else:
            lift_network_guard(item.config)  # not blocked: the patches come off until the next unit-lane test
        return (yield)
    finally:
        if guard is not None:
            guard.item = None
        current_lane.reset(token)
        if nextitem is None:  # this process's last test
            lift_network_guard(item.config)


_lane_settings_key = pytest.StashKey[LaneSettings]()


def _lane_settings(config: pytest.Config) -> LaneSettings:
    """The session's ``[tool.testlane.lanes]`` (looked up once, then kept in the stash)."""
    lanes = config.stash.get(_lane_settings_key, None)
    if lanes is None:
        from testlane.pytest_plugin.plugin import plugin_of

        lanes = config.stash[_lane_settings_key] = plugin_of(config).settings.lanes
    return lanes


class _Counter:
    """Counts what ran (from reports, not collection: under xdist only the controller sees every report)."""

    def __init__(self, selection: LaneSelection) -> None:
        self.selection = selection

    def count(self, report: pytest.TestReport) -> None:
        if report.when != "setup":
            return
        self.selection.tests_run += 1
        if report.skipped and isinstance(report.longrepr, tuple) and SKIP_REASON in str(report.longrepr[2]):
            self.selection.lane_skipped += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    selection = config.stash.get(selection_key, None)
    if selection is None:
        return
    count = selection.lane_skipped or len(selection.skipped)
    # Every selected test skipped: the run's verdict says it (testlane.reports, which sets the exit status).
    if count and not selection.all_skipped:
        terminalreporter.write_line(
            f"testlane: {count} integration test{'s' if count != 1 else ''} skipped: the integration lane is off. "
            "Run them with `testlane run` (services included) or `pytest --it`.",
            yellow=True,
        )
    if selection.deselected:
        other = "integration" if selection.explicit == "unit" else "unit"
        terminalreporter.write_line(
            f"testlane: --lane {selection.explicit}: {selection.deselected} {other}-lane test(s) deselected"
            + (f" ({NO_UNIT_LANE})." if selection.no_lanes and selection.explicit == "unit" else ".")
        )
    if selection.not_collected:
        terminalreporter.write_line(
            f"testlane: --lane unit: {selection.not_collected} integration-lane file(s) not collected "
            "(lanes.integration_patterns); run them with `testlane run` or `pytest --lane it`."
        )
