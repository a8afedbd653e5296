"""The MariaDB/MySQL database a test got: what ``mysql_database`` and ``testlane.db.mysql_database()`` return."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from testlane.databases.testdb import IsolatedDatabase

if TYPE_CHECKING:
    import pymysql.connections

    # Named (as strings) in MysqlTestDatabase's base class, which ruff does not read as type expressions.
    from testlane.databases.mariadb.engine import MariaDbLease  # noqa: F401
    from testlane.databases.mariadb.transaction import MysqlSavepointConnection  # noqa: F401
    from testlane.services.mariadb import MariaDbServer  # noqa: F401

__all__ = ["MysqlTestDatabase"]


@dataclass
class MysqlTestDatabase(IsolatedDatabase["MariaDbServer", "MariaDbLease", "MysqlSavepointConnection"]):
    """A MariaDB/MySQL database testlane created for a test: ``name``, ``url`` (``mysql://...``),
    ``isolation``, ``connect()`` (PyMySQL, autocommit off by default), ``sqlalchemy_url()``.

    In ``transaction`` mode ``savepoint_conn`` is the
    :class:`~testlane.databases.mariadb.transaction.MysqlSavepointConnection` whose work is rolled back.
    """

    __test__ = False

    def connect(self, *, autocommit: bool = False) -> pymysql.connections.Connection:
        """A new PyMySQL connection to the database."""
        return self.server.connect(self.name, autocommit=autocommit)

    def sqlalchemy_url(self, driver: str = "pymysql") -> str:
        """The URL for SQLAlchemy with ``driver`` (``mysql+pymysql://...``)."""
        from testlane.core.urls import ServiceUrl

        return str(ServiceUrl.parse(self.url).for_sqlalchemy(driver))
