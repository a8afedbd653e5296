"""The AI reply streamed as ``ai_response_chunk`` events from the (fake) provider, then stored."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from testlane import WsClient
from tests.fakes import FakeProvider


def test_the_reply_streams_in_order_then_is_stored(connect: Callable[..., WsClient], pg_conn: Any) -> None:
    client = connect()
    conversation_id = client.command("load_conversation")["data"]["conversationId"]
    answer = client.command("send_message", {"conversationId": conversation_id, "content": "Hi"})
    assert answer["success"] is True

    chunks = client.collect(4, {"type": "ai_response_chunk"})
    assert [c["index"] for c in chunks] == [0, 1, 2, 3]
    assert "".join(c["delta"] for c in chunks) == "Hello, world!"
    done = client.wait_for_message({"type": "ai_response_done"})
    assert done["content"] == "Hello, world!"

    rows = pg_conn.execute(
        "SELECT id, role, content FROM messages WHERE conversation_id = %s ORDER BY id", (conversation_id,)
    ).fetchall()
    assert [(role, content) for _, role, content in rows] == [("user", "Hi"), ("assistant", "Hello, world!")]
    assert rows[1][0] == done["messageId"]


@pytest.mark.parametrize("provider", [FakeProvider(delay=0.02, error_after=2)], ids=["fails-after-2-chunks"])
def test_a_reply_that_fails_midway_is_reported_and_not_stored(
    connect: Callable[..., WsClient], pg_conn: Any, provider: FakeProvider
) -> None:
    client = connect()
    conversation_id = client.command("load_conversation")["data"]["conversationId"]
    client.command("send_message", {"conversationId": conversation_id, "content": "Hi"})
    error = client.wait_for_message({"type": "ai_response_error"})
    assert error["message"] == "The AI reply failed: fake stream failed after 2 chunks"
    assert [c["delta"] for c in client.collect(2, {"type": "ai_response_chunk"})] == ["Hello", ", "]
    roles = pg_conn.execute("SELECT role FROM messages WHERE conversation_id = %s", (conversation_id,)).fetchall()
    assert roles == [("user",)]
