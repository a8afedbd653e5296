"""Conversations through the API, verified in the database: lifecycle, cascade delete, the background title."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from chat.models import Message

from testlane import WsClient, seed
from tests.factories import ConversationFactory, MessageFactory


def test_a_conversation_s_whole_life(connect: Callable[..., WsClient], pg_conn: Any) -> None:
    client = connect()
    created = client.command("load_conversation")["data"]
    conversation_id = created["conversationId"]
    assert pg_conn.execute("SELECT title FROM conversations WHERE id = %s", (conversation_id,)).fetchone() == (
        "New chat",
    )

    client.command("send_message", {"conversationId": conversation_id, "content": "What is testlane?"})
    client.wait_for_message({"type": "ai_response_done"})

    loaded = client.command("load_conversation", {"conversationId": conversation_id})["data"]
    assert [(m["role"], m["content"]) for m in loaded["messages"]] == [
        ("user", "What is testlane?"),
        ("assistant", "Hello, world!"),
    ]
    listed = client.command("list_conversations")["data"]["conversations"]
    assert [(c["conversationId"], c["messageCount"]) for c in listed] == [(conversation_id, 2)]
    rows = pg_conn.execute(
        "SELECT role, content FROM messages WHERE conversation_id = %s ORDER BY id", (conversation_id,)
    )
    assert rows.fetchall() == [("user", "What is testlane?"), ("assistant", "Hello, world!")]

    deleted = client.command("delete_conversation", {"conversationId": conversation_id})
    assert deleted["data"] == {"conversationId": conversation_id, "deleted": True}
    assert client.wait_for_message({"type": "conversation_deleted"})["conversationId"] == conversation_id
    assert client.command("list_conversations")["data"]["conversations"] == []
    assert pg_conn.execute("SELECT count(*) FROM conversations").fetchone() == (0,)


def test_deleting_a_conversation_deletes_its_messages(
    connect: Callable[..., WsClient], db_session: Any, pg_conn: Any
) -> None:
    doomed, kept = seed(db_session, ConversationFactory, 2)
    seed(db_session, MessageFactory, 3, conversation_id=doomed.id)
    seed(db_session, MessageFactory, 2, conversation_id=kept.id)

    answer = connect().command("delete_conversation", {"conversationId": str(doomed.id)})
    assert answer["success"] is True
    counts = pg_conn.execute(
        "SELECT conversation_id, count(*) FROM messages GROUP BY conversation_id ORDER BY 1"
    ).fetchall()
    assert counts == [(kept.id, 2)]  # the cascade is the database's: ON DELETE CASCADE


def test_a_new_conversation_gets_its_title_in_the_background(connect: Callable[..., WsClient], pg_conn: Any) -> None:
    client = connect()
    conversation_id = client.command("load_conversation")["data"]["conversationId"]
    client.command("send_message", {"conversationId": conversation_id, "content": "Say hello"})
    titled = client.wait_for_message({"type": "conversation_titled"})
    assert titled == {"type": "conversation_titled", "conversationId": conversation_id, "title": "Greetings"}
    row = pg_conn.execute("SELECT title FROM conversations WHERE id = %s", (conversation_id,)).fetchone()
    assert row == ("Greetings",)


def test_list_shows_seeded_conversations_most_recent_first(connect: Callable[..., WsClient], db_session: Any) -> None:
    now = dt.datetime.now(dt.UTC)
    for hours, title in ((3, "Oldest"), (1, "Newest"), (2, "Middle")):
        seed(db_session, ConversationFactory, title=title, updated_at=now - dt.timedelta(hours=hours))
    listed = connect().command("list_conversations")["data"]["conversations"]
    assert [c["title"] for c in listed] == ["Newest", "Middle", "Oldest"]


def test_the_app_runs_on_the_test_s_clock(connect: Callable[..., WsClient], pg_conn: Any, frozen_time: Any) -> None:
    created = connect().command("load_conversation")["data"]  # the app runs in a thread of this process
    assert created["createdAt"] == "2024-01-01T12:00:00+00:00"
    stored = pg_conn.execute("SELECT created_at FROM conversations").fetchone()[0]
    assert stored == dt.datetime(2024, 1, 1, 12, tzinfo=dt.UTC)


def test_the_database_refuses_other_roles(db_session: Any) -> None:
    (conversation,) = seed(db_session, ConversationFactory)
    db_session.add(Message(conversation_id=conversation.id, role="system", content="You are a bot"))
    with pytest.raises(Exception, match="messages_role_check"):
        db_session.commit()
