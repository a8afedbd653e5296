"""Fixtures for the seam tests: stream workers, each on its own Redis connection."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

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
