"""The FastAPI app: ``create_app(settings)`` — a settings factory, so tests hand it their own services.

``GET /health`` answers ``{"status": "ok"}``; ``/chat-ws`` speaks the protocol of :mod:`chat.protocol`.
Everything with a lifetime (the database engine, the Valkey connections, the HTTP client of a real
AI provider, background tasks) is opened in the lifespan and closed when the server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from chat.broadcast import Event, Hub, RedisBroadcaster
from chat.protocol import error_event, welcome
from chat.providers import ChatProvider, EchoProvider, OpenAIProvider
from chat.service import Background, ChatService
from chat.settings import Settings
from chat.store import SqlChatStore


class WebSocketClient:
    """A connected WebSocket: sends are serialised (replies, streams and broadcasts interleave)."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.open = True
        self._lock = asyncio.Lock()

    async def send(self, event: Event) -> None:
        if not self.open:
            return
        async with self._lock:
            try:
                await self.websocket.send_text(json.dumps(event))
            except (WebSocketDisconnect, RuntimeError, OSError):  # gone meanwhile: nothing to tell it any more
                self.open = False


def create_app(settings: Settings, *, provider: ChatProvider | None = None) -> FastAPI:
    """The chat app for ``settings``; ``provider`` replaces the configured AI (tests pass a fake)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            engine = create_async_engine(settings.async_database_url, pool_size=5)
            stack.push_async_callback(engine.dispose)
            hub = Hub()
            broadcaster = RedisBroadcaster(settings.redis_url, settings.channel, hub.deliver)
            stack.push_async_callback(broadcaster.stop)
            await broadcaster.start()
            chosen = provider
            if chosen is None and settings.openai_api_key:
                client = httpx.AsyncClient(
                    base_url=settings.openai_base_url,
                    headers={"Authorization": f"Bearer {settings.openai_api_key}"},
                    timeout=60,
                )
                stack.push_async_callback(client.aclose)
                chosen = OpenAIProvider(client, model=settings.openai_model)
            background = Background()
            stack.push_async_callback(background.close)
            app.state.hub = hub
            app.state.service = ChatService(
                SqlChatStore(async_sessionmaker(engine, expire_on_commit=False)),
                broadcaster,
                chosen or EchoProvider(),
                background,
                default_title=settings.default_title,
            )
            yield

    app = FastAPI(title="chat", lifespan=lifespan)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.websocket("/chat-ws")
    async def chat_ws(websocket: WebSocket) -> None:
        await websocket.accept()
        client = WebSocketClient(websocket)
        hub: Hub = websocket.app.state.hub
        service: ChatService = websocket.app.state.service
        hub.add(client)
        try:
            await client.send(welcome())
            while True:
                frame = await websocket.receive()
                if frame["type"] == "websocket.disconnect":
                    break
                if frame.get("text") is None:
                    await client.send(error_event("Invalid message: expected a JSON text frame"))
                    continue
                await service.handle(client, frame["text"])
        finally:
            client.open = False
            hub.discard(client)

    return app
