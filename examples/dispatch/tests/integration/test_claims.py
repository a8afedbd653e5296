"""Seam: the atomic claim. Two dispatchers claim one job at the same moment: exactly one gets it.

A fake store serialises the two calls, so any claim looks atomic. On Postgres, the lock gate makes
both claimers reach the contended row together, every run: a check-then-act claim (SELECT, then
DELETE) then hands the job to both — which the test reports with what each claimer got.
"""

from __future__ import annotations

from typing import Any

from dispatch.jobs import due, schedule

from testlane.seams import assert_exactly_one, assert_no_errors, lock_gate, race, seam


@seam(repeat=5)
def test_two_concurrent_claims_of_one_job_have_one_winner(pg_database: Any, claim: Any, seam_iteration: Any) -> None:
    job_id = f"job-{seam_iteration.number}"
    with pg_database.connect(autocommit=True) as conn:
        schedule(conn, job_id, "billing", {"invoice": 7})
    # The gate holds the row's lock until both claimers queue on it, then lets them go together.
    with lock_gate(pg_database, "SELECT 1 FROM pending_jobs WHERE id = %s FOR UPDATE", [job_id]) as gate:
        result = race(
            2,
            lambda conn: claim(conn, job_id),  # each claimer on its own connection
            connect=pg_database,
            during=lambda: gate.open(when_waiting=2),
        )
    assert_no_errors(result)
    winner = assert_exactly_one(result, what="got the job")
    assert winner.value.id == job_id
    assert winner.value.payload == {"invoice": 7}
    with pg_database.connect() as conn:
        assert due(conn, "billing") == []
