"""The wake index: which waits reference which entities, so a change wakes exactly its waits.

Several writers may register the same (wait, ref) at once (a retry, two events about one entity).
:func:`add_wait` uses ``INSERT ... ON CONFLICT DO NOTHING``: under concurrency one insert wins, the
others wait for it and then do nothing — no error, no duplicate.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def add_wait(conn: Any, wait_id: str, ref: str) -> bool:
    """Register that ``wait_id`` waits on ``ref``; True if this call added the row."""
    cur = conn.execute(
        "INSERT INTO wake_index (wait_id, ref) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        (wait_id, ref),
    )
    return bool(cur.rowcount == 1)


def waits_for(conn: Any, refs: Iterable[str]) -> list[str]:
    """The waits referencing any of ``refs`` (the changed entities), each once, sorted."""
    rows = conn.execute(
        "SELECT DISTINCT wait_id FROM wake_index WHERE ref = ANY(%s) ORDER BY wait_id",
        (list(refs),),
    ).fetchall()
    return [row[0] for row in rows]


def remove_wait(conn: Any, wait_id: str) -> int:
    """Forget a wait (it woke or was cancelled); the number of refs removed."""
    return int(conn.execute("DELETE FROM wake_index WHERE wait_id = %s", (wait_id,)).rowcount)
