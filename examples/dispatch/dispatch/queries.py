"""Queries whose correctness is the risk: a fake cannot tell whether the SQL selects the right rows.

* :func:`queue_by_name` — case-insensitive, matching the unique index on ``lower(name)``;
* :func:`delete_schedule` — scoped by owner, so one owner cannot delete another's schedule;
* :func:`windows_overlapping` — the overlap predicate for half-open windows, open-ended ones included.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg


class DuplicateQueueName(Exception):
    """A queue with that name, in any case, exists already."""


@dataclass(frozen=True)
class Queue:
    id: int
    name: str
    owner: str


def create_queue(conn: Any, name: str, owner: str) -> int:
    """A new queue's id; :class:`DuplicateQueueName` if the name is taken in any case."""
    try:
        with conn.transaction():
            row = conn.execute("INSERT INTO queues (name, owner) VALUES (%s, %s) RETURNING id", (name, owner))
            return int(row.fetchone()[0])
    except psycopg.errors.UniqueViolation:
        raise DuplicateQueueName(name) from None


def queue_by_name(conn: Any, name: str) -> Queue | None:
    """The queue called ``name``, in any case."""
    row = conn.execute("SELECT id, name, owner FROM queues WHERE lower(name) = lower(%s)", (name,)).fetchone()
    return None if row is None else Queue(*row)


def add_schedule(conn: Any, queue_id: int, owner: str, cron: str) -> int:
    row = conn.execute(
        "INSERT INTO schedules (queue_id, owner, cron) VALUES (%s, %s, %s) RETURNING id", (queue_id, owner, cron)
    ).fetchone()
    return int(row[0])


def delete_schedule(conn: Any, schedule_id: int, owner: str) -> bool:
    """Delete the schedule if ``owner`` owns it; True if it was deleted."""
    cur = conn.execute("DELETE FROM schedules WHERE id = %s AND owner = %s", (schedule_id, owner))
    return bool(cur.rowcount == 1)


def add_window(conn: Any, queue_id: int, starts_at: datetime, ends_at: datetime | None) -> int:
    row = conn.execute(
        "INSERT INTO maintenance_windows (queue_id, starts_at, ends_at) VALUES (%s, %s, %s) RETURNING id",
        (queue_id, starts_at, ends_at),
    ).fetchone()
    return int(row[0])


def windows_overlapping(
    conn: Any, queue_id: int, start: datetime, end: datetime, *, include_open: bool = True
) -> list[int]:
    """Windows of the queue overlapping [start, end), by start; open-ended ones only with ``include_open``.

    Half-open intervals overlap when each starts before the other ends: a window ending exactly at
    ``start`` (or starting exactly at ``end``) does not overlap.
    """
    rows = conn.execute(
        """
        SELECT id FROM maintenance_windows
        WHERE queue_id = %(queue)s
          AND starts_at < %(end)s
          AND (ends_at > %(start)s OR (ends_at IS NULL AND %(include_open)s))
        ORDER BY starts_at, id
        """,
        {"queue": queue_id, "start": start, "end": end, "include_open": include_open},
    ).fetchall()
    return [row[0] for row in rows]
