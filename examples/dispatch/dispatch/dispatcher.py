"""A dispatcher round: only the queue's lock holder dispatches; each due job is claimed, then emitted.

The logic here (skip when the lock is taken, skip jobs another dispatcher claimed, always release
the lock) is covered by unit tests with fakes. Whether the lock, the claim and the stream really
behave as assumed is what the seam tests pin on real servers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from dispatch.jobs import Job


class Locks(Protocol):
    def try_acquire(self, name: str) -> Any: ...


class Store(Protocol):
    def due(self, queue: str) -> list[str]: ...

    def claim(self, job_id: str) -> Job | None: ...


class Dispatcher:
    """Dispatches the due jobs of a queue, once, whichever of several dispatchers runs."""

    def __init__(self, locks: Locks, store: Store, emit: Callable[[Job], object]) -> None:
        self.locks = locks
        self.store = store
        self.emit = emit

    def dispatch(self, queue: str) -> list[str]:
        """One round for ``queue``: the ids of the jobs this dispatcher emitted."""
        handle = self.locks.try_acquire(f"queue:{queue}")
        if handle is None:
            return []  # another dispatcher is on this queue
        try:
            emitted = []
            for job_id in self.store.due(queue):
                job = self.store.claim(job_id)
                if job is None:
                    continue  # claimed elsewhere (a dispatcher of an older round, an operator)
                self.emit(job)
                emitted.append(job.id)
            return emitted
        finally:
            handle.release()
