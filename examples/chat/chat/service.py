"""The commands, the streamed AI reply and the background title: the app's behaviour, free of I/O details.

:class:`ChatService` depends only on interfaces — a :class:`~chat.store.ChatStore`, a
:class:`~chat.broadcast.Broadcaster`, a :class:`~chat.providers.ChatProvider` and a client to
answer — so the unit lane drives it with fakes and the integration lane with the real thing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from chat.broadcast import Broadcaster, Client
from chat.protocol import InvalidMessage, error_event, failure, parse_command, success
from chat.providers import ChatProvider, Turn
from chat.store import ChatStore

log = logging.getLogger("chat.service")

Job = Callable[[], Coroutine[Any, Any, None]]


class CommandError(Exception):
    """A command failed in a way the client is told about (``str()`` is the message)."""


class Background:
    """Tasks started and not awaited: kept (so they are not garbage-collected), errors logged, cancelled at close."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()

    def spawn(self, job: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(job, name=name)
        self.tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def drain(self) -> None:
        """Wait until no task is left (tasks may start others)."""
        while self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@dataclass
class Context:
    """One command's circumstances: who asked, and work to start once they have their answer."""

    client: Client
    after_reply: list[Job] = field(default_factory=list)


Handler = Callable[[Context, dict[str, Any]], Awaitable[Any]]


def _conversation_id(payload: dict[str, Any]) -> uuid.UUID:
    value = payload.get("conversationId")
    if not isinstance(value, str):
        raise CommandError("'conversationId' is required")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise CommandError(f"'conversationId' is not a valid id: {value!r}") from None


class ChatService:
    """Runs commands for clients; see :mod:`chat.protocol` for what goes over the wire."""

    def __init__(
        self,
        store: ChatStore,
        broadcaster: Broadcaster,
        provider: ChatProvider,
        background: Background,
        *,
        default_title: str = "New chat",
    ) -> None:
        self.store = store
        self.broadcaster = broadcaster
        self.provider = provider
        self.background = background
        self.default_title = default_title
        self.commands: dict[str, Handler] = {
            "load_conversation": self.load_conversation,
            "send_message": self.send_message,
            "list_conversations": self.list_conversations,
            "delete_conversation": self.delete_conversation,
        }

    # -- the wire ------------------------------------------------------------------------------
    async def handle(self, client: Client, raw: str) -> None:
        """Answer one frame from ``client``; then start the work its command left for after the answer."""
        try:
            command = parse_command(raw)
        except InvalidMessage as exc:
            await client.send(error_event(str(exc)))
            return
        handler = self.commands.get(command.name)
        if handler is None:
            known = ", ".join(sorted(self.commands))
            await client.send(failure(command.id, f"Unknown command {command.name!r} (known: {known})"))
            return
        context = Context(client)
        try:
            data = await handler(context, command.payload)
        except CommandError as exc:
            await client.send(failure(command.id, str(exc)))
            return
        except Exception:
            log.exception("command %s failed", command.name)
            await client.send(failure(command.id, "Internal error"))
            return
        await client.send(success(command.id, data))
        for job in context.after_reply:
            self.background.spawn(job(), name=f"{command.name} {command.id}")

    # -- commands ------------------------------------------------------------------------------
    async def load_conversation(self, context: Context, payload: dict[str, Any]) -> dict[str, Any]:
        """Load the conversation ``conversationId`` with its messages, or create one when none is given."""
        if payload.get("conversationId") is None:
            created = await self.store.create_conversation(self.default_title)
            return {**created.to_json(messages=True), "created": True}
        conversation_id = _conversation_id(payload)
        conversation = await self.store.get_conversation(conversation_id)
        if conversation is None:
            raise CommandError(f"Conversation {conversation_id} not found")
        return {**conversation.to_json(messages=True), "created": False}

    async def send_message(self, context: Context, payload: dict[str, Any]) -> dict[str, Any]:
        """Store the user's message, tell every client; then stream the AI reply (and title a new conversation)."""
        conversation_id = _conversation_id(payload)
        content = payload.get("content")
        if not isinstance(content, str) or not content.strip():
            raise CommandError("'content' must be a non-empty string")
        conversation = await self.store.get_conversation(conversation_id)
        if conversation is None:
            raise CommandError(f"Conversation {conversation_id} not found")
        message = await self.store.add_message(conversation_id, "user", content)
        await self.broadcaster.publish(
            {"type": "message", "conversationId": str(conversation_id), "message": message.to_json()}
        )
        history = [*(Turn(m.role, m.content) for m in conversation.messages), Turn("user", content)]
        context.after_reply.append(lambda: self.stream_reply(context.client, conversation_id, history))
        if not conversation.messages and conversation.title == self.default_title:
            context.after_reply.append(lambda: self.give_title(conversation_id, content))
        return {"conversationId": str(conversation_id), "messageId": message.id}

    async def list_conversations(self, context: Context, payload: dict[str, Any]) -> dict[str, Any]:
        """Every conversation, most recently active first, with its message count."""
        return {"conversations": [c.to_json() for c in await self.store.list_conversations()]}

    async def delete_conversation(self, context: Context, payload: dict[str, Any]) -> dict[str, Any]:
        """Delete a conversation and its messages; tell every client."""
        conversation_id = _conversation_id(payload)
        if not await self.store.delete_conversation(conversation_id):
            raise CommandError(f"Conversation {conversation_id} not found")
        await self.broadcaster.publish({"type": "conversation_deleted", "conversationId": str(conversation_id)})
        return {"conversationId": str(conversation_id), "deleted": True}

    # -- after the answer ----------------------------------------------------------------------
    async def stream_reply(self, client: Client, conversation_id: uuid.UUID, history: list[Turn]) -> None:
        """Pass the provider's reply on chunk by chunk; store it whole, then tell every client."""
        key = str(conversation_id)
        parts: list[str] = []
        try:
            async with contextlib.aclosing(self.provider.stream_reply(history)) as stream:
                async for delta in stream:
                    await client.send(
                        {"type": "ai_response_chunk", "conversationId": key, "index": len(parts), "delta": delta}
                    )
                    parts.append(delta)
            message = await self.store.add_message(conversation_id, "assistant", "".join(parts))
        except Exception as exc:
            log.warning("AI reply for %s failed after %d chunks: %r", key, len(parts), exc)
            await client.send(
                {"type": "ai_response_error", "conversationId": key, "message": f"The AI reply failed: {exc}"}
            )
            return
        await client.send(
            {"type": "ai_response_done", "conversationId": key, "messageId": message.id, "content": message.content}
        )
        await self.broadcaster.publish({"type": "message", "conversationId": key, "message": message.to_json()})

    async def give_title(self, conversation_id: uuid.UUID, first_message: str) -> None:
        """Title a new conversation after its first message (unless someone titled it meanwhile)."""
        title = (await self.provider.title(first_message)).strip()[:80] or self.default_title
        if await self.store.set_title(conversation_id, title, only_if=self.default_title):
            await self.broadcaster.publish(
                {"type": "conversation_titled", "conversationId": str(conversation_id), "title": title}
            )
