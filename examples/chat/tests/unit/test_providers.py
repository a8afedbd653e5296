"""AI providers. The OpenAI-compatible one is tested against respx (testlane's strict ``http_mock``):
its streamed answer is a ``fake_stream`` of server-sent-event lines, errors mid-stream included."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from chat.providers import EchoProvider, OpenAIProvider, ProviderError, Turn

from testlane import UnmockedRequestError, fake_stream

API = "https://llm.example.com/v1"


def sse(*deltas: str) -> list[bytes]:
    """Server-sent events as an OpenAI-compatible API streams them."""
    events = [{"choices": [{"delta": {"content": d}}]} for d in deltas]
    return [f"data: {json.dumps(e)}\n\n".encode() for e in events] + [b"data: [DONE]\n\n"]


@pytest.fixture
async def provider() -> AsyncIterator[OpenAIProvider]:
    async with httpx.AsyncClient(base_url=API) as client:
        yield OpenAIProvider(client, model="test-model")


async def collect(stream: AsyncIterator[str]) -> list[str]:
    return [chunk async for chunk in stream]


async def test_echo_provider_streams_the_message_back() -> None:
    chunks = await collect(EchoProvider().stream_reply([Turn("user", "good morning")]))
    assert chunks == ["You", " said:", " good", " morning"]
    assert await EchoProvider().title("one two three four five six seven") == "one two three four five six…"


async def test_a_streamed_reply_arrives_chunk_by_chunk(provider: OpenAIProvider, http_mock: Any) -> None:
    route = http_mock.post(f"{API}/chat/completions").respond(200, content=fake_stream(sse("Hel", "lo", "!")))
    chunks = await collect(provider.stream_reply([Turn("user", "Hi")]))
    assert chunks == ["Hel", "lo", "!"]
    sent = json.loads(route.calls.last.request.content)
    assert sent == {"model": "test-model", "stream": True, "messages": [{"role": "user", "content": "Hi"}]}


async def test_a_stream_cut_midway_raises_after_the_chunks_it_gave(provider: OpenAIProvider, http_mock: Any) -> None:
    body = fake_stream(sse("Hel", "lo", "!"), error_after=2, error=httpx.ReadError("connection reset"))
    http_mock.post(f"{API}/chat/completions").respond(200, content=body)
    received: list[str] = []
    with pytest.raises(httpx.ReadError, match="connection reset"):
        async for chunk in provider.stream_reply([Turn("user", "Hi")]):
            received.append(chunk)
    assert received == ["Hel", "lo"]


async def test_an_error_status_is_a_provider_error(provider: OpenAIProvider, http_mock: Any) -> None:
    http_mock.post(f"{API}/chat/completions").respond(429, json={"error": "slow down"})
    with pytest.raises(ProviderError, match="HTTP 429"):
        await collect(provider.stream_reply([Turn("user", "Hi")]))


async def test_an_unreadable_event_is_a_provider_error(provider: OpenAIProvider, http_mock: Any) -> None:
    http_mock.post(f"{API}/chat/completions").respond(200, content=fake_stream([b"data: {oops\n\n"]))
    with pytest.raises(ProviderError, match="unreadable stream event"):
        await collect(provider.stream_reply([Turn("user", "Hi")]))


async def test_titles_come_from_a_plain_completion(provider: OpenAIProvider, http_mock: Any) -> None:
    http_mock.post(f"{API}/chat/completions").respond(200, json={"choices": [{"message": {"content": '"Trip"'}}]})
    assert await provider.title("Plan a trip to Lisbon") == "Trip"


async def test_a_call_nobody_mocked_fails_naming_it(http_mock: Any) -> None:
    async with httpx.AsyncClient(base_url="https://other.example.com/v1") as client:
        with pytest.raises(UnmockedRequestError, match=r"POST https://other\.example\.com/v1/chat/completions"):
            await OpenAIProvider(client, model="m").title("Hi")
    http_mock.unmocked.clear()  # expected here: do not fail the test in teardown
