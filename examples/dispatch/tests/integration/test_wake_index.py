"""Seam: ON CONFLICT under concurrency, and the wake-index lookup (query correctness).

Three writers register the same (wait, ref) at once. With ``ON CONFLICT DO NOTHING`` one inserts,
the others wait for it and do nothing. A check-then-insert fails one of them on the primary key.
"""

from __future__ import annotations

from typing import Any

from dispatch.wake_index import add_wait, remove_wait, waits_for

from testlane.seams import assert_exactly_one, assert_no_errors, lock_gate, race, seam


@seam(repeat=5)
def test_concurrent_inserts_of_one_wait_keep_one_row(pg_database: Any, add_wait: Any, seam_iteration: Any) -> None:
    wait_id, ref = f"wait-{seam_iteration.number}", "order:42"
    # The gate inserts the key without committing: the writers queue on it, then race for real.
    with lock_gate(pg_database, "INSERT INTO wake_index (wait_id, ref) VALUES (%s, %s)", [wait_id, ref]) as gate:
        result = race(
            3,
            lambda conn: add_wait(conn, wait_id, ref),
            connect=pg_database,
            during=lambda: gate.open(when_waiting=3),
        )
    assert_no_errors(result)
    assert_exactly_one(result, what="inserted the row")
    with pg_database.connect() as conn:
        rows = conn.execute("SELECT count(*) FROM wake_index WHERE wait_id = %s AND ref = %s", (wait_id, ref))
        assert rows.fetchone() == (1,)
        assert wait_id in waits_for(conn, [ref, "order:43"])  # the lookup finds it


def test_the_lookup_finds_each_wait_on_any_changed_ref_once(pg_conn: Any) -> None:
    for wait_id, ref in [("w1", "order:1"), ("w1", "customer:9"), ("w2", "order:2"), ("w3", "customer:9")]:
        assert add_wait(pg_conn, wait_id, ref)
    assert not add_wait(pg_conn, "w1", "order:1")  # already there: no error, no duplicate
    assert waits_for(pg_conn, ["order:1", "customer:9"]) == ["w1", "w3"]
    assert waits_for(pg_conn, ["order:3"]) == []
    assert remove_wait(pg_conn, "w1") == 2
    assert waits_for(pg_conn, ["order:1", "customer:9"]) == ["w3"]
