"""The ``url`` backend: an existing server (CI service containers, a compose file, a shared test server).

Nothing is started. The instance is recorded like any other (so the guard recognizes the server and
the reaper forgets the record when the run is gone), checked with a real query, and described to
tests the same way. testlane only ever creates and drops its own ``tl_`` databases on such a server
and leaves everything else alone; see :mod:`testlane.databases.leftovers` for how a dead run's
leftovers are found there.
"""

from __future__ import annotations

import socket
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

from testlane.core.config import Settings
from testlane.core.errors import ConfigError, UnreachableError
from testlane.core.redact import redact_url
from testlane.core.runtime import RunContext
from testlane.core.urls import ServiceUrl
from testlane.core.waiting import WaitTimeout, wait_until
from testlane.services import kinds
from testlane.services.base import Launch, Server
from testlane.services.instance import Instance
from testlane.services.process import ProcessRef
from testlane.services.registry import Registry

__all__ = ["KindEngine", "KindLaunch", "UrlEngine", "configured_url", "instance_from_url", "url_instance"]


def instance_from_url(engine: str, url: str, *, run_id: str, name: str) -> Instance:
    """An instance describing the server at ``url`` (defaults: the kind's usual port, user and database).

    Raises ConfigError when ``url`` is no URL or its scheme is not one of the kind's."""
    kind = kinds.get(engine)
    try:
        parsed = ServiceUrl.parse(url)
    except ValueError as exc:
        raise ConfigError(f"{engine}.url: {exc}.", hint=f"use a URL starting with {kind.schemes[0]}://") from None
    if parsed.scheme not in kind.schemes:
        raise ConfigError(
            f"{engine}.url {redact_url(url)!r} does not look like a {engine} URL (scheme {parsed.scheme!r}).",
            hint=f"use a URL starting with {kind.schemes[0]}://",
        )
    return Instance(
        run_id=run_id,
        name=name,
        engine=engine,
        backend="url",
        host=parsed.host or "127.0.0.1",
        port=parsed.port or kind.default_port,
        user=parsed.user or kind.default_user,
        password=parsed.password or None,
        database=parsed.database or kind.default_database,
        extra={"url": redact_url(url)},
    )


def configured_url(engine: str, settings: Settings) -> str:
    """``{engine}.url``, the existing server of the ``url`` backend; ConfigError when it is empty."""
    url = str(kinds.get(engine).section(settings).url)
    if not url:
        raise ConfigError(
            f'{engine}.backend is "url" but {engine}.url is empty.',
            hint=f"set {engine}.url (TESTLANE_{engine.upper()}_SERVER_URL) to the existing server's URL.",
        )
    return url


def url_instance(engine: str, settings: Settings, *, run_id: str, name: str) -> Instance:
    """The record of ``engine``'s configured existing server, completed from the kind's settings: ConfigError
    when its URL is missing or not one of the kind's, or a key the kind needs is (S3's credentials)."""
    instance = instance_from_url(engine, configured_url(engine, settings), run_id=run_id, name=name)
    kinds.get(engine).adopt_url(instance, settings)
    return instance


def server_class(engine: str) -> type[Server]:
    """The handle class of the kind ``engine``."""
    return kinds.get(engine).handle


def server_version(server: Server) -> str:
    """The version the server reports about itself."""
    return kinds.get(server.engine).server_version(server)


class KindLaunch(Launch):
    """A launch of a server testlane does not run as its own process: the kind's handle, owned."""

    def make_server(self, popen: subprocess.Popen[bytes] | None) -> Server:
        return server_class(self.instance.engine)(self.instance, registry=self.registry, owned=True)

    def await_query(
        self,
        server: Server,
        *,
        timeout: float,
        what: str,
        ping_timeout: float,
        max_interval: float,
        abort: Callable[[], str | None] | None = None,
    ) -> None:
        """Wait until ``server`` answers a real query (``ping_timeout`` seconds each), then record its version.

        Raises :class:`~testlane.core.waiting.WaitTimeout` after ``timeout`` seconds, or what
        reading the version raised.
        """
        wait_until(
            lambda: server.ping(timeout=ping_timeout) or True,
            timeout=timeout,
            what=what,
            interval=0.05,
            max_interval=max_interval,
            transient=(Exception,),
            abort=abort,
        )
        self.instance.version = server_version(server)


# How long an existing server's port may refuse connections before testlane stops waiting for it (s). A server
# that is starting already listens (PostgreSQL answers "starting up"; a container's published port accepts and
# then resets), so a refusal that lasts means nothing listens there: a wrong port or a stopped server, which
# waiting the whole start timeout (10 s; 25 s under xdist) would only delay. A restart's gap fits in it.
REFUSED_GRACE = 1.5


def refused_for(host: str, port: int, grace: float = REFUSED_GRACE) -> Callable[[], str | None]:
    """An ``abort`` check for :func:`~testlane.core.waiting.wait_until`: the reason to stop once a TCP connection
    to ``host:port`` has been refused for ``grace`` seconds in a row (None until then, and always for a Unix
    socket or no port: only the driver can tell those)."""
    from testlane.services.egress import EgressRefusedError

    first: float | None = None

    def check() -> str | None:
        nonlocal first
        if not port or "/" in host:
            return None
        try:
            with socket.create_connection((host, port), timeout=0.5):
                pass
        except EgressRefusedError:
            return None  # the network guard's refusal says nothing about the server
        except ConnectionRefusedError:
            now = time.monotonic()
            first = now if first is None else first
            if now - first >= grace:
                return f"nothing listens on {host}:{port} (connection refused for {grace:g} s)"
            return None
        except OSError:
            pass  # unreachable, timed out: the driver's own attempts tell
        first = None
        return None

    return check


class UrlLaunch(KindLaunch):
    """Attach to an existing server: record it, then wait (briefly) for a real query."""

    def prepare(self) -> None:
        self.registry.save(self.instance)

    def spawn(self) -> None:
        pass  # nothing to start

    def argv(self, port: int) -> list[str]:  # pragma: no cover - never spawned
        raise NotImplementedError

    def wait(self) -> Server:
        server = self.make_server(None)
        try:
            self.await_query(
                server,
                timeout=min(self.start_timeout, 10.0),
                what=f"the existing {self.instance.engine} server at {self.instance.extra.get('url')}",
                ping_timeout=2.0,
                max_interval=0.5,
                abort=refused_for(self.instance.host, self.instance.port),
            )
        except WaitTimeout as exc:
            raise self._unreachable(exc.reason or exc.last_error or exc) from None
        except Exception as exc:
            raise self._unreachable(exc) from None
        self.registry.save(self.instance)
        return server

    def _unreachable(self, cause: BaseException | str) -> UnreachableError:
        text = str(cause).strip()
        return UnreachableError(
            f"the existing {self.instance.engine} server at {self.instance.extra.get('url')} did not answer: "
            f"{text.splitlines()[0] if text else type(cause).__name__}",
            hint=f"check that it runs and that {self.instance.engine}.url (user, password, port) is right; or "
            "use another backend.",
        )

    def abort(self) -> None:
        self.registry.remove(self.instance)


class KindEngine(ABC):
    """The engine of one registered service kind on a backend other than its own binaries.

    A container or an existing server: the kind comes from :mod:`testlane.services.kinds` by name.
    :meth:`launch` names the instance (the kind's name by default) and finds its owner (the run's
    process, none when ``detached``); subclasses build the launch from those.
    """

    def __init__(self, engine: str, settings: Settings, context: RunContext, registry: Registry) -> None:
        self.engine_name = engine
        self.settings = settings
        self.context = context
        self.registry = registry

    def launch(
        self,
        name: str | None = None,
        *,
        detached: bool = False,
        die_with_parent: bool = True,
        data_source: Path | None = None,
    ) -> Launch:
        """A launch of a new instance named ``name`` (call ``.run()``); ``data_source`` is not used here."""
        owner = None if detached else self.context.owner_pid
        ref = ProcessRef.of(owner) if owner is not None else None
        return self._launch(name or self.engine_name, owner, ref.create_time if ref else None)

    @abstractmethod
    def _launch(self, name: str, owner_pid: int | None, owner_create_time: float | None) -> Launch:
        """The launch of instance ``name`` owned by ``owner_pid`` (``None``: no owner)."""


class UrlEngine(KindEngine):
    """Launches attachments to the configured existing server of one service."""

    def __init__(self, engine: str, settings: Settings, context: RunContext, registry: Registry) -> None:
        super().__init__(engine, settings, context, registry)
        self.url = configured_url(engine, settings)

    def _launch(self, name: str, owner_pid: int | None, owner_create_time: float | None) -> UrlLaunch:
        instance = url_instance(self.engine_name, self.settings, run_id=self.context.run_id, name=name)
        instance.owner_pid, instance.owner_create_time = owner_pid, owner_create_time
        return UrlLaunch(
            context=self.context,
            registry=self.registry,
            instance=instance,
            user=None,
            start_timeout=self.settings.start_timeout,
        )
