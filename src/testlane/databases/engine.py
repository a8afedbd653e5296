"""What a :class:`~testlane.databases.pool.ClonePool` needs from one kind of database server.

A *database engine* knows how one server kind makes, recycles and removes the databases a test gets;
the pool knows when (ahead of demand, in the background, under a lock). Two implementations:

* :class:`~testlane.databases.postgres_engine.PostgresDatabaseEngine` — ``CREATE DATABASE ... TEMPLATE``,
  a pre-opened connection with warm caches, and a released database *reset* in place when
  :mod:`testlane.databases.reset` proves that exact (else dropped);
* :class:`~testlane.databases.mariadb.engine.MariaDbDatabaseEngine` — the template's DDL replayed in one
  multi-statement round trip (:mod:`testlane.databases.mariadb.clone`), and a used database always dropped.

Tests use a third, in-memory one (``tests/unit/fake_engine.py``) to exercise the pool's threads without a
server. Every method may be called from the pool's worker threads; an engine guards its own caches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from testlane.databases.pool import Lease

__all__ = ["AdminT", "Closeable", "ConnT", "DatabaseEngine", "SavepointT", "SpecT"]


class Closeable(Protocol):
    """A connection, as far as the pool cares: it can be closed (the pool closes it, ignoring errors)."""

    def close(self) -> None: ...


ConnT = TypeVar("ConnT", bound=Closeable)  # a connection to one test database (handed to the test)
AdminT = TypeVar("AdminT", bound=Closeable)  # an administrative connection (creates and drops databases)
SavepointT = TypeVar("SavepointT", covariant=True)  # the connection class transaction isolation wraps
SpecT = TypeVar("SpecT", contravariant=True)  # what a template is built from (migrations, seed, ...)


class DatabaseEngine(Protocol[ConnT, AdminT, SavepointT, SpecT]):
    """One server kind's database operations, as the clone pool and the isolation layer call them.

    ``kind`` names the server kind in logs and thread names (``postgres``, ``mariadb``). ``recycles`` is
    True when :meth:`reset` may return a database to the template's state; False means every used
    database is dropped. Errors are testlane's (:class:`~testlane.core.errors.DatabaseError`) where the
    engine can say what went wrong, else the driver's.
    """

    kind: str
    recycles: bool

    def ensure_template(self, spec: SpecT) -> str:
        """Build the migrated template for ``spec`` (once per content hash); its name."""
        ...

    def connect_admin(self) -> AdminT:
        """A new administrative connection (autocommit) to the server; the pool closes it."""
        ...

    def clone_name(self, run_id: str, worker: str, n: int) -> str:
        """The name of the ``n``-th clone of ``worker`` in run ``run_id`` (``tl_...``)."""
        ...

    def owner_comment(self, name: str) -> str | None:
        """The owner record written on database ``name`` (on a server that outlives the run), else None."""
        ...

    def create(self, admin: AdminT, template: str, name: str) -> None:
        """Make database ``name`` a copy of ``template`` (owner mark included); raises when it cannot,
        leaving no half-made database behind."""
        ...

    def clone(self, admin: AdminT, template: str, name: str, *, on_demand: bool = False) -> Lease[ConnT]:
        """:meth:`create`, then the lease handed to a test (with a connection opened ahead, if the
        engine opens one)."""
        ...

    def reset(self, lease: Lease[ConnT], *, stopping: Callable[[], bool]) -> Lease[ConnT] | None:
        """A used database back in the template's exact state, as a new lease — or None: it must be
        dropped. ``stopping()`` turns True when the pool closes (give up waiting then). Never raises."""
        ...

    def drop(self, admin: AdminT, name: str) -> None:
        """Drop database ``name`` (a ``tl_`` name), ending connections still open to it."""
        ...

    def savepoint_connection(self, name: str) -> SavepointT:
        """A new connection to database ``name`` whose commits are savepoints of one rolled-back
        transaction (transaction isolation)."""
        ...
