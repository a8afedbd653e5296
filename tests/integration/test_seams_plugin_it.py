"""Seam tests in pytest with real databases: fresh mode gives each iteration a fresh database, and a
seam test in transaction isolation (one connection: no real concurrency) is refused with the fix."""

from __future__ import annotations

import pytest

from tests.integration.test_isolation_it import make_project, run

pytestmark = [pytest.mark.usefixtures("inner_env"), pytest.mark.timeout(300)]


def test_fresh_iterations_get_fresh_databases_and_transaction_isolation_is_refused(pytester: pytest.Pytester) -> None:
    make_project(pytester)
    pytester.makepyfile(
        test_seams_it="""
        import pytest
        from testlane.seams import assert_exactly_one, race, seam

        @seam(repeat=3, fresh=True)
        def test_fresh_database_per_iteration(pg_database, seam_iteration):
            with pg_database.connect(autocommit=True) as conn:
                assert conn.execute("SELECT count(*) FROM items").fetchone() == (0,)
                conn.execute("INSERT INTO items (name) VALUES (%s)", (str(seam_iteration),))

        @seam(repeat=3)
        def test_looping_iterations_share_the_database(pg_database, seam_iteration):
            with pg_database.connect(autocommit=True) as conn:
                conn.execute("INSERT INTO items (name) VALUES (%s)", (str(seam_iteration),))
                assert conn.execute("SELECT count(*) FROM items").fetchone() == (seam_iteration.number,)

        @seam(repeat=2)
        def test_racers_each_have_a_connection(pg_database):
            result = race(2, lambda conn: conn.info.backend_pid, setup=lambda i: pg_database.connect())
            assert len(set(result.results)) == 2

        @pytest.mark.isolation("transaction")
        @seam(repeat=2)
        def test_transaction_isolation_cannot_race(pg_conn):
            pass
        """
    )
    result = run(pytester, "-v")
    result.assert_outcomes(passed=5, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*test_transaction_isolation_cannot_race is a seam test but its database uses transaction isolation*"
            ' Mark it @pytest.mark.isolation("database")*'
        ]
    )
