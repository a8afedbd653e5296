"""The session's settings and servers as fixtures (registered only for a project that opted in).

Fixtures (session scope):

``testlane_settings``  the resolved :class:`~testlane.core.config.Settings`
``postgres``           the run's :class:`~testlane.services.postgres.PostgresServer`
``valkey``             the run's :class:`~testlane.services.valkey.ValkeyServer`
``mariadb``            the run's MariaDB/MySQL server (in :mod:`testlane.pytest_plugin.mariadb`)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from testlane.core.config import Settings
from testlane.pytest_plugin.plugin import plugin_of, settings_key

if TYPE_CHECKING:
    from testlane.services.postgres import PostgresServer
    from testlane.services.valkey import ValkeyServer

__all__: list[str] = []


@pytest.fixture(scope="session")
def testlane_settings(pytestconfig: pytest.Config) -> Settings:
    """The resolved testlane settings for this session."""
    return pytestconfig.stash[settings_key]


@pytest.fixture(scope="session")
def postgres(pytestconfig: pytest.Config) -> Iterator[PostgresServer]:
    """The run's PostgreSQL server (``.url``, ``.connect()``, ``.dsn(dbname)``), started on demand."""
    yield plugin_of(pytestconfig).server("postgres")


@pytest.fixture(scope="session")
def valkey(pytestconfig: pytest.Config) -> Iterator[ValkeyServer]:
    """The run's Valkey server (``.url``, ``.client(db)``), started on demand."""
    yield plugin_of(pytestconfig).server("valkey")
