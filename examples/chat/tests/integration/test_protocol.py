"""The WebSocket protocol, end to end: welcome, command and answer, bad frames, unknown commands."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx

from testlane import LiveServer, WsClient


def test_every_client_is_welcomed(ws_client: Callable[..., WsClient], server: LiveServer) -> None:
    client = ws_client(f"{server.ws_url}/chat-ws")
    assert client.recv() == {"type": "system", "message": "Connected"}


def test_a_command_gets_the_answer_with_its_id(connect: Callable[..., WsClient]) -> None:
    client = connect()
    answer = client.command("load_conversation")
    assert answer["success"] is True
    assert (answer["data"]["title"], answer["data"]["messages"]) == ("New chat", [])
    uuid.UUID(answer["data"]["conversationId"])


def test_invalid_json_gets_an_error_and_the_connection_stays_usable(connect: Callable[..., WsClient]) -> None:
    client = connect()
    client.send("this is not json")
    error = client.wait_for_message({"type": "error"})
    assert error["message"].startswith("Invalid JSON")
    assert client.command("list_conversations")["success"] is True


def test_an_unknown_command_fails_cleanly(connect: Callable[..., WsClient]) -> None:
    client = connect()
    answer = client.command("teleport", {"to": "mars"})
    assert answer["success"] is False
    assert answer["error"].startswith("Unknown command 'teleport'")


def test_a_binary_frame_is_refused(connect: Callable[..., WsClient]) -> None:
    client = connect()
    client.send(b"\x00\x01")
    assert client.wait_for_message({"type": "error"})["message"] == "Invalid message: expected a JSON text frame"


def test_the_http_side_answers(server: LiveServer) -> None:
    response = httpx.get(f"{server.url}/health", timeout=5)
    assert (response.status_code, response.json()) == (200, {"status": "ok"})
