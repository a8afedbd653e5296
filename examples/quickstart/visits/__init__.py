"""A page-visit counter: visits are rows in Postgres, the per-page count is cached in Redis/Valkey."""

from __future__ import annotations

from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS visits (
    id bigserial PRIMARY KEY,
    page text NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
)
"""


def record_visit(conn: Any, cache: Any, page: str) -> int:
    """Store a visit and return the page's visit count, keeping the cache in step."""
    conn.execute("INSERT INTO visits (page) VALUES (%s)", (page,))
    count = conn.execute("SELECT count(*) FROM visits WHERE page = %s", (page,)).fetchone()[0]
    cache.set(f"visits:{page}", count)
    return int(count)


def cached_count(cache: Any, page: str) -> int | None:
    value = cache.get(f"visits:{page}")
    return None if value is None else int(value)
