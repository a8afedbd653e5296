"""The web harness's pure logic, with fakes: matching, selective waits and their messages, fake streams,
the strict HTTP mock, spies. Real servers and sockets: tests/integration/test_web_it.py."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from typing import Any

import httpx
import pytest

from testlane import FakeStream, HttpMock, Spies, UnmockedRequestError, WsClient, WsTimeout, fake_stream
from testlane.web.streams import FakeStreamError
from testlane.web.websocket import describe, matches

# --------------------------------------------------------------------------- matching


def test_a_dict_matches_as_a_subset_nested_too() -> None:
    message = {"type": "message", "message": {"role": "user", "content": "hi"}, "id": 3}
    assert matches(message, {"type": "message"})
    assert matches(message, {"message": {"role": "user"}})
    assert not matches(message, {"message": {"role": "assistant"}})
    assert not matches(message, {"missing": None})
    assert not matches("plain text", {"type": "message"})
    assert matches("anything", None)


def test_a_predicate_that_does_not_fit_the_message_is_no_match() -> None:
    assert matches({"type": "x"}, lambda m: m["type"] == "x")
    assert not matches("text frame", lambda m: m["type"] == "x")  # TypeError: no match, not a crash
    assert not matches({}, lambda m: m["type"] == "x")  # KeyError: no match


def test_errors_name_what_was_awaited() -> None:
    assert describe({"type": "system"}) == 'matching {"type": "system"}'
    assert describe(lambda m: m.get("id") == 7) == 'accepted by lambda m: m.get("id") == 7'

    def is_chunk(message: Any) -> bool:
        return True

    assert describe(is_chunk).endswith("is_chunk")


# --------------------------------------------------------------------------- selective waits, on a fake connection


class FakeConnection:
    """Stands in for websockets' connection: frames queued by the test, then silence (a timeout)."""

    def __init__(self, *frames: str | bytes) -> None:
        self.frames = deque(frames)
        self.timeouts: list[float] = []
        self.sent: list[str | bytes] = []

    def recv(self, timeout: float) -> str | bytes:
        if self.frames:
            return self.frames.popleft()
        self.timeouts.append(timeout)
        raise TimeoutError

    def send(self, message: str | bytes) -> None:
        self.sent.append(message)


def client_with(*frames: Any) -> tuple[WsClient, FakeConnection]:
    encoded = [f if isinstance(f, str | bytes) else json.dumps(f) for f in frames]
    connection = FakeConnection(*encoded)
    return WsClient(None, connection, "ws://test/chat", timeout=0.05), connection


def test_waits_skip_what_does_not_match_and_keep_it_for_later() -> None:
    client, _ = client_with({"type": "chunk", "n": 1}, {"id": "c1", "ok": True}, {"type": "chunk", "n": 2})
    assert client.wait_for_message({"id": "c1"}) == {"id": "c1", "ok": True}
    assert client.pending == [{"type": "chunk", "n": 1}]  # skipped, kept; the wait read no further
    assert client.collect(2, {"type": "chunk"}) == [{"type": "chunk", "n": 1}, {"type": "chunk", "n": 2}]
    assert client.pending == []
    assert len(client.received) == 3


def test_frames_are_decoded_when_they_are_json() -> None:
    client, _ = client_with('{"a": 1}', "plain", b"\x00raw")
    assert client.collect(3) == [{"a": 1}, "plain", b"\x00raw"]


def test_collect_says_received_k_of_n_and_shows_what_arrived() -> None:
    client, connection = client_with({"type": "chunk", "delta": "Hel"}, {"type": "system", "message": "Connected"})
    with pytest.raises(WsTimeout) as caught:
        client.collect(3, {"type": "chunk"}, timeout=0.2)
    text = str(caught.value)
    assert text.startswith('received 1 of 3 messages matching {"type": "chunk"} within 0.2s on ws://test/chat')
    assert '{"type": "chunk", "delta": "Hel"}' in text
    assert 'still pending (1):\n    {"type": "system", "message": "Connected"}' in text
    assert caught.value.matched == [{"type": "chunk", "delta": "Hel"}]
    assert caught.value.expected == 3
    assert 0 < connection.timeouts[0] <= 0.2  # the wait asked the socket for what was left of its deadline
    # a failed wait takes nothing: both messages are still there for the next one
    assert client.pending == [{"type": "chunk", "delta": "Hel"}, {"type": "system", "message": "Connected"}]


def test_a_long_backlog_is_listed_in_part() -> None:
    client, _ = client_with(*({"n": i} for i in range(15)))
    client.collect(15)
    client.pending[:] = client.received
    with pytest.raises(WsTimeout, match=r"(?s)still pending \(15\):.*\.\.\. and 5 more"):
        client.wait_for_message({"type": "never"})


def test_command_sends_a_generated_id_and_returns_the_answer_with_it() -> None:
    client, connection = client_with()
    with pytest.raises(WsTimeout, match=r'^no message matching \{"id": "[0-9a-f]{32}"\} arrived within 0.05s'):
        client.command("list_conversations")
    first = json.loads(connection.sent[0])
    assert first["command"] == "list_conversations" and first["payload"] == {}
    connection.frames.extend([json.dumps({"type": "noise"}), json.dumps({"id": "mine", "success": True})])
    assert client.command("x", {"a": 1}, id="mine") == {"id": "mine", "success": True}
    assert json.loads(connection.sent[1]) == {"id": "mine", "command": "x", "payload": {"a": 1}}


# --------------------------------------------------------------------------- fake streams


@pytest.mark.asyncio
async def test_a_fake_stream_yields_its_chunks_and_records_them() -> None:
    stream = fake_stream(["a", "b", "c"])
    assert [chunk async for chunk in stream] == ["a", "b", "c"]
    assert stream.yielded == ["a", "b", "c"] and stream.closed
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


@pytest.mark.asyncio
async def test_a_fake_stream_fails_midway() -> None:
    stream = fake_stream(["a", "b", "c"], error_after=2)
    received = []
    with pytest.raises(FakeStreamError, match="fake stream failed after 2 chunks"):
        async for chunk in stream:
            received.append(chunk)
    assert received == ["a", "b"] and stream.closed


@pytest.mark.asyncio
async def test_a_fake_stream_raises_the_error_it_is_given() -> None:
    with pytest.raises(ConnectionResetError):
        [c async for c in fake_stream(["a"], error_after=0, error=ConnectionResetError)]
    boom = ValueError("bad chunk")
    with pytest.raises(ValueError, match="bad chunk"):
        [c async for c in fake_stream(["a", "b"], error_after=1, error=boom)]


@pytest.mark.asyncio
async def test_a_fake_stream_waits_before_each_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def record(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", record)
    assert [c async for c in fake_stream([1, 2], delay=0.25)] == [1, 2]
    assert slept == [0.25, 0.25]


@pytest.mark.asyncio
async def test_a_consumer_that_stops_early_closes_the_stream() -> None:
    stream: FakeStream[str] = fake_stream(["a", "b", "c"])
    assert await anext(stream) == "a"
    assert not stream.closed
    await stream.aclose()
    assert stream.closed and stream.yielded == ["a"]
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


@pytest.mark.asyncio
async def test_a_fake_stream_is_a_streamed_http_body() -> None:
    with HttpMock() as mock:
        mock.get("https://api.example.com/events").respond(200, content=fake_stream([b"data: 1\n\n", b"data: 2\n\n"]))
        async with httpx.AsyncClient() as client, client.stream("GET", "https://api.example.com/events") as response:
            lines = [line async for line in response.aiter_lines() if line]
    assert lines == ["data: 1", "data: 2"]


# --------------------------------------------------------------------------- strict HTTP mock


def test_an_unmocked_request_fails_naming_it_and_is_recorded() -> None:
    with HttpMock() as mock:
        mock.get("https://api.example.com/v1/models").respond(200, json=[])
        assert httpx.get("https://api.example.com/v1/models").json() == []
        with pytest.raises(UnmockedRequestError) as caught:
            httpx.post("https://api.example.com/v1/chat?stream=1", json={})
    text = str(caught.value)
    assert text.startswith("HTTP request not mocked: POST https://api.example.com/v1/chat?stream=1")
    assert "<Path eq '/v1/models'>" in text  # the routes there are
    assert "http_mock.post('https://api.example.com/v1/chat').respond(200, json=...)" in text
    assert mock.unmocked == ["POST https://api.example.com/v1/chat?stream=1"]
    assert isinstance(caught.value, AssertionError)


def test_on_unmocked_gets_one_line_per_unmatched_request_with_the_fix() -> None:
    seen: list[str] = []
    with HttpMock(on_unmocked=seen.append), pytest.raises(UnmockedRequestError):
        httpx.get("https://rates.example.com/v2/eur?day=1")
    assert seen == [
        "unmatched outbound request GET https://rates.example.com/v2/eur?day=1 — mock it: "
        "http_mock.get('https://rates.example.com/v2/eur').respond(200, json=...)"
    ]


@pytest.mark.asyncio
async def test_async_clients_are_held_to_it_too() -> None:
    with HttpMock() as mock:
        async with httpx.AsyncClient() as client:
            with pytest.raises(UnmockedRequestError, match=r"GET https://elsewhere\.example\.com/"):
                await client.get("https://elsewhere.example.com/")
    assert mock.unmocked == ["GET https://elsewhere.example.com/"]


def test_unmocked_loopback_is_an_error_when_asked() -> None:
    with HttpMock(pass_loopback=False) as mock, pytest.raises(UnmockedRequestError, match=r"127\.0\.0\.1:9"):
        httpx.get("http://127.0.0.1:9/health")
    assert mock.unmocked == ["GET http://127.0.0.1:9/health"]


def test_the_mock_is_gone_after_the_block() -> None:
    with HttpMock() as mock:
        pass
    transport = httpx.MockTransport(lambda request: httpx.Response(204))
    assert httpx.Client(transport=transport).get("https://api.example.com/").status_code == 204
    assert mock.unmocked == []


# --------------------------------------------------------------------------- spies


class Greeter:
    def hello(self, name: str) -> str:
        return f"hello {name}"

    async def ahello(self, name: str) -> str:
        return f"hi {name}"

    @classmethod
    def build(cls) -> str:
        return cls.__name__

    @staticmethod
    def shout(text: str) -> str:
        if not text:
            raise ValueError("nothing to shout")
        return text.upper()


@pytest.mark.asyncio
async def test_spies_call_through_and_record() -> None:
    spies = Spies()
    hello, ahello, build, shout = (spies(Greeter, name) for name in ("hello", "ahello", "build", "shout"))
    greeter = Greeter()
    assert greeter.hello("ann") == "hello ann"
    assert await greeter.ahello("bob") == "hi bob"
    assert Greeter.build() == "Greeter"
    assert greeter.shout("hey") == "HEY"
    with pytest.raises(ValueError, match="nothing to shout"):
        Greeter.shout("")
    hello.assert_called_once_with(greeter, "ann")
    ahello.assert_awaited_once_with(greeter, "bob")
    assert (hello.returned, ahello.returned, build.returned) == (["hello ann"], ["hi bob"], ["Greeter"])
    assert [str(e) for e in shout.raised] == ["nothing to shout"]
    with pytest.raises(TypeError):
        greeter.hello("ann", "extra")  # autospec keeps the signature honest
    spies.restore()


def test_stubs_replace_and_restore_puts_back_the_originals() -> None:
    originals = {name: Greeter.__dict__[name] for name in ("hello", "ahello", "build", "shout")}
    spies = Spies()
    spies(Greeter, "hello")
    spies.stub(Greeter, "hello", return_value="stubbed")  # a stub over a spy
    spies.stub(Greeter, "shout", side_effect=RuntimeError("down"))
    spies.stub(json, "dumps", return_value="{}")
    assert Greeter().hello("x") == "stubbed"
    with pytest.raises(RuntimeError, match="down"):
        Greeter.shout("x")
    assert json.dumps([1]) == "{}"
    assert len(spies) == 4
    spies.restore()
    spies.restore()  # idempotent
    assert {name: Greeter.__dict__[name] for name in originals} == originals
    assert json.dumps([1]) == "[1]"


@pytest.mark.asyncio
async def test_a_stubbed_async_function_is_awaitable() -> None:
    spies = Spies()
    stub = spies.stub(Greeter, "ahello", return_value="stubbed")
    assert await Greeter().ahello("x") == "stubbed"
    stub.assert_awaited_once()
    spies.restore()
