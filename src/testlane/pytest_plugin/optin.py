"""Whether a project has opted in to testlane: until it does, installing testlane changes nothing.

A pytest process is **opted in** when any of these holds (decided once, kept in ``config.stash``):

* the configuration file testlane reads (``TESTLANE_CONFIG``, else the nearest pyproject.toml at or above
  pytest's rootdir) has a ``[tool.testlane]`` table — ``testlane init`` writes one (a ``TESTLANE_CONFIG`` that
  names no file, or one that cannot be read, stops pytest, opted in or not: it was set to opt in or to
  configure, and cannot be followed);
* ``TESTLANE_IT`` is true — ``testlane run`` sets it for the pytest it starts — or ``TESTLANE_SERVICES_FILE``
  is set (``testlane run``, and ``eval "$(testlane services env)"`` for detached services);
* one of testlane's own pytest options is given (on the command line, in ``PYTEST_ADDOPTS`` or in
  ``addopts``): ``--it``, ``--lane``, ``--testlane-set``, ``--format``, ``--digest``, ``--shard``...

Not opted in, testlane only registers its options (so ``pytest --help`` lists them): no fixtures, no
lanes, no network guard, no timeouts or leak checks, no reports. If a test then errors because a
fixture named like one of testlane's is not found, one line at the end of the run says how to opt in.
What opting in turns on is documented in one place: docs/lanes.md, "What opting in turns on".
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from testlane.core import environment
from testlane.core.config import testlane_table_file
from testlane.core.errors import ConfigError
from testlane.core.runenv import RunEnv
from testlane.pytest_plugin.options import NOT_GIVEN

__all__ = ["IT_ENV", "OptIn", "it_env_on", "opted_in", "record_options"]

IT_ENV = environment.IT
SERVICES_FILE_ENV = environment.SERVICES_FILE

_optin_key = pytest.StashKey["OptIn"]()
# dest -> default of every pytest option testlane registers (the same every session, so one table).
_OPTION_DEFAULTS: dict[str, Any] = {}


@dataclass(frozen=True)
class OptIn:
    """The decision: ``reason`` says what opted the project in (``None``: it did not)."""

    reason: str | None

    def __bool__(self) -> bool:
        return self.reason is not None


def it_env_on(env: RunEnv) -> bool:
    """``TESTLANE_IT`` is set to a true value (``1``, ``true``, ``yes``, ``on``); a value that is neither true
    nor false stops pytest with one line (see :func:`testlane.core.environment.integration_lane_from_env`)."""
    try:
        return env.integration_lane
    except ConfigError as exc:
        raise pytest.UsageError(f"testlane: {exc}") from None


def record_options(group: Any) -> None:
    """Remember the options of a testlane option group (a ``pytest.OptionGroup``), to tell when one is used."""
    for argument in group.options:
        _OPTION_DEFAULTS[argument.dest] = argument.attrs().get("default")


def _option_given(config: pytest.Config) -> str | None:
    namespaces = [config.option, getattr(config, "known_args_namespace", None)]
    for dest, default in _OPTION_DEFAULTS.items():
        for namespace in namespaces:
            value = getattr(namespace, dest, default) if namespace is not None else default
            if value is default:
                continue
            # An option whose default means "not given" counts whatever its value: --digest-budget 0 too.
            if default is NOT_GIVEN or value not in (None, False, [], ""):
                return f"option {dest}"
    return None


def _decide(config: pytest.Config) -> OptIn:
    try:
        table = testlane_table_file(Path(str(config.rootpath)))
    except ConfigError as exc:  # TESTLANE_CONFIG names no file: like TESTLANE_IT=maybe, said whether opted in or not
        raise pytest.UsageError(f"testlane: {exc}") from None
    if table is not None:
        return OptIn(f"[tool.testlane] in {table}")
    env = RunEnv.current()
    if it_env_on(env):
        return OptIn(f"{IT_ENV}=1")
    if env.services_file:
        return OptIn(SERVICES_FILE_ENV)
    option = _option_given(config)
    return OptIn(option)


def opted_in(config: pytest.Config) -> OptIn:
    """Whether this pytest process runs testlane (decided on first call, then kept)."""
    decision = config.stash.get(_optin_key, None)
    if decision is None:
        decision = config.stash[_optin_key] = _decide(config)
    return decision


class NotOptedIn:
    """Registered instead of testlane when the project has not opted in: at most one line, only when a test
    errored because a fixture named like one of testlane's was not found."""

    def __init__(self) -> None:
        self.missing: set[str] = set()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "setup" or not report.failed:
            return
        missing = set(re.findall(r"fixture '(\w+)' not found", str(report.longrepr)))
        if missing:
            self.missing |= missing & _fixture_names()

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.missing:
            names = ", ".join(f"'{n}'" for n in sorted(self.missing))
            what = f"fixture {names} is" if len(self.missing) == 1 else f"fixtures {names} are"
            terminalreporter.write_line(
                f"testlane: {what} testlane's, and this project has not opted in to testlane: add a "
                "[tool.testlane] table to pyproject.toml (`testlane init` writes one) or run `testlane run`.",
                yellow=True,
            )


@functools.cache
def _fixture_names() -> frozenset[str]:
    """The fixtures testlane defines (imported only when a fixture was not found: never on a green run)."""
    import importlib

    from testlane.pytest_plugin.plugin import FEATURES

    names: set[str] = set()
    for module_name in FEATURES:
        for obj in vars(importlib.import_module(module_name)).values():
            if getattr(obj, "_fixture_function_marker", None) is not None:  # pytest's fixture definition
                names.add(str(getattr(obj, "name", "")))
    return frozenset(names)
