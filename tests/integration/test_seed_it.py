"""Seeding: polyfactory-built rows written through the test's real SQLAlchemy sessions, sync and async."""

from __future__ import annotations

from typing import Any

import pytest
from polyfactory.factories.sqlalchemy_factory import SQLAlchemyFactory
from sqlalchemy import ForeignKey, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from testlane import aseed, seed

pytestmark = pytest.mark.migrations("tests.integration.test_seed_it:Base.metadata")


class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "authors"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    email: Mapped[str] = mapped_column(Text, unique=True)


class Book(Base):
    __tablename__ = "books"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))


class AuthorFactory(SQLAlchemyFactory[Author]):
    __set_primary_key__ = False


class BookFactory(SQLAlchemyFactory[Book]):
    __set_primary_key__ = False
    __set_foreign_keys__ = False


def test_seed_commits_built_rows_visible_to_other_connections(db_session: Any, pg_conn: Any) -> None:
    authors = seed(db_session, AuthorFactory, 3)
    (special,) = seed(db_session, AuthorFactory, name="Ursula", email="ul@example.com")
    books = seed(db_session, BookFactory, 2, author_id=special.id)
    assert len({a.email for a in authors}) == 3
    assert all(a.id is not None for a in authors)
    rows = pg_conn.execute("SELECT name, email FROM authors ORDER BY id").fetchall()  # another connection
    assert len(rows) == 4 and rows[-1] == ("Ursula", "ul@example.com")
    titles = pg_conn.execute("SELECT title FROM books WHERE author_id = %s ORDER BY id", (special.id,)).fetchall()
    assert [t for (t,) in titles] == [b.title for b in books]


@pytest.mark.asyncio
async def test_aseed_writes_through_an_async_session(async_db_session: Any, pg_conn: Any) -> None:
    (author,) = await aseed(async_db_session, AuthorFactory, name="Octavia")
    author_id, name = author.id, author.name  # refreshed after the commit: readable without a lazy load
    books = await aseed(async_db_session, BookFactory, 3, author_id=author_id)  # (this commit expires `author`)
    assert name == "Octavia" and author_id is not None
    assert [b.author_id for b in books] == [author_id] * 3
    count = pg_conn.execute("SELECT count(*) FROM books WHERE author_id = %s", (author_id,)).fetchone()
    assert count == (3,)
