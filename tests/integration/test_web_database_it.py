"""The web harness with the test's database: seeding through real sessions (sync and async), and an app
served by a live server using the test's session through FastAPI's dependency overrides."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from polyfactory.factories.sqlalchemy_factory import SQLAlchemyFactory
from sqlalchemy import ForeignKey, Text, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from testlane import LiveServer, aseed, seed

pytestmark = pytest.mark.migrations("tests.integration.test_web_database_it:Base.metadata")


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


# --------------------------------------------------------------------------- dependency injection


def get_session(request: Request) -> Iterator[Session]:
    """The app's own session per request, from the engine its settings gave it: what tests override."""
    with Session(request.app.state.engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def make_app(database_url: str) -> FastAPI:
    app = FastAPI()
    app.state.engine = create_engine(database_url)

    @app.post("/authors")
    def add_author(name: str, session: SessionDep) -> dict[str, int]:
        author = Author(name=name, email=f"{name.lower()}@example.com")
        session.add(author)
        session.commit()
        return {"id": author.id}

    @app.get("/authors")
    def list_authors(session: SessionDep) -> list[str]:
        return list(session.scalars(select(Author.name).order_by(Author.id)))

    return app


@pytest.fixture
def app(db_session: Session) -> FastAPI:
    app = make_app("postgresql+psycopg://nowhere.invalid/never-used")
    app.dependency_overrides[get_session] = lambda: db_session  # the test's session, not the app's
    return app


@pytest.mark.isolation("transaction")
@pytest.mark.parametrize("run", [1, 2])
def test_the_app_uses_the_test_s_session_and_its_writes_roll_back(
    app: FastAPI, live_server: Any, db_session: Session, run: int
) -> None:
    server: LiveServer = live_server(app)
    assert httpx.post(f"{server.url}/authors", params={"name": f"Run{run}"}).status_code == 200
    assert httpx.get(f"{server.url}/authors").json() == [f"Run{run}"]  # never the other run's row
    assert db_session.scalars(select(Author.email)).all() == [f"run{run}@example.com"]
