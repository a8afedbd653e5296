"""An *instance*: one running server of one run, as recorded on disk.

Plain data, serializable to JSON, so that any process (a pytest worker, the
reaper, ``testlane services status``) can describe, reach or clean up a server
it did not start. Engine-specific behaviour lives in the engines.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testlane.core.urls import ServiceUrl

__all__ = ["Instance"]


@dataclass
class Instance:
    """A server instance: where it runs, who owns it, how to reach it."""

    run_id: str
    name: str  # service name in this run (the kind's name, or another for a second server)
    engine: str  # the service kind's name (testlane.services.kinds)
    backend: str  # "embedded" | "local" | "container" | "url"
    host: str = "127.0.0.1"
    port: int = 0
    user: str | None = None
    password: str | None = None
    database: str | None = None  # the maintenance/default database (Postgres, MariaDB)
    socket: str | None = None  # Unix socket directory (Postgres) or socket path (Valkey, MariaDB)
    version: str = ""
    pid: int | None = None
    pid_create_time: float | None = None
    owner_pid: int | None = None  # None: detached (`testlane services start`)
    owner_create_time: float | None = None
    instance_dir: str | None = None  # removed when the instance stops
    log_file: str | None = None
    container: str | None = None  # container name (container backend)
    os_user: str | None = None  # the OS user the server runs as (root handling)
    started_at: float = field(default_factory=time.time)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.run_id}.{self.name}"

    @property
    def detached(self) -> bool:
        return self.owner_pid is None

    @property
    def outlives_run(self) -> bool:
        """True when the server is not stopped with the run that uses it: an existing server (``url``
        backend) or a detached one (``testlane services start``). What a run makes there (databases) it
        must drop itself, and mark with its owner record so a crashed run's leftovers can be reaped."""
        return self.backend == "url" or self.detached

    @property
    def url(self) -> str:
        """The URL clients use (TCP on 127.0.0.1), e.g. ``postgresql://postgres@127.0.0.1:5432/postgres``."""
        return self.url_for()

    def url_for(self, database: str | None = None, *, scheme: str | None = None) -> str:
        """URL for ``database`` (default: the instance's own) with an optional scheme override."""
        return str(self.service_url(database, scheme=scheme))

    def service_url(self, database: str | None = None, *, scheme: str | None = None) -> ServiceUrl:
        """:meth:`url_for` as a :class:`~testlane.core.urls.ServiceUrl`, to change further."""
        if scheme is None:
            # the kinds import this module (through their handles): imported here, once a URL is asked for
            from testlane.services import kinds

            scheme = kinds.get(self.engine).schemes[0]
        return ServiceUrl(
            scheme=scheme,
            user=self.user or None,
            password=self.password or None,
            host=self.host,
            port=self.port,
            database=self.database if database is None else database,
        )

    @property
    def log_path(self) -> Path | None:
        return Path(self.log_file) if self.log_file else None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Instance:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json(cls, text: str) -> Instance:
        return cls.from_dict(json.loads(text))
