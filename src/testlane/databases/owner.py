"""The owner record testlane writes on every database it creates on a server it did not start.

On an existing server (the ``url`` backend) each clone, per-worker and application database is
named ``tl_<run id>_<worker>_<suffix>`` and carries, as its comment (Postgres ``COMMENT ON
DATABASE``, MariaDB ``SCHEMA_COMMENT``), exactly one line::

    testlane:v1 run=1a2b3c4d host=ci-runner-7 pid=4242 ctime=1763790000.12 created=1763790012

with `` kept=<Unix s>`` at the end for a failed test's database kept for inspection (``db.keep_failed``): the
reaper leaves it until then, whether or not its owner is gone.

``pid`` is the run's owner process, ``ctime`` its start time (so a recycled pid is not mistaken for
it; ``-`` when unknown), ``created`` a Unix time in seconds. The whole comment must match (anchored,
:func:`re.fullmatch`) and the run id in the record must be the one in the database's name: a comment
that merely *contains* something shaped like a record, a record with extra text around it, or a name
that does not belong to the record's run is not testlane's, and nothing ever drops it.
"""

from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass

from testlane.databases.naming import run_id_of

__all__ = ["OwnerRecord", "this_host"]

_RECORD = re.compile(
    r"testlane:v1 run=(?P<run>[0-9a-f]{8}) host=(?P<host>[A-Za-z0-9][A-Za-z0-9._-]{0,252}) "
    r"pid=(?P<pid>[1-9][0-9]{0,9}) ctime=(?P<ctime>[0-9]{1,12}\.[0-9]{2}|-) created=(?P<created>[0-9]{1,12})"
    r"(?: kept=(?P<kept>[0-9]{1,12}))?"
)


def this_host() -> str:
    """This machine's name as records carry it: characters outside ``[A-Za-z0-9._-]`` become ``_``,
    leading ``._-`` are dropped (so the record's anchored pattern always matches its own host)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()).lstrip("._-")[:253]
    return name or "unknown"


@dataclass(frozen=True)
class OwnerRecord:
    """Who created a database: run id, host, owner pid (and its start time), creation time (Unix s)."""

    run_id: str
    host: str
    pid: int
    ctime: float | None
    created: int
    kept: int | None = None  # a failed test's database kept for inspection until then (Unix s): db.keep_failed

    @classmethod
    def for_run(cls, run_id: str, owner_pid: int, *, now: float | None = None) -> OwnerRecord:
        """The record for a database created now by run ``run_id`` owned by process ``owner_pid``."""
        from testlane.services.process import ProcessRef

        ref = ProcessRef.of(owner_pid)
        created = int(time.time() if now is None else now)
        return cls(run_id, this_host(), owner_pid, round(ref.create_time, 2) if ref else None, created)

    @classmethod
    def parse(cls, text: str | None) -> OwnerRecord | None:
        """The record when ``text`` is exactly one (nothing before, after or in between), else None."""
        match = _RECORD.fullmatch(text or "")
        if match is None:
            return None
        ctime = None if match["ctime"] == "-" else float(match["ctime"])
        kept = int(match["kept"]) if match["kept"] else None
        return cls(match["run"], match["host"], int(match["pid"]), ctime, int(match["created"]), kept)

    def render(self) -> str:
        """The comment text (round-trips through :meth:`parse`)."""
        ctime = "-" if self.ctime is None else f"{self.ctime:.2f}"
        kept = "" if self.kept is None else f" kept={self.kept}"
        return (
            f"testlane:v1 run={self.run_id} host={self.host} pid={self.pid} ctime={ctime} created={self.created}{kept}"
        )

    def names(self, database: str) -> bool:
        """True when ``database`` is a clone/worker name of this record's run (``tl_<run id>_...``)."""
        return run_id_of(database) == self.run_id
