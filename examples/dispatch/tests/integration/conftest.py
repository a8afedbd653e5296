"""Fixtures for the seam tests: stream workers, each on its own Redis connection; JetStream job workers,
each on its own NATS and Postgres connections."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import psycopg
import pytest


@pytest.fixture
def make_worker(worker_class: Any, redis_db: Any) -> Iterator[Callable[..., Any]]:
    """``make_worker(stream, name, handler, **options)``: a worker of the group with a client of its own.

    Its client is named ``<stream>:<name>`` (visible in CLIENT LIST) and closed after the test.
    """
    clients: list[Any] = []

    def make(stream: str, name: str, handler: Callable[..., object], **options: Any) -> Any:
        client = redis_db.client(client_name=f"{stream}:{name}")
        clients.append(client)
        return worker_class(client, stream, name, handler, **options)

    yield make
    for client in clients:
        client.close()


@pytest.fixture
async def make_job_worker(
    job_worker: Any, jetstream: Any, pg_database: Any
) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """``await make_job_worker(name, queue, **options)``: a JetStream job worker (the test's implementation)
    with a NATS connection to the test's account and a Postgres connection to the test's database of its own;
    both closed after the test."""
    opened: list[tuple[Any, Any]] = []

    async def make(name: str, queue: Any, **options: Any) -> Any:
        nc = await jetstream.connect()
        db = await psycopg.AsyncConnection.connect(pg_database.url, autocommit=True)
        opened.append((nc, db))
        return job_worker(nc.jetstream(), db, name, queue.subject, stream=queue.stream, **options)

    yield make
    for nc, db in opened:
        await db.close()
        await nc.close()
