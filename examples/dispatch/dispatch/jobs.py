"""Pending jobs: scheduled as rows, dispatched by claiming them.

:func:`claim` is one statement, ``DELETE ... RETURNING``: the row lock it takes makes a second,
concurrent claim of the same job wait, then find the row gone and return nothing. Exactly one
claimer gets the job, without ``SELECT ... FOR UPDATE`` or an explicit transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb


@dataclass(frozen=True)
class Job:
    """A claimed job."""

    id: str
    queue: str
    payload: dict[str, Any] = field(default_factory=dict)


def schedule(
    conn: Any, job_id: str, queue: str, payload: dict[str, Any] | None = None, due_at: datetime | None = None
) -> None:
    """Add a job to ``queue``, due at ``due_at`` (default: now)."""
    conn.execute(
        "INSERT INTO pending_jobs (id, queue, payload, due_at) VALUES (%s, %s, %s, coalesce(%s, now()))",
        (job_id, queue, Jsonb(payload or {}), due_at),
    )


def due(conn: Any, queue: str, *, limit: int = 100) -> list[str]:
    """Ids of the jobs of ``queue`` due now, oldest first."""
    rows = conn.execute(
        "SELECT id FROM pending_jobs WHERE queue = %s AND due_at <= now() ORDER BY due_at, id LIMIT %s",
        (queue, limit),
    ).fetchall()
    return [row[0] for row in rows]


def claim(conn: Any, job_id: str) -> Job | None:
    """Take the job: it is this caller's, or ``None`` if someone else took it first."""
    row = conn.execute(
        "DELETE FROM pending_jobs WHERE id = %s RETURNING id, queue, payload",
        (job_id,),
    ).fetchone()
    return None if row is None else Job(*row)


class JobStore:
    """The pending jobs of one connection, as the dispatcher uses them."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def due(self, queue: str) -> list[str]:
        return due(self.conn, queue)

    def claim(self, job_id: str) -> Job | None:
        return claim(self.conn, job_id)
