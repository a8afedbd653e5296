"""Where AI replies come from: the :class:`ChatProvider` interface and two providers.

A reply is an async generator of text chunks, so the app can pass each one on as it arrives.
:class:`OpenAIProvider` talks to any OpenAI-compatible chat-completions API (streamed as
server-sent events); :class:`EchoProvider` answers offline. Tests plug in a fake built on
testlane's ``fake_stream`` (tests/fakes.py).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Protocol

import httpx


@dataclass(frozen=True)
class Turn:
    """One message of the conversation, as the provider sees it."""

    role: str
    content: str


class ChatProvider(Protocol):
    """An AI that streams a reply to a conversation and names conversations."""

    def stream_reply(self, history: Sequence[Turn]) -> AsyncGenerator[str, None]:
        """The reply to ``history`` (oldest first, ending with the user's message), chunk by chunk."""
        ...

    async def title(self, first_message: str) -> str:
        """A short title for a conversation that starts with ``first_message``."""
        ...


class ProviderError(RuntimeError):
    """The provider answered with an error or something unreadable."""


class EchoProvider:
    """An offline provider: echoes the user's message word by word; titles are its first words."""

    async def stream_reply(self, history: Sequence[Turn]) -> AsyncGenerator[str, None]:
        words = f"You said: {history[-1].content}".split(" ")
        for index, word in enumerate(words):
            yield word if index == 0 else f" {word}"

    async def title(self, first_message: str) -> str:
        words = first_message.split()
        return " ".join(words[:6]) + ("…" if len(words) > 6 else "")


class OpenAIProvider:
    """An OpenAI-compatible chat-completions API, over ``client`` (its base URL and key set by the caller)."""

    def __init__(self, client: httpx.AsyncClient, *, model: str) -> None:
        self.client = client
        self.model = model

    async def stream_reply(self, history: Sequence[Turn]) -> AsyncGenerator[str, None]:
        body = {
            "model": self.model,
            "stream": True,
            "messages": [{"role": t.role, "content": t.content} for t in history],
        }
        async with self.client.stream("POST", "/chat/completions", json=body) as response:
            if response.status_code != 200:
                await response.aread()
                raise ProviderError(f"chat completion failed: HTTP {response.status_code} {response.text[:200]}")
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue  # blank separators, comments, keep-alives
                data = line[len("data:") :].strip()
                if data == "[DONE]":
                    return
                try:
                    delta = json.loads(data)["choices"][0]["delta"].get("content")
                except (ValueError, KeyError, IndexError) as exc:
                    raise ProviderError(f"unreadable stream event: {data[:200]}") from exc
                if delta:
                    yield delta

    async def title(self, first_message: str) -> str:
        prompt = f"Give a title of at most six words for a conversation that starts with: {first_message}"
        body = {"model": self.model, "messages": [{"role": "user", "content": prompt}]}
        response = await self.client.post("/chat/completions", json=body)
        if response.status_code != 200:
            raise ProviderError(f"title completion failed: HTTP {response.status_code}")
        return str(response.json()["choices"][0]["message"]["content"]).strip().strip('"')
