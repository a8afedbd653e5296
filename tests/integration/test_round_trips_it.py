"""Round trips per test, on a real server (issue 19: the per-test cost).

Each round trip to the server is a wait of pytest's thread (transaction isolation) or a wake-up of the pool's
worker while the next test runs on the same cores (database isolation), so the per-test work is held to a
fixed number of them: one to end a test in transaction isolation, two to reset a used database.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from testlane.databases.transaction import SavepointConnection, read_sequences

# Sequences in every state a template can leave them (as in test_transaction_isolation_it): never used,
# used by the seed, set explicitly and not called.
MIGRATION = """
CREATE TABLE items (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL);
CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL);
CREATE TABLE countries (id bigserial PRIMARY KEY, code text UNIQUE NOT NULL);
INSERT INTO countries (code) VALUES ('fr'), ('de');
CREATE SEQUENCE tickets;
CREATE SEQUENCE invoices;
SELECT setval('invoices', 100, false);
"""


@contextlib.contextmanager
def counted(conn: psycopg.Connection[Any]) -> Iterator[list[int]]:
    """The round trips ``conn`` makes in the block (each ``wait`` of psycopg's), as a list that grows."""
    trips: list[int] = []
    original: Callable[..., Any] = conn.wait

    def wait(*args: Any, **kwargs: Any) -> Any:
        trips.append(1)
        return original(*args, **kwargs)

    conn.wait = wait  # type: ignore[method-assign]
    try:
        yield trips
    finally:
        del conn.wait


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
