"""Events to every client of every app instance, through Valkey/Redis pub/sub.

Each instance keeps its own connected clients in a :class:`Hub`. Publishing goes to the channel
only; every instance — the publisher included — receives the event from the channel and hands it
to its hub, so each client gets exactly one copy whichever instance it is connected to.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import redis.asyncio as redis

log = logging.getLogger("chat.broadcast")

Event = dict[str, Any]


class Client(Protocol):
    """A connected client: events are sent to it as JSON."""

    async def send(self, event: Event) -> None: ...


class Broadcaster(Protocol):
    """Publishes an event to every client of every instance."""

    async def publish(self, event: Event) -> None: ...


class Hub:
    """The clients connected to this instance."""

    def __init__(self) -> None:
        self.clients: set[Client] = set()

    def add(self, client: Client) -> None:
        self.clients.add(client)

    def discard(self, client: Client) -> None:
        self.clients.discard(client)

    async def deliver(self, event: Event) -> None:
        for client in list(self.clients):
            await client.send(event)


class RedisBroadcaster:
    """:class:`Broadcaster` over a pub/sub ``channel``; every event heard there goes to ``deliver``."""

    def __init__(self, url: str, channel: str, deliver: Callable[[Event], Awaitable[None]]) -> None:
        self.url = url
        self.channel = channel
        self.deliver = deliver
        self._redis: redis.Redis | None = None
        self._pubsub: Any = None
        self._listener: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 5.0) -> None:
        """Subscribe, and return once the server confirmed it (no event published after this is missed)."""
        self._redis = redis.Redis.from_url(self.url)
        self._pubsub = self._redis.pubsub()
        await self._pubsub.subscribe(self.channel)
        async with asyncio.timeout(timeout):
            while True:
                message = await self._pubsub.get_message(timeout=timeout)
                if message is not None and message["type"] == "subscribe":
                    break
        self._listener = asyncio.create_task(self._listen(), name=f"broadcast-listener {self.channel}")

    async def publish(self, event: Event) -> None:
        assert self._redis is not None, "RedisBroadcaster.start() was not called"
        await self._redis.publish(self.channel, json.dumps(event))

    async def _listen(self) -> None:
        async for message in self._pubsub.listen():
            if message["type"] != "message":
                continue
            try:
                await self.deliver(json.loads(message["data"]))
            except Exception:
                log.exception("could not deliver an event from %s", self.channel)

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        if self._pubsub is not None:
            await self._pubsub.aclose()
        if self._redis is not None:
            await self._redis.aclose()
