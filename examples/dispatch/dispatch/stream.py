"""Job events on a Redis stream, handled by a consumer group of workers.

:func:`emit` appends an event (``XADD``). Each :class:`Consumer` is one worker of a consumer group:
``XREADGROUP ... >`` hands each new entry to exactly one worker of the group, and the entry stays
*pending* on that worker until it acknowledges it (``XACK``) — after handling, so a worker that dies
mid-job leaves the job pending, not lost. Before reading new entries a worker reclaims entries
another worker has held for longer than ``claim_idle_ms`` (``XAUTOCLAIM``): the jobs of dead workers
are redelivered and completed. Delivery is at-least-once: a worker that is only *slow* past the
idle time may see its job reclaimed, so handlers must be idempotent.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

GROUP = "dispatchers"


@dataclass(frozen=True)
class Delivery:
    """One stream entry handed to a worker; ``reclaimed`` when taken over from another worker."""

    id: str
    fields: dict[str, str]
    reclaimed: bool = False


Handler = Callable[[Delivery], object]


def emit(client: Any, stream: str, **fields: str) -> str:
    """Append an event to ``stream``; its entry id."""
    return _text(client.xadd(stream, fields))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _delivery(entry: Any, *, reclaimed: bool = False) -> Delivery:
    entry_id, fields = entry
    return Delivery(_text(entry_id), {_text(k): _text(v) for k, v in (fields or {}).items()}, reclaimed)


class Consumer:
    """One worker of consumer group ``group`` on ``stream``, handling entries with ``handler``."""

    def __init__(
        self,
        client: Any,
        stream: str,
        name: str,
        handler: Handler,
        *,
        group: str = GROUP,
        claim_idle_ms: int = 30_000,
    ) -> None:
        self.client = client
        self.stream = stream
        self.name = name
        self.handler = handler
        self.group = group
        self.claim_idle_ms = claim_idle_ms

    def ensure_group(self) -> None:
        """Create the group (and the stream) if needed; it starts at the stream's beginning."""
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def process_once(self, block_ms: int = 1000) -> int:
        """Reclaim stale entries, else wait up to ``block_ms`` for a new one; handle them. How many were handled."""
        deliveries = self._reclaim() or self._read(block_ms)
        for delivery in deliveries:
            self._deliver(delivery)
        return len(deliveries)

    def run(self, stop: threading.Event, *, block_ms: int = 200) -> None:
        """Work until ``stop`` is set."""
        self.ensure_group()
        while not stop.is_set():
            self.process_once(block_ms)

    # -- the steps (dispatch.broken overrides them one at a time) --------------------------------
    def _reclaim(self) -> list[Delivery]:
        _, entries, _ = self.client.xautoclaim(
            self.stream, self.group, self.name, min_idle_time=self.claim_idle_ms, start_id="0-0", count=10
        )
        return [_delivery(entry, reclaimed=True) for entry in entries]

    def _read(self, block_ms: int) -> list[Delivery]:
        reply = self.client.xreadgroup(self.group, self.name, {self.stream: ">"}, count=1, block=block_ms)
        return [_delivery(entry) for _, entries in reply or [] for entry in entries]

    def _deliver(self, delivery: Delivery) -> None:
        self.handler(delivery)  # an exception leaves the entry pending: it is redelivered later
        self._ack(delivery)

    def _ack(self, delivery: Delivery) -> None:
        self.client.xack(self.stream, self.group, delivery.id)
