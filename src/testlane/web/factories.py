"""Seeding: rows built by polyfactory factories, written through a real SQLAlchemy session.

::

    class ConversationFactory(SQLAlchemyFactory[Conversation]):
        __set_relationships__ = False

    conversations = seed(db_session, ConversationFactory, 3, title="Trip")      # committed rows
    messages = await aseed(async_db_session, MessageFactory, 2, conversation_id=conversations[0].id)

Why polyfactory rather than factory_boy: it derives values from the model's type hints and
column types (a new column needs no factory change), it is typed (``build()`` returns the model
type), and it builds for SQLAlchemy, dataclasses, Pydantic and msgspec alike. Its own persistence
needs a session on the factory *class* (``__session__``), which is global state across tests;
these helpers take the test's session explicitly instead and only use the factory to build.

The rows are committed, so code that opens its own connections (a live server's app) sees them in
``database`` isolation; in ``transaction`` isolation the commit is a savepoint, visible only to
the test's own session.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from polyfactory.factories.base import BaseFactory
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

__all__ = ["aseed", "seed"]

T = TypeVar("T")


def seed(session: Session, factory: type[BaseFactory[T]], count: int = 1, /, **overrides: object) -> list[T]:
    """Build ``count`` objects with ``factory`` (``overrides`` fixed for all), add and commit them."""
    objects = factory.batch(count, **overrides)
    session.add_all(objects)
    session.commit()
    return objects


async def aseed(
    session: AsyncSession, factory: type[BaseFactory[T]], count: int = 1, /, **overrides: object
) -> list[T]:
    """:func:`seed` through an ``AsyncSession``; the objects are refreshed (no lazy loads needed)."""
    objects = factory.batch(count, **overrides)
    session.add_all(objects)
    await session.commit()
    for obj in objects:
        await session.refresh(obj)
    return objects
