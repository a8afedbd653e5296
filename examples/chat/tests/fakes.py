"""Fakes for the unit lane: a provider built on testlane's fake_stream, an in-memory store, recording clients."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from chat.models import utcnow
from chat.providers import Turn
from chat.store import ConversationView, MessageView

from testlane import FakeStream, fake_stream

CHUNKS = ("Hello", ", ", "world", "!")


class FakeProvider:
    """Streams ``chunks`` (``delay`` before each; an error after ``error_after``) and titles with ``title``."""

    def __init__(
        self,
        chunks: Sequence[str] = CHUNKS,
        *,
        delay: float = 0.0,
        error_after: int | None = None,
        title: str = "Greetings",
    ) -> None:
        self.chunks = list(chunks)
        self.delay = delay
        self.error_after = error_after
        self.title_text = title
        self.histories: list[list[Turn]] = []
        self.streams: list[FakeStream[str]] = []
        self.titled: list[str] = []

    def stream_reply(self, history: Sequence[Turn]) -> FakeStream[str]:
        self.histories.append(list(history))
        stream = fake_stream(self.chunks, delay=self.delay, error_after=self.error_after)
        self.streams.append(stream)
        return stream

    async def title(self, first_message: str) -> str:
        self.titled.append(first_message)
        return self.title_text


class MemoryStore:
    """:class:`chat.store.ChatStore` in a dict."""

    def __init__(self) -> None:
        self.conversations: dict[uuid.UUID, ConversationView] = {}
        self._next_message_id = 1

    async def create_conversation(self, title: str) -> ConversationView:
        now = utcnow()
        view = ConversationView(uuid.uuid4(), title, now, now)
        self.conversations[view.id] = view
        return view

    async def get_conversation(self, conversation_id: uuid.UUID) -> ConversationView | None:
        return self.conversations.get(conversation_id)

    async def list_conversations(self) -> list[ConversationView]:
        return sorted(self.conversations.values(), key=lambda c: c.updated_at, reverse=True)

    async def delete_conversation(self, conversation_id: uuid.UUID) -> bool:
        return self.conversations.pop(conversation_id, None) is not None

    async def add_message(self, conversation_id: uuid.UUID, role: str, content: str) -> MessageView:
        conversation = self.conversations[conversation_id]  # KeyError: like the foreign key refusing it
        message = MessageView(self._next_message_id, role, content, utcnow())
        self._next_message_id += 1
        messages = (*conversation.messages, message)
        self.conversations[conversation_id] = replace(
            conversation, messages=messages, message_count=len(messages), updated_at=message.created_at
        )
        return message

    async def set_title(self, conversation_id: uuid.UUID, title: str, *, only_if: str) -> bool:
        conversation = self.conversations.get(conversation_id)
        if conversation is None or conversation.title != only_if:
            return False
        self.conversations[conversation_id] = replace(conversation, title=title)
        return True


class RecordingClient:
    """A client that keeps what it was sent."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def send(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("type") == kind]


class RecordingBroadcaster:
    """A broadcaster that keeps what was published."""

    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []

    async def publish(self, event: dict[str, Any]) -> None:
        self.published.append(event)
