"""Model factories (polyfactory): rows with realistic values, any field overridable.

``seed(db_session, ConversationFactory, 3, title="Trip")`` from testlane writes them through the
test's real session (tests/integration/test_conversations.py).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from chat.models import Conversation, Message, utcnow
from polyfactory import Use
from polyfactory.factories.sqlalchemy_factory import SQLAlchemyFactory


class ConversationFactory(SQLAlchemyFactory[Conversation]):
    """A conversation with a title of a few words (no messages: seed those with MessageFactory)."""

    __set_relationships__ = False

    title = Use(lambda: ConversationFactory.__faker__.sentence(nb_words=3).rstrip("."))
    created_at = Use(utcnow)
    updated_at = Use(utcnow)


class MessageFactory(SQLAlchemyFactory[Message]):
    """A message; give it ``conversation_id=``. Its role is user or assistant, at random."""

    __set_relationships__ = False
    __set_foreign_keys__ = False
    __set_primary_key__ = False

    role = Use(lambda: MessageFactory.__random__.choice(["user", "assistant"]))
    content = Use(lambda: MessageFactory.__faker__.sentence())
    created_at = Use(utcnow)


def hours_ago(hours: float) -> datetime:
    return datetime.now(UTC) - timedelta(hours=hours)
