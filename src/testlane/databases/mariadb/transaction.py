"""Transaction isolation on MariaDB/MySQL: each test inside a transaction that is rolled back.

One migrated database per worker; per test a :class:`MysqlSavepointConnection` opens a transaction
and two savepoints. The application's ``commit()`` re-takes the ``testlane_app`` savepoint, its
``rollback()`` returns to it, ``begin()`` does nothing (a real ``BEGIN`` would commit the test's
transaction), and at the end of the test everything is rolled back.

**Implicit commits.** MySQL commits the open transaction before (and after) every DDL statement and
a few others — ``CREATE``/``ALTER``/``DROP``/``RENAME``/``TRUNCATE``, ``LOCK TABLES``, ``GRANT``,
``START TRANSACTION``, ``SET autocommit = 1``, ``ANALYZE``/``OPTIMIZE`` and more — so their effects
and everything written before them escape the rollback. The connection refuses them before they are
sent (:class:`ImplicitCommitError`, naming the statement; ``CREATE``/``DROP TEMPORARY TABLE`` are
fine). What it cannot see — a stored procedure that runs DDL, a connection of the application's own
— is caught afterwards: the ``testlane_outer`` savepoint, which nothing else touches, is gone after
any commit, so :meth:`~MysqlSavepointConnection.end_test` reports the escape and the caller rebuilds
the worker's database.
"""

from __future__ import annotations

import re

import pymysql
import pymysql.connections

__all__ = ["ImplicitCommitError", "MysqlSavepointConnection", "implicit_commit"]

APP = "testlane_app"
OUTER = "testlane_outer"
_SAVEPOINT_MISSING = 1305

_LEADING = re.compile(r"(?:\s+|--[ \t][^\n]*(?:\n|$)|#[^\n]*(?:\n|$)|/\*(?![!M]).*?\*/|\()*", re.DOTALL)
_COMMITS = re.compile(
    r"""^(?:
        (?:CREATE|DROP)\s+(?!(?:OR\s+REPLACE\s+)?TEMPORARY\b)\w+
      | ALTER\s+\w+ | RENAME\s+\w+ | TRUNCATE\b
      | BEGIN(?!\s+NOT\s+ATOMIC)\b | START\s+TRANSACTION\b | COMMIT\b | ROLLBACK\b(?!\s+(?:WORK\s+)?TO\b)
      | SET\s+(?:SESSION\s+|@@(?:SESSION\.)?)?AUTOCOMMIT\s*(?:=|:=)\s*(?:1|ON|TRUE)\b
      | LOCK\s+TABLES?\b | UNLOCK\s+TABLES?\b | FLUSH\b | RESET\b
      | GRANT\b | REVOKE\b | SET\s+PASSWORD\b
      | (?:ANALYZE|OPTIMIZE|REPAIR|CHECK)\s+(?:NO_WRITE_TO_BINLOG\s+|LOCAL\s+)?TABLES?\b
      | CACHE\s+INDEX\b | LOAD\s+INDEX\b | (?:INSTALL|UNINSTALL)\s+(?:PLUGIN|SONAME)\b
      | XA\b
    )""",
    re.IGNORECASE | re.VERBOSE,
)


class ImplicitCommitError(pymysql.err.ProgrammingError):
    """Raised (instead of sending the statement) when a statement would commit the test's transaction."""

    def __str__(self) -> str:
        return str(self.args[-1]) if self.args else super().__str__()


def implicit_commit(sql: str | bytes) -> str | None:
    """The statement (shortened) when it would end the open transaction in MySQL/MariaDB, else None."""
    text = sql.decode("utf-8", "replace") if isinstance(sql, bytes) else sql
    start = _LEADING.match(text)
    body = text[start.end() if start else 0 :]
    match = _COMMITS.match(body)
    if match is None:
        return None
    head = " ".join(body.split())
    return head if len(head) <= 60 else head[:57] + "..."


class MysqlSavepointConnection(pymysql.connections.Connection):
    """A PyMySQL connection whose ``commit``/``rollback`` act on a savepoint of an outer transaction.

    ``begin_test()`` opens the transaction and the savepoints; ``end_test()`` rolls everything back and
    returns False when something committed the transaction in between (see the module docstring).
    """

    _in_test = False
    refused: list[str] = []  # statements refused during the current test (set per test)

    def begin_test(self) -> None:
        self.refused = []
        self._raw("START TRANSACTION")
        self._raw(f"SAVEPOINT {OUTER}")
        self._raw(f"SAVEPOINT {APP}")
        self._in_test = True

    def end_test(self) -> bool:
        """Roll the test's work back; False when an implicit commit let some of it escape."""
        self._in_test = False
        if not self.open:
            return True
        intact = True
        try:
            self._raw(f"ROLLBACK TO SAVEPOINT {OUTER}")
        except pymysql.err.OperationalError as exc:
            if exc.args and exc.args[0] == _SAVEPOINT_MISSING:
                intact = False
            else:
                raise
        self._raw("ROLLBACK")
        return intact

    def _raw(self, sql: str) -> None:
        pymysql.connections.Connection.query(self, sql)

    def query(self, sql: str | bytes, unbuffered: bool = False) -> int:
        if self._in_test:
            words = implicit_commit(sql)
            if words is not None:
                self.refused.append(words)
                raise ImplicitCommitError(
                    0,
                    f"testlane: refused {words!r}: in MySQL/MariaDB it ends (commits) the open transaction, so "
                    "the test's writes would escape the rollback of transaction isolation. Use database isolation "
                    "for tests that run DDL (@pytest.mark.isolation('database')), or move the DDL into the migrations.",
                )
        return int(pymysql.connections.Connection.query(self, sql, unbuffered))

    def begin(self) -> None:
        if not self._in_test:
            pymysql.connections.Connection.begin(self)

    def commit(self) -> None:
        if not self._in_test:
            pymysql.connections.Connection.commit(self)
            return
        self._raw(f"SAVEPOINT {APP}")  # MySQL replaces a savepoint of the same name

    def rollback(self) -> None:
        if not self._in_test:
            pymysql.connections.Connection.rollback(self)
            return
        self._raw(f"ROLLBACK TO SAVEPOINT {APP}")

    def autocommit(self, value: bool) -> None:
        if value and self._in_test:
            raise ImplicitCommitError(
                0,
                "testlane: this connection runs inside the test's rolled-back transaction; autocommit would "
                "escape it. Use database isolation for code that needs autocommit.",
            )
        pymysql.connections.Connection.autocommit(self, value)
