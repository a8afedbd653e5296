"""Persistence: the :class:`ChatStore` interface the commands use, and its SQLAlchemy implementation.

The store returns plain frozen views, never ORM objects, so nothing lazy-loads after its session is
gone; unit tests replace it with an in-memory fake (tests/fakes.py).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chat.models import Conversation, Message, utcnow


@dataclass(frozen=True)
class MessageView:
    """A stored message."""

    id: int
    role: str
    content: str
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "role": self.role, "content": self.content, "createdAt": self.created_at.isoformat()}


@dataclass(frozen=True)
class ConversationView:
    """A stored conversation, with its messages when loaded whole."""

    id: uuid.UUID
    title: str
    created_at: datetime
    updated_at: datetime
    messages: tuple[MessageView, ...] = ()
    message_count: int = 0

    def to_json(self, *, messages: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "conversationId": str(self.id),
            "title": self.title,
            "createdAt": self.created_at.isoformat(),
            "updatedAt": self.updated_at.isoformat(),
            "messageCount": self.message_count,
        }
        if messages:
            data["messages"] = [m.to_json() for m in self.messages]
        return data


class ChatStore(Protocol):
    """What the commands need from storage."""

    async def create_conversation(self, title: str) -> ConversationView: ...

    async def get_conversation(self, conversation_id: uuid.UUID) -> ConversationView | None: ...

    async def list_conversations(self) -> list[ConversationView]: ...

    async def delete_conversation(self, conversation_id: uuid.UUID) -> bool: ...

    async def add_message(self, conversation_id: uuid.UUID, role: str, content: str) -> MessageView: ...

    async def set_title(self, conversation_id: uuid.UUID, title: str, *, only_if: str) -> bool: ...


def _message(row: Message) -> MessageView:
    return MessageView(row.id, row.role, row.content, row.created_at)


def _conversation(row: Conversation, messages: list[Message] | None = None, count: int = 0) -> ConversationView:
    views = tuple(_message(m) for m in messages or ())
    return ConversationView(row.id, row.title, row.created_at, row.updated_at, views, count or len(views))


class SqlChatStore:
    """:class:`ChatStore` on Postgres through SQLAlchemy's asyncio sessions; one session per call."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def create_conversation(self, title: str) -> ConversationView:
        async with self.sessions.begin() as session:
            row = Conversation(title=title)
            session.add(row)
        return _conversation(row)

    async def get_conversation(self, conversation_id: uuid.UUID) -> ConversationView | None:
        async with self.sessions() as session:
            row = await session.get(Conversation, conversation_id)
            if row is None:
                return None
            messages = (
                await session.scalars(
                    select(Message).where(Message.conversation_id == conversation_id).order_by(Message.id)
                )
            ).all()
            return _conversation(row, list(messages))

    async def list_conversations(self) -> list[ConversationView]:
        count = func.count(Message.id)
        query = (
            select(Conversation, count)
            .outerjoin(Message, Message.conversation_id == Conversation.id)
            .group_by(Conversation.id)
            .order_by(Conversation.updated_at.desc(), Conversation.id)
        )
        async with self.sessions() as session:
            rows = (await session.execute(query)).all()
        return [_conversation(row, count=n) for row, n in rows]

    async def delete_conversation(self, conversation_id: uuid.UUID) -> bool:
        async with self.sessions.begin() as session:
            result = await session.execute(
                delete(Conversation).where(Conversation.id == conversation_id).returning(Conversation.id)
            )
            return result.first() is not None  # its messages went with it: ON DELETE CASCADE

    async def add_message(self, conversation_id: uuid.UUID, role: str, content: str) -> MessageView:
        async with self.sessions.begin() as session:
            row = Message(conversation_id=conversation_id, role=role, content=content)
            session.add(row)
            await session.execute(
                update(Conversation).where(Conversation.id == conversation_id).values(updated_at=utcnow())
            )
        return _message(row)

    async def set_title(self, conversation_id: uuid.UUID, title: str, *, only_if: str) -> bool:
        async with self.sessions.begin() as session:
            result = await session.execute(
                update(Conversation)
                .where(Conversation.id == conversation_id, Conversation.title == only_if)
                .values(title=title)
                .returning(Conversation.id)
            )
            return result.first() is not None
