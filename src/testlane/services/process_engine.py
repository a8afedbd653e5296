"""What every engine that runs a server process from binaries shares: :class:`ProcessEngine`.

An engine is built without side effects (no service user is created, no directory made); the work
happens when it launches. Its steps, the same for every kind:

* the *service user* (:attr:`ProcessEngine.user`): as root, servers run as an unprivileged user, resolved
  (and created) on first use, see :mod:`testlane.services.privileges`;
* *initialize once into the cache under a lock* (:meth:`ProcessEngine.cached_init`): ``initdb`` or
  ``mariadb-install-db`` runs once per key into ``<cache_dir>/<kind>/<key>/<data>``, as the service user
  into a staging directory, then stored sealed (:mod:`testlane.services.cache`); every instance copies it;
* the *instance record* (:meth:`ProcessEngine.new_instance`): run, owner, service user;
* ``start`` = ``launch(...).run()``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar, cast

from testlane.core.config import Settings
from testlane.core.runtime import RunContext, is_root
from testlane.services.base import Engine, Progress, Server
from testlane.services.cache import building, staging_path, store, sweep_staging, touch, trusted, write_meta
from testlane.services.instance import Instance
from testlane.services.privileges import ServiceUser, service_user_for
from testlane.services.process import ProcessRef
from testlane.services.registry import Registry

__all__ = ["ProcessEngine"]

_UNRESOLVED = object()

ServerT = TypeVar("ServerT", bound=Server)


class ProcessEngine(Engine, Generic[ServerT]):
    """Base of the engines that run a kind's own binaries (see module docstring)."""

    kind: ClassVar[str]  # the service kind's name: the instances' engine and the cache's directory

    def __init__(
        self,
        settings: Settings,
        context: RunContext,
        registry: Registry,
        *,
        progress: Progress | None = None,
        backend: str | None = None,
        bin_dir: str = "",
    ) -> None:
        self.settings = settings
        self.context = context
        self.registry = registry
        self.progress = progress or (lambda message: None)
        self.backend = backend or self.default_backend(settings)
        self.bin_dir = bin_dir  # an installation `auto` picked among several (Postgres), else ""
        self._user: Any = _UNRESOLVED

    def default_backend(self, settings: Settings) -> str:
        """The backend when none is given: the kind's ``backend`` setting when it names one of ours, else
        ``embedded``."""
        configured = str(getattr(settings, self.kind).backend)
        return configured if configured in ("embedded", "local") else "embedded"

    @property
    def user(self) -> ServiceUser | None:
        """The user the servers run as: None unless testlane runs as root (then resolved, and created if
        missing, on first use; raises :class:`~testlane.core.errors.PrivilegeError` when it cannot reach
        the cache or data directories)."""
        if self._user is _UNRESOLVED:
            self._user = service_user_for(self.settings, self.context)
        user: ServiceUser | None = self._user
        return user

    def owner_key(self) -> str:
        """Who the cached data belongs to, for cache keys: the service user's name, else our uid."""
        return self.user.name if self.user else str(os.getuid())

    # -- the cache ---------------------------------------------------------------------------
    def cached_init(
        self,
        key: str,
        data: str,
        *,
        ready: Callable[[Path], bool],
        build: Callable[[Path], None],
        what: str,
        meta: dict[str, str],
        sparse: bool = False,
    ) -> Path:
        """``<cache_dir>/<kind>/<key>/<data>``, built by ``build(staging)`` the first time only.

        ``ready(path)``: an entry is complete; ``what``: the progress message's subject; ``meta``:
        written to the entry's meta.json. Concurrent callers wait for one build (a lock next to the
        entry); an entry that is not the invoking user's is not trusted and is built again.
        """
        root = self.context.ensure_cache_dir() / self.kind / key
        target = root / data
        if ready(target) and trusted(target):
            touch(root)
            return target
        sweep_staging(self.context.cache_dir)
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root.parent, 0o755 if is_root() else 0o700)
        user = self.user
        if user is not None:
            os.chown(root, os.getuid(), user.gid)
        os.chmod(root, 0o750 if user is not None else 0o700)  # the service user may enter, not write
        with building(root, timeout=300):
            if ready(target) and trusted(target):
                return target
            self.progress(f"initializing {what} in {root} (first run for these binaries only)")
            # The init tool runs as the service user, so what it writes is that user's until stored: the
            # cache gets a copy made by us (new files no process of that user holds open), sealed.
            staging = staging_path(root / "init")
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(mode=0o700)
            try:
                if user is not None:
                    os.chown(staging, user.uid, user.gid)
                build(staging)
                # meta first: an entry killed before its data is in place lists as incomplete, not stale
                write_meta(root, self.kind, **meta)
                store(staging, target, user, sparse=sparse)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return target

    def run_as_user(self, argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run a set-up tool (initdb...) as the service user; output (stdout and stderr) as text."""
        user = self.user
        return subprocess.run(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
            user=user.uid if user else None,
            group=user.gid if user else None,
            extra_groups=[] if user else None,
            env=env,
            cwd="/",
        )

    # -- instances ---------------------------------------------------------------------------------
    def new_instance(self, name: str, *, detached: bool, **fields: Any) -> Instance:
        """A record of a new instance of this kind in this run, owned by the run's owner unless ``detached``."""
        owner = None if detached else self.context.owner_pid
        ref = ProcessRef.of(owner) if owner is not None else None
        user = self.user
        return Instance(
            run_id=self.context.run_id,
            name=name,
            engine=self.kind,
            owner_pid=owner,
            owner_create_time=ref.create_time if ref else None,
            os_user=user.name if user else None,
            **fields,
        )

    def launch_options(
        self, instance: Instance, *, fixed_port: int, detached: bool, die_with_parent: bool
    ) -> dict[str, Any]:
        """The keyword arguments every :class:`~testlane.services.base.Launch` of this engine takes."""
        return {
            "context": self.context,
            "registry": self.registry,
            "instance": instance,
            "user": self.user,
            "start_timeout": self.settings.start_timeout,
            "fixed_port": fixed_port,
            "die_with_parent": die_with_parent and not detached,
        }

    def start(self, name: str | None = None, **kwargs: Any) -> ServerT:
        """Start an instance in the calling thread (``launch(...).run()``); its handle."""
        return cast(ServerT, self.launch(name or self.kind, **kwargs).run())
