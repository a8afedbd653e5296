"""Query correctness: SQL whose correctness is the risk, run against real Postgres.

A fake returns whatever rows the test hands it; only the database can say whether the WHERE clause
picks the right ones. Each test runs in its own database (pg_conn), migrated from migrations/.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from dispatch.queries import DuplicateQueueName, add_schedule, add_window, create_queue


def test_queue_names_are_unique_and_found_in_any_case(pg_conn: Any, queue_by_name: Any) -> None:
    queue_id = create_queue(pg_conn, "Billing", owner="ann")
    with pytest.raises(DuplicateQueueName):
        create_queue(pg_conn, "billing", owner="bob")
    found = queue_by_name(pg_conn, "BILLING")
    assert found is not None, "a differently-cased name must find the queue"
    assert (found.id, found.name, found.owner) == (queue_id, "Billing", "ann")
    assert queue_by_name(pg_conn, "shipping") is None


def test_an_owner_deletes_its_own_schedules_only(pg_conn: Any, delete_schedule: Any) -> None:
    queue_id = create_queue(pg_conn, "reports", owner="ann")
    anns = add_schedule(pg_conn, queue_id, "ann", "0 * * * *")
    bobs = add_schedule(pg_conn, queue_id, "bob", "30 * * * *")
    assert delete_schedule(pg_conn, bobs, owner="ann") is False, "ann deleted bob's schedule"
    assert delete_schedule(pg_conn, anns, owner="ann") is True
    left = pg_conn.execute("SELECT id FROM schedules ORDER BY id").fetchall()
    assert left == [(bobs,)]


def test_windows_overlap_half_open_including_open_ended_ones(pg_conn: Any, windows_overlapping: Any) -> None:
    queue_id = create_queue(pg_conn, "exports", owner="ann")
    other_queue = create_queue(pg_conn, "imports", owner="ann")
    t0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    start, end = t0, t0 + timedelta(hours=2)

    def window(begin: float, finish: float | None, queue: int = queue_id) -> int:
        ends = None if finish is None else t0 + timedelta(hours=finish)
        return add_window(pg_conn, queue, t0 + timedelta(hours=begin), ends)

    window(-2, 0)  # ends exactly at the start: touches, does not overlap
    straddles_start = window(-1, 1)
    inside = window(0.5, 1.5)
    straddles_end = window(1.5, 3)
    contains = window(-1, 3)
    window(2, 3)  # starts exactly at the end
    still_open = window(-5, None)
    window(0.5, 1.5, queue=other_queue)  # another queue's window
    window(3, None)  # opens after the range

    expected = [still_open, straddles_start, contains, inside, straddles_end]
    assert windows_overlapping(pg_conn, queue_id, start, end) == expected
    closed_only = [w for w in expected if w != still_open]
    assert windows_overlapping(pg_conn, queue_id, start, end, include_open=False) == closed_only
