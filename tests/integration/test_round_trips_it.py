"""Round trips per test, on a real server (issue 19: the per-test cost).

Each round trip to the server is a wait of pytest's thread (transaction isolation) or a wake-up of the pool's
worker while the next test runs on the same cores (database isolation), so the per-test work is held to a
fixed number of them: one to end a test in transaction isolation, two to reset a used database.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from testlane.databases.transaction import SavepointConnection, read_sequences
from tests.integration.test_transaction_isolation_it import MIGRATION  # sequences in every state


@contextlib.contextmanager
def counted(conn: psycopg.Connection[Any]) -> Iterator[list[str]]:
    """The queries ``conn`` sends in the block (each a round trip: none is pipelined), from libpq's trace of
    the protocol; the list is filled when the block ends."""
    trips: list[str] = []
    with tempfile.TemporaryFile("w+") as trace:
        conn.pgconn.trace(trace.fileno())
        try:
            yield trips
        finally:
            conn.pgconn.untrace()
            trace.seek(0)
            # A frontend message: "<timestamp>\tF\t<length>\tQuery\t..." (simple query) or "...\tParse\t...".
            trips += [line for line in trace if "\tF\t" in line and ("\tQuery\t" in line or "\tParse\t" in line)]


@pytest.fixture
def database(postgres) -> Iterator[str]:
    name = f"round_trips_{os.getpid()}"
    with postgres.connect(autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    with postgres.connect(name, autocommit=True) as conn:
        conn.execute(MIGRATION)
    yield name
    with postgres.connect(autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_a_transaction_test_that_used_sequences_ends_in_one_round_trip(postgres, database: str) -> None:
    with SavepointConnection.connect(postgres.dsn(database), autocommit=False) as conn:
        sequences = read_sequences(conn)
        conn.rollback()
        conn.prepare(sequences)
        for _ in range(3):
            conn.begin_test()
            assert conn.execute("INSERT INTO items (name) VALUES ('a') RETURNING id").fetchone() == (1,)
            assert conn.execute("INSERT INTO notes (body) VALUES ('a') RETURNING id").fetchone() == (1,)
            assert conn.execute("INSERT INTO countries (code) VALUES ('it') RETURNING id").fetchone() == (3,)
            assert conn.execute("SELECT nextval('tickets'), nextval('invoices')").fetchone() == (1, 100)
            conn.commit()
            with counted(conn) as trips:
                assert conn.end_test() is None
            assert len(trips) == 1, "the rollback, the checks and the sequences' restore: one round trip"
        conn.begin_test()
        # Every sequence is back in the template's state, is_called included.
        state = conn.execute(
            "SELECT last_value, is_called FROM items_id_seq UNION ALL SELECT last_value, is_called FROM notes_id_seq"
            " UNION ALL SELECT last_value, is_called FROM countries_id_seq UNION ALL"
            " SELECT last_value, is_called FROM tickets UNION ALL SELECT last_value, is_called FROM invoices"
        ).fetchall()
        assert state == [(1, False), (1, False), (2, True), (1, False), (100, False)]
        conn.end_test()


def test_a_used_database_is_reset_in_three_round_trips(postgres, database: str) -> None:
    """Sanitize (which flushes the test's statistics), read the counters, then restore and record the new
    baseline in one round trip: the baseline is what a full read of the counters gives."""
    import time

    from testlane.databases.pool import Lease
    from testlane.databases.postgres_engine import PostgresDatabaseEngine
    from testlane.databases.reset import Counters, read_counters

    with postgres.connect(autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {database} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false")
    engine = PostgresDatabaseEngine(postgres)
    clone = f"{database}_c"
    with postgres.connect(autocommit=True) as admin:
        lease: Lease[psycopg.Connection] | None = engine.clone(admin, database, clone)
    try:
        for round_ in range(3):
            assert lease is not None and lease.conn is not None
            conn = lease.conn
            conn.execute("INSERT INTO items (name) VALUES ('a'); INSERT INTO notes (body) VALUES ('b')")
            conn.execute("INSERT INTO countries (code) VALUES ('it')")  # a seeded table
            conn.commit()
            lease.released_at = time.monotonic()
            with counted(conn) as trips:
                lease = engine.reset(lease, stopping=lambda: False)
            assert lease is not None and lease.reused, "the database was not reset"
            assert len(trips) == 3, f"round {round_}: {len(trips)} round trips"
            assert isinstance(lease.baseline, Counters)
            assert lease.conn is not None
            full = read_counters(lease.conn)
            lease.conn.rollback()
            kept = lease.baseline
            assert (full.tables, full.sequences, full.database) == (kept.tables, kept.sequences, kept.database)
            assert full.sequence_sum == kept.sequence_sum
            rows = lease.conn.execute(
                "SELECT (SELECT count(*) FROM items), (SELECT count(*) FROM notes), (SELECT count(*) FROM countries)"
            ).fetchone()
            assert rows == (0, 0, 2)
            lease.conn.rollback()
    finally:
        if lease is not None and lease.conn is not None:
            lease.conn.close()
        with postgres.connect(autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {clone} WITH (FORCE)")
            admin.execute(f"ALTER DATABASE {database} WITH IS_TEMPLATE false ALLOW_CONNECTIONS true")
