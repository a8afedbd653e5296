"""Names of the databases testlane creates, and the guard that refuses everything else.

Every database testlane creates starts with ``tl_``:

* templates: ``tl_tpl_<hash>`` (the hash of the migration sources and the server version);
* per-test clones: ``tl_<run id>_<worker>_<n>``;
* per-worker databases (transaction and schema modes): ``tl_<run id>_<worker>_w``;
* schemas (schema mode): ``tl_s_<run id>_<worker>_<n>``;
* MariaDB/MySQL clones: ``tl_<run id>_<worker>_m<n>``, the per-worker database ``tl_<run id>_<worker>_mt``
  (see :mod:`testlane.databases.mariadb.engine`).

The run id in clone names lets a shared server (the ``url`` backend) tell runs apart, and lets
the reaper remove a dead run's leftovers by prefix.
"""

from __future__ import annotations

import re

from testlane.core.errors import UnsafeDatabaseError

__all__ = [
    "PREFIX",
    "clone_name",
    "is_testlane_name",
    "require_testlane_database",
    "run_id_of",
    "schema_name",
    "template_name",
    "worker_database_name",
]

PREFIX = "tl_"
_CLONE = re.compile(r"^tl_([0-9a-f]{8})_([a-z0-9]+)_(\w+)$")


def template_name(fingerprint: str) -> str:
    return f"{PREFIX}tpl_{fingerprint[:16]}"


def clone_name(run_id: str, worker: str, n: int) -> str:
    return f"{PREFIX}{run_id}_{worker}_{n}"


def worker_database_name(run_id: str, worker: str, tag: str = "w") -> str:
    return f"{PREFIX}{run_id}_{worker}_{tag}"


def schema_name(run_id: str, worker: str, n: int) -> str:
    return f"{PREFIX}s_{run_id}_{worker}_{n}"


def is_testlane_name(name: str) -> bool:
    return name.startswith(PREFIX)


def run_id_of(name: str) -> str | None:
    """The run id in a clone or worker database name (None for templates and foreign names)."""
    match = _CLONE.match(name)
    return match.group(1) if match else None


def require_testlane_database(name: str, *, allow_unmanaged: bool = False, action: str = "use") -> None:
    """Refuse to ``action`` a database whose name testlane did not give it."""
    if allow_unmanaged or is_testlane_name(name):
        return
    raise UnsafeDatabaseError(
        f"refusing to {action} database {name!r}: testlane did not create it (its databases are named "
        f"{PREFIX}...). A misconfigured suite must not touch a developer's working database.",
        hint="let testlane create the database (use its fixtures or testlane.db helpers), or pass "
        "allow_unmanaged=True / set db.allow_unmanaged = true if you really mean it.",
    )
