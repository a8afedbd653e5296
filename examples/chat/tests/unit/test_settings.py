"""Settings: the database URL for the async engine, and the pub/sub channel in its namespace."""

from __future__ import annotations

from chat.settings import Settings


def test_a_libpq_url_gets_the_asyncpg_driver() -> None:
    settings = Settings(database_url="postgresql://u@127.0.0.1:5432/tl_db", redis_url="redis://h:1/0")
    assert settings.async_database_url == "postgresql+asyncpg://u@127.0.0.1:5432/tl_db"


def test_an_explicit_driver_is_kept() -> None:
    url = "postgresql+asyncpg://u@h/db"
    assert Settings(database_url=url, redis_url="redis://h:1/0").async_database_url == url


def test_the_channel_carries_the_prefix() -> None:
    def channel(prefix: str) -> str:
        return Settings(database_url="postgresql://h/db", redis_url="redis://h:1/3", channel_prefix=prefix).channel

    assert channel("") == "chat-events"
    assert channel("tl:17:3f9a0c2e:") == "tl:17:3f9a0c2e:chat-events"  # a test's (redis_channel_prefix)
    assert channel("tl:17:3f9a0c2e:") != channel("tl:18:77aa01bc:")


def test_settings_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://db/chat",
            "REDIS_URL": "redis://cache:6379/2",
            "REDIS_CHANNEL_PREFIX": "staging:",
            "OPENAI_API_KEY": "sk-1",
        }
    )
    assert (settings.database_url, settings.redis_url, settings.channel, settings.openai_api_key) == (
        "postgresql://db/chat",
        "redis://cache:6379/2",
        "staging:chat-events",
        "sk-1",
    )
