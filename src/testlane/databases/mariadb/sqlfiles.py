"""Running ``.sql`` migration files on MariaDB/MySQL, one statement at a time.

A file is split into statements (sqlparse, which keeps ``BEGIN ... END`` bodies of triggers and
routines together) and each statement is sent on its own, so a failure names the file, the line
and the statement next to the server's error. ``DELIMITER`` lines — a directive of the ``mariadb``
command-line client, not SQL, common in dumps and in files that define routines — are honoured:
between ``DELIMITER //`` and ``DELIMITER ;`` statements end at ``//``.

MySQL commits every DDL statement on its own, so files are not wrapped in transactions; a file that
fails half-way leaves the template half-built, which is why the template is only marked ready once
every file succeeded (see :mod:`testlane.databases.mariadb.template`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testlane.core.errors import MigrationError
from testlane.databases.migrations import SqlFolder, split_statements

__all__ = ["Statement", "apply_sql_file", "apply_sql_folder", "is_empty_statement", "split_script"]

_DELIMITER = re.compile(r"^[ \t]*DELIMITER[ \t]+(\S+)[ \t]*(?:\r?\n|$)", re.IGNORECASE | re.MULTILINE)
# Comments that are only comments. `/*! ... */` and `/*M! ... */` are *executable* in MySQL/MariaDB
# (dumps put whole statements in them), so they count as content.
_COMMENTS = re.compile(r"--[ \t][^\n]*|--$|#[^\n]*|/\*(?![!M]).*?\*/", re.DOTALL | re.MULTILINE)


@dataclass(frozen=True)
class Statement:
    """One statement of a script: its text (without the delimiter) and the line it starts on."""

    line: int
    sql: str


def is_empty_statement(sql: str) -> bool:
    """True when ``sql`` holds nothing but whitespace and (non-executable) comments."""
    return not _COMMENTS.sub("", sql).strip().strip(";").strip()


def _regions(text: str) -> list[tuple[int, str, str]]:
    """(offset, text, delimiter) pieces of ``text`` between ``DELIMITER`` directives."""
    regions: list[tuple[int, str, str]] = []
    delimiter = ";"
    position = 0
    for match in _DELIMITER.finditer(text):
        regions.append((position, text[position : match.start()], delimiter))
        delimiter = match.group(1)
        position = match.end()
    regions.append((position, text[position:], delimiter))
    return regions


def _split_on(text: str, delimiter: str) -> list[tuple[int, str]]:
    """Split on a custom delimiter (``//``, ``$$``, ``;;``). Hand-written: sqlparse knows only ``;``.

    Like the ``mariadb`` client, this does not look inside quotes for a custom delimiter.
    """
    out = []
    position = 0
    for piece in text.split(delimiter):
        if piece.strip():
            out.append((position, piece))
        position += len(piece) + len(delimiter)
    return out


def _leading_comments(sql: str) -> int:
    """How many characters of ``sql`` are leading whitespace and comments (to find its first line)."""
    match = re.match(r"(?:\s+|--[ \t][^\n]*|#[^\n]*|/\*(?![!M]).*?\*/)*", sql, re.DOTALL)
    return match.end() if match else 0


def split_script(text: str) -> list[Statement]:
    """The statements of a SQL script, with the line each starts on; empty ones left out."""
    statements: list[Statement] = []
    for offset, region, delimiter in _regions(text):
        pieces = split_statements(region) if delimiter == ";" else _split_on(region, delimiter)
        for start, piece in pieces:
            if is_empty_statement(piece):
                continue
            lead = _leading_comments(piece)
            sql = piece[lead:].rstrip()
            if delimiter == ";" and sql.endswith(";"):
                sql = sql[:-1].rstrip()
            statements.append(Statement(text.count("\n", 0, offset + start + lead) + 1, sql))
    return statements


def apply_sql_file(conn: Any, path: Path) -> None:
    """Run every statement of ``path`` on the PyMySQL connection ``conn`` (autocommit).

    Raises :class:`MigrationError` naming the file, line, statement and server error.
    """
    import pymysql

    text = path.read_text(encoding="utf-8")
    with conn.cursor() as cur:
        for statement in split_script(text):
            try:
                cur.execute(statement.sql)
                while cur.nextset():  # a CALL may return several results
                    pass
            except pymysql.err.MySQLError as exc:
                raise migration_error(exc, path, statement) from None


def apply_sql_folder(conn: Any, folder: SqlFolder) -> None:
    """Apply every ``.sql`` file of ``folder`` in natural name order (``2_`` before ``10_``)."""
    for path in folder.files():
        apply_sql_file(conn, path)


def server_error(exc: BaseException) -> str:
    """A PyMySQL error as the server said it: ``message (error 1146)``."""
    args: tuple[Any, ...] = tuple(getattr(exc, "args", ()))
    if len(args) >= 2 and isinstance(args[0], int):
        return f"{args[1]} (error {args[0]})"
    return str(exc).strip() or type(exc).__name__


def migration_error(exc: BaseException, path: Path, statement: Statement) -> MigrationError:
    """The :class:`MigrationError` for a statement of a migration file that the server refused."""
    shown = statement.sql.strip().replace("\n", "\n    ")
    return MigrationError(
        f"migration failed in {path}: {server_error(exc)}\nstatement (line {statement.line}):\n    {shown}",
        hint="fix the migration; the template is rebuilt when its files change.",
    )
