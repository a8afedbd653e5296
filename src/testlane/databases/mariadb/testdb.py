"""The MariaDB/MySQL database a test got: what ``mysql_database`` and ``testlane.db.mysql_database()`` return."""

from __future__ import annotations

from dataclasses import dataclass

from testlane.databases.testdb import TestDatabase

__all__ = ["MysqlTestDatabase"]


@dataclass
class MysqlTestDatabase(TestDatabase):
    """A MariaDB/MySQL database testlane created for a test: ``name``, ``url`` (``mysql://...``),
    ``isolation``, ``connect()`` (PyMySQL, autocommit off by default), ``sqlalchemy_url()``.

    In ``transaction`` mode ``savepoint_conn`` is the
    :class:`~testlane.databases.mariadb.transaction.MysqlSavepointConnection` whose work is rolled back.
    """

    __test__ = False

    def sqlalchemy_url(self, driver: str = "pymysql") -> str:
        """The URL for SQLAlchemy with ``driver`` (``mysql+pymysql://...``)."""
        from testlane.core.urls import ServiceUrl

        return str(ServiceUrl.parse(self.url).for_sqlalchemy(driver))
