"""Seam tests in pytest: the ``seam`` marker, ``@seam(repeat=N, fresh=True)``, ``seam_iteration``.

* ``@pytest.mark.seam`` (set by :func:`testlane.seams.seam`) marks a seam test: ``-m seam`` selects them.
* ``@seam(repeat=N, fresh=True)`` is parametrized here into N tests, ``[iteration-k-of-N]``, each
  with fresh function-scoped fixtures (the looping form needs no hook: see
  :mod:`testlane.seams.repeat`).
* ``seam_iteration`` (function scope): the running :class:`~testlane.seams.repeat.SeamIteration`.
* A seam test that uses a database in ``transaction`` isolation is an error naming the test and the
  fix: that mode gives the test one connection, so its "concurrent" callers cannot be concurrent.

Cheap to import: testlane.seams loads only inside the hooks and fixtures that need it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from testlane.seams.repeat import SeamIteration

__all__: list[str] = []

ITERATION_FIXTURE = "seam_iteration"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "seam(repeat=1, fresh=False): a seam test (testlane.seams.seam sets it); fresh=True repeats it as N tests",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("seam")
    if marker is None or not marker.kwargs.get("fresh"):
        return
    repeat = int(marker.kwargs.get("repeat", 1))
    if repeat <= 1:
        return
    from testlane.seams.repeat import SeamIteration

    if ITERATION_FIXTURE not in metafunc.fixturenames:
        metafunc.fixturenames.append(ITERATION_FIXTURE)
    metafunc.parametrize(
        ITERATION_FIXTURE,
        [SeamIteration(k, repeat) for k in range(1, repeat + 1)],
        ids=[f"iteration-{k}-of-{repeat}" for k in range(1, repeat + 1)],
        indirect=True,
    )


def may_fail_setup(item: pytest.Item) -> bool:
    """Whether :func:`check_setup` may fail ``item`` (a seam test with a Postgres database): once per test, after
    collection."""
    return "pg_database" in getattr(item, "fixturenames", ()) and item.get_closest_marker("seam") is not None


def check_setup(item: pytest.Item) -> None:
    """Before a test's fixtures are set up: a seam test whose database is in transaction isolation fails, naming
    the fix (called by :mod:`testlane.pytest_plugin.runtest`)."""
    if "pg_database" not in getattr(item, "fixturenames", ()) or item.get_closest_marker("seam") is None:
        return
    from testlane.core.errors import TestlaneError
    from testlane.pytest_plugin.boundary import fail_test
    from testlane.pytest_plugin.plugin import plugin_of

    try:
        mode = plugin_of(item.config).databases.isolation_for(item)
    except TestlaneError as exc:  # an unknown mode: the same one message pg_database gives
        fail_test(exc)
    if mode == "transaction":
        pytest.fail(
            f"{item.nodeid} is a seam test but its database uses transaction isolation, which gives the test "
            "one connection: its racers could not run concurrently. Mark it "
            '@pytest.mark.isolation("database") (each racer then opens its own connection to pg_database.url).',
            pytrace=False,
        )


@pytest.fixture
def seam_iteration(request: pytest.FixtureRequest) -> SeamIteration:
    """The running iteration of a repeated seam test (``.number``, 1-based, ``.of``)."""
    from testlane.seams.repeat import SeamIteration

    iteration = getattr(request, "param", None)
    return iteration if isinstance(iteration, SeamIteration) else SeamIteration()
