"""Settings: everything the app needs from outside, built once and passed to ``create_app``.

Tests build them from the test's own database and Valkey database (the settings-factory way of
giving an app its test services); a deployment reads the environment (:meth:`Settings.from_env`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    """``database_url``: Postgres (``postgresql://`` or ``postgresql+asyncpg://``); ``redis_url``: Valkey/Redis."""

    database_url: str
    redis_url: str
    channel_prefix: str = ""
    default_title: str = "New chat"
    openai_api_key: str | None = None
    openai_base_url: str = "https://api.openai.com/v1"
    openai_model: str = "gpt-4o-mini"

    @property
    def async_database_url(self) -> str:
        """The database URL for SQLAlchemy's asyncio engine (asyncpg driver)."""
        for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
            if self.database_url.startswith(prefix):
                return "postgresql+asyncpg://" + self.database_url[len(prefix) :]
        return self.database_url

    @property
    def channel(self) -> str:
        """The pub/sub channel of this deployment: ``<channel_prefix>chat-events``.

        Pub/sub ignores Redis database numbers: every client of a server shares one channel
        namespace, so apps that share a server (parallel tests, staging beside dev) each need a prefix
        of their own. Tests give the test's (testlane's ``redis_channel_prefix``), as they give its
        ``redis_url``; a deployment sets ``REDIS_CHANNEL_PREFIX``.
        """
        return f"{self.channel_prefix}chat-events"

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        """``DATABASE_URL``, ``REDIS_URL`` (+ ``REDIS_CHANNEL_PREFIX``) and, for real AI replies,
        ``OPENAI_API_KEY`` (+ ``OPENAI_MODEL``)."""
        return cls(
            database_url=env.get("DATABASE_URL", "postgresql://localhost/chat"),
            redis_url=env.get("REDIS_URL", "redis://localhost:6379/0"),
            channel_prefix=env.get("REDIS_CHANNEL_PREFIX", ""),
            openai_api_key=env.get("OPENAI_API_KEY") or None,
            openai_model=env.get("OPENAI_MODEL", cls.openai_model),
        )
