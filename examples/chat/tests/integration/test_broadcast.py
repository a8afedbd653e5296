"""Broadcast: chat messages reach every connected client — of this server, and of another instance,
through Valkey pub/sub."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from testlane import LiveServer, WsClient


def send(client: WsClient, content: str) -> str:
    conversation_id: str = client.command("load_conversation")["data"]["conversationId"]
    assert client.command("send_message", {"conversationId": conversation_id, "content": content})["success"]
    return conversation_id


def test_two_clients_both_see_the_conversation(connect: Callable[..., WsClient]) -> None:
    alice, bob = connect(), connect()
    conversation_id = send(alice, "Hello Bob")
    for client in (alice, bob):
        user, assistant = client.collect(2, {"type": "message", "conversationId": conversation_id})
        assert (user["message"]["role"], user["message"]["content"]) == ("user", "Hello Bob")
        assert (assistant["message"]["role"], assistant["message"]["content"]) == ("assistant", "Hello, world!")


def test_clients_of_another_instance_see_it_too(
    connect: Callable[..., WsClient], live_server: Any, make_app: Callable[[], FastAPI], server: LiveServer
) -> None:
    other: LiveServer = live_server(make_app())  # a second app instance: same database, same Valkey
    assert other.port != server.port
    alice, bob = connect(server), connect(other)
    conversation_id = send(alice, "Across instances")
    heard = bob.wait_for_message({"type": "message", "conversationId": conversation_id})
    assert heard["message"]["content"] == "Across instances"
    titled = bob.wait_for_message({"type": "conversation_titled"})
    assert titled == {"type": "conversation_titled", "conversationId": conversation_id, "title": "Greetings"}
    assert bob.command("load_conversation", {"conversationId": conversation_id})["data"]["title"] == "Greetings"
