"""The command handlers with fakes: an in-memory store, a recording broadcaster and client, a fake AI stream."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from chat.service import Background, ChatService

from tests.fakes import FakeProvider, MemoryStore, RecordingBroadcaster, RecordingClient


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def broadcaster() -> RecordingBroadcaster:
    return RecordingBroadcaster()


@pytest.fixture
def provider() -> FakeProvider:
    return FakeProvider()


@pytest.fixture
def service(store: MemoryStore, broadcaster: RecordingBroadcaster, provider: FakeProvider) -> ChatService:
    return ChatService(store, broadcaster, provider, Background())


@pytest.fixture
def client() -> RecordingClient:
    return RecordingClient()


async def command(service: ChatService, client: RecordingClient, name: str, payload: Any = None) -> dict[str, Any]:
    """Send one command, let the work it started finish, and return its answer."""
    command_id = uuid.uuid4().hex
    await service.handle(client, json.dumps({"id": command_id, "command": name, "payload": payload or {}}))
    await service.background.drain()
    (answer,) = [event for event in client.events if event.get("id") == command_id]
    return answer


async def new_conversation(service: ChatService, client: RecordingClient) -> str:
    answer = await command(service, client, "load_conversation")
    return str(answer["data"]["conversationId"])


async def test_load_without_an_id_creates_a_conversation(service: ChatService, client: RecordingClient) -> None:
    answer = await command(service, client, "load_conversation")
    assert answer["success"] is True
    data = answer["data"]
    assert (data["title"], data["messages"], data["created"]) == ("New chat", [], True)
    uuid.UUID(data["conversationId"])


async def test_load_with_an_id_loads_it(service: ChatService, client: RecordingClient) -> None:
    conversation_id = await new_conversation(service, client)
    answer = await command(service, client, "load_conversation", {"conversationId": conversation_id})
    assert answer["data"]["conversationId"] == conversation_id
    assert answer["data"]["created"] is False


async def test_loading_a_missing_conversation_fails_cleanly(service: ChatService, client: RecordingClient) -> None:
    missing = str(uuid.uuid4())
    answer = await command(service, client, "load_conversation", {"conversationId": missing})
    assert answer == {"id": answer["id"], "success": False, "error": f"Conversation {missing} not found"}


async def test_send_message_answers_then_streams_the_reply_then_stores_it(
    service: ChatService, client: RecordingClient, store: MemoryStore, broadcaster: RecordingBroadcaster
) -> None:
    conversation_id = await new_conversation(service, client)
    client.events.clear()
    answer = await command(service, client, "send_message", {"conversationId": conversation_id, "content": "Hi"})

    assert answer["success"] is True
    assert client.events[0] is answer  # the answer comes first; the reply is streamed after it
    chunks = client.of_type("ai_response_chunk")
    assert [c["index"] for c in chunks] == [0, 1, 2, 3]
    assert "".join(c["delta"] for c in chunks) == "Hello, world!"
    (done,) = client.of_type("ai_response_done")
    assert done["content"] == "Hello, world!"

    stored = store.conversations[uuid.UUID(conversation_id)].messages
    assert [(m.role, m.content) for m in stored] == [("user", "Hi"), ("assistant", "Hello, world!")]
    messages = [e["message"] for e in broadcaster.published if e["type"] == "message"]
    assert [(m["role"], m["content"]) for m in messages] == [("user", "Hi"), ("assistant", "Hello, world!")]


async def test_the_provider_sees_the_whole_conversation(
    service: ChatService, client: RecordingClient, provider: FakeProvider
) -> None:
    conversation_id = await new_conversation(service, client)
    await command(service, client, "send_message", {"conversationId": conversation_id, "content": "One"})
    await command(service, client, "send_message", {"conversationId": conversation_id, "content": "Two"})
    assert [(t.role, t.content) for t in provider.histories[-1]] == [
        ("user", "One"),
        ("assistant", "Hello, world!"),
        ("user", "Two"),
    ]
    assert all(stream.closed for stream in provider.streams)


async def test_the_first_message_titles_the_conversation_once(
    service: ChatService,
    client: RecordingClient,
    provider: FakeProvider,
    store: MemoryStore,
    broadcaster: RecordingBroadcaster,
) -> None:
    conversation_id = await new_conversation(service, client)
    await command(service, client, "send_message", {"conversationId": conversation_id, "content": "Hello there"})
    await command(service, client, "send_message", {"conversationId": conversation_id, "content": "Again"})
    assert provider.titled == ["Hello there"]
    assert store.conversations[uuid.UUID(conversation_id)].title == "Greetings"
    titled = [e for e in broadcaster.published if e["type"] == "conversation_titled"]
    assert titled == [{"type": "conversation_titled", "conversationId": conversation_id, "title": "Greetings"}]


@pytest.mark.parametrize("provider", [FakeProvider(error_after=2)], ids=["error-after-2-chunks"])
async def test_a_reply_that_fails_midway_is_reported_and_not_stored(
    service: ChatService, client: RecordingClient, provider: FakeProvider, store: MemoryStore
) -> None:
    conversation_id = await new_conversation(service, client)
    await command(service, client, "send_message", {"conversationId": conversation_id, "content": "Hi"})
    assert [c["delta"] for c in client.of_type("ai_response_chunk")] == ["Hello", ", "]
    (error,) = client.of_type("ai_response_error")
    assert error["message"] == "The AI reply failed: fake stream failed after 2 chunks"
    assert client.of_type("ai_response_done") == []
    assert [m.role for m in store.conversations[uuid.UUID(conversation_id)].messages] == ["user"]
    assert provider.streams[0].closed


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"content": "Hi"}, "'conversationId' is required"),
        ({"conversationId": "nope", "content": "Hi"}, "'conversationId' is not a valid id: 'nope'"),
        ({"conversationId": str(uuid.UUID(int=1)), "content": "   "}, "'content' must be a non-empty string"),
        ({"conversationId": str(uuid.UUID(int=1)), "content": "Hi"}, f"Conversation {uuid.UUID(int=1)} not found"),
    ],
)
async def test_send_message_refuses_bad_payloads(
    service: ChatService, client: RecordingClient, payload: dict[str, Any], error: str
) -> None:
    answer = await command(service, client, "send_message", payload)
    assert (answer["success"], answer["error"]) == (False, error)


async def test_delete_removes_the_conversation_and_tells_everyone(
    service: ChatService, client: RecordingClient, store: MemoryStore, broadcaster: RecordingBroadcaster
) -> None:
    conversation_id = await new_conversation(service, client)
    answer = await command(service, client, "delete_conversation", {"conversationId": conversation_id})
    assert answer["data"] == {"conversationId": conversation_id, "deleted": True}
    assert store.conversations == {}
    assert broadcaster.published[-1] == {"type": "conversation_deleted", "conversationId": conversation_id}
    again = await command(service, client, "delete_conversation", {"conversationId": conversation_id})
    assert again["error"] == f"Conversation {conversation_id} not found"


async def test_list_puts_the_most_recently_active_first(service: ChatService, client: RecordingClient) -> None:
    first = await new_conversation(service, client)
    second = await new_conversation(service, client)
    await command(service, client, "send_message", {"conversationId": first, "content": "bump"})
    answer = await command(service, client, "list_conversations")
    listed = [(c["conversationId"], c["messageCount"]) for c in answer["data"]["conversations"]]
    assert listed == [(first, 2), (second, 0)]


async def test_unknown_commands_and_invalid_frames_fail_cleanly(service: ChatService, client: RecordingClient) -> None:
    answer = await command(service, client, "fly")
    assert answer["success"] is False
    assert answer["error"].startswith("Unknown command 'fly' (known: delete_conversation, list_conversations")
    await service.handle(client, "{not json")
    assert client.events[-1]["type"] == "error"
    assert client.events[-1]["message"].startswith("Invalid JSON: ")


async def test_an_unexpected_failure_is_an_internal_error(
    service: ChatService, client: RecordingClient, store: MemoryStore, spy: Any
) -> None:
    spy.stub(store, "list_conversations", side_effect=RuntimeError("database went away"))
    answer = await command(service, client, "list_conversations")
    assert (answer["success"], answer["error"]) == (False, "Internal error")  # no internals leak to clients


async def test_messages_are_stored_through_the_store(
    service: ChatService, client: RecordingClient, store: MemoryStore, spy: Any
) -> None:
    add_message = spy(store, "add_message")  # calls through: the fake store still stores
    conversation_id = await new_conversation(service, client)
    await command(service, client, "send_message", {"conversationId": conversation_id, "content": "Hi"})
    assert [call.args[1:] for call in add_message.await_args_list] == [
        ("user", "Hi"),
        ("assistant", "Hello, world!"),
    ]
    assert [m.role for m in add_message.returned] == ["user", "assistant"]


async def test_messages_carry_the_clock_s_time(service: ChatService, client: RecordingClient, frozen_time: Any) -> None:
    conversation_id = await new_conversation(service, client)
    answer = await command(service, client, "load_conversation", {"conversationId": conversation_id})
    assert answer["data"]["createdAt"] == "2024-01-01T12:00:00+00:00"
    frozen_time.shift(90)
    await command(service, client, "send_message", {"conversationId": conversation_id, "content": "Hi"})
    (done,) = client.of_type("ai_response_done")
    loaded = await command(service, client, "load_conversation", {"conversationId": conversation_id})
    assert [m["createdAt"] for m in loaded["data"]["messages"]] == ["2024-01-01T12:01:30+00:00"] * 2
    assert done["messageId"] == loaded["data"]["messages"][1]["id"]
