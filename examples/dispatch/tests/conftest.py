"""The implementations under test, real by default — or deliberately broken ones, to watch tests catch them.

Each guarded piece is served by a fixture named after it (``locks``, ``claim``, ``add_wait``,
``worker_class``, ``job_worker``, ``queue_by_name``, ``delete_schedule``, ``windows_overlapping``). Normally that
fixture is the real implementation. With ``--broken SEAM=VARIANT`` it is that broken variant from
:mod:`dispatch.broken`; with ``--broken all`` every test of every seam runs once per variant
(``[real]``, ``[check-then-delete]``, ...): the ``[real]`` ones must pass, the broken ones fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from dispatch.broken import VARIANTS


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--broken",
        action="append",
        default=[],
        metavar="SEAM=VARIANT|all",
        help="run the seam tests against a deliberately broken implementation (dispatch/broken.py); "
        "'all': every seam test once per variant, the real one included",
    )


def chosen_variants(config: pytest.Config) -> dict[str, list[str]]:
    chosen: dict[str, list[str]] = {}
    for spec in config.getoption("broken"):
        if spec == "all":
            return {seam: list(variants) for seam, variants in VARIANTS.items()}
        seam, _, name = spec.partition("=")
        if name not in VARIANTS.get(seam, {}):
            known = ", ".join(f"{s}={v}" for s, vs in VARIANTS.items() for v in vs if v != "real")
            raise pytest.UsageError(f"--broken {spec}: unknown; one of: all, {known}")
        chosen.setdefault(seam, []).append(name)
    return chosen


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for seam, names in chosen_variants(metafunc.config).items():
        if seam in metafunc.fixturenames:
            metafunc.parametrize(seam, names, indirect=True)


def implementation(request: pytest.FixtureRequest, seam: str) -> Any:
    return VARIANTS[seam][getattr(request, "param", "real")]


@pytest.fixture
def claim(request: pytest.FixtureRequest) -> Any:
    return implementation(request, "claim")


@pytest.fixture
def add_wait(request: pytest.FixtureRequest) -> Any:
    return implementation(request, "add_wait")


@pytest.fixture
def worker_class(request: pytest.FixtureRequest) -> Any:
    return implementation(request, "worker_class")


@pytest.fixture
def job_worker(request: pytest.FixtureRequest) -> Any:
    return implementation(request, "job_worker")


@pytest.fixture
def queue_by_name(request: pytest.FixtureRequest) -> Any:
    return implementation(request, "queue_by_name")


@pytest.fixture
def delete_schedule(request: pytest.FixtureRequest) -> Any:
    return implementation(request, "delete_schedule")


@pytest.fixture
def windows_overlapping(request: pytest.FixtureRequest) -> Any:
    return implementation(request, "windows_overlapping")


@pytest.fixture
def locks(request: pytest.FixtureRequest, pg_database: Any) -> Iterator[Any]:
    """A lock manager whose every lock opens its own connection to the test's database."""
    manager = implementation(request, "locks")(lambda: pg_database.connect(autocommit=True))
    yield manager
    manager.close()
