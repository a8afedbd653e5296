"""Refusing outgoing connections, before a byte is sent: one guard, used in two places.

* the unit lane (:mod:`testlane.pytest_plugin.network_guard`): a unit-lane test may not open a
  network connection;
* the template build (:mod:`testlane.databases.build_scope`): while migrations and set-up commands
  run, nothing may connect to a server other than the one the template is being built on — in
  testlane's own process and, through a ``sitecustomize`` put on ``PYTHONPATH``, in every Python
  the set-up commands start (:func:`child_guard_environment`).

:func:`guarded` patches, for its duration:

* ``socket.socket.connect``/``connect_ex`` (so ``socket.create_connection``, asyncio, redis-py,
  asyncpg, pg8000, PyMySQL, httpx, urllib): the address is checked before the system call;
* ``psycopg.Connection.connect``/``AsyncConnection.connect``/``psycopg.connect`` and
  ``psycopg2.connect``: libpq opens its sockets in C, below Python's socket module, so the target is
  resolved first as libpq resolves it (:func:`libpq_targets`: the conninfo, a service file's entry,
  ``PGHOST``/``PGPORT``/``PGHOSTADDR``, libpq's defaults; a host that is a directory, or no host at all,
  is a Unix socket). A driver imported while the guard is on is patched when its import finishes.

The check receives ``(host, port, via)``; ``port`` is ``None`` for a Unix socket (``host`` is then
the socket's path). Each user decides what that means: the unit lane lets every Unix socket through
(local IPC, a developer's socket-only database is still not the network), the template build refuses
every database socket but its own server's.

A refused attempt raises :class:`EgressRefusedError` (a ``ConnectionRefusedError``) *and* is
recorded, so a library that swallows the error cannot hide it. Threads named ``testlane-*``
(testlane's own pool workers) are never checked. Programs that are not Python (``psql``, a Go
binary) are not patched; see docs/isolation.md for what covers them.

This module imports nothing from testlane and nothing outside the standard library at import time:
the child ``sitecustomize`` loads it by file path into whatever Python a set-up command runs.
Written here rather than taken from pytest-socket, which blocks socket *creation* (breaking
libraries that create sockets they never connect), does not name the port and does not see libpq.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import json
import os
import re
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ALLOW_ENV",
    "DEFAULT_SOCKET_DIR",
    "REPORT_ENV",
    "Allowlist",
    "Attempt",
    "EgressRefusedError",
    "child_guard_environment",
    "guarded",
    "libpq_targets",
    "read_reports",
]

# Spelt out, not taken from testlane.core.environment (which declares them): this module imports nothing from
# testlane (module docstring). A test checks the two names agree.
ALLOW_ENV = "TESTLANE_EGRESS_ALLOW"
REPORT_ENV = "TESTLANE_EGRESS_REPORT"

LOCAL_ALIASES = {
    "localhost": {"127.0.0.1", "::1", "localhost"},
    "127.0.0.1": {"127.0.0.1", "localhost"},
    "::1": {"::1", "localhost"},
}
# Unix sockets of database servers; other Unix sockets (syslog, nscd, multiprocessing) stay open.
_SERVER_SOCKET = re.compile(r"(^|/)\.s\.PGSQL\.\d+$|(mysql|mariadb|redis|valkey)[^/]*\.sock$")
# Variable names worth naming in a message when read but unset (not PYTHON*, ALEMBIC_CONFIG, ...).
_DB_VARIABLE = re.compile(r"URL|URI|DSN|DATABASE|_DB$|^DB_|HOST|PORT|POSTGRES|^PG|MYSQL|MARIADB|REDIS|VALKEY")


class EgressRefusedError(ConnectionRefusedError):
    """Raised instead of connecting to a server the guard does not allow; nothing was sent."""


@dataclass
class Attempt:
    """One refused (or seen) connection: ``host`` (or Unix socket path), ``port`` (None for a socket
    path: :attr:`unix`), ``via`` (``tcp``, ``unix``, ``libpq``, or ``seen``: detected in a program that is not Python),
    the environment variables whose value points there (``pointing``) and the database-looking variables
    read while unset (``unset``)."""

    host: str
    port: int | None
    via: str
    pointing: list[str] = field(default_factory=list)
    unset: list[str] = field(default_factory=list)

    @property
    def unix(self) -> bool:
        """Whether the attempt is to a Unix socket (a path, or libpq's default socket directory)."""
        return self.port is None

    @property
    def target(self) -> str:
        if self.port is None or self.host.startswith("<"):  # a socket path, or a target libpq cannot name
            return self.host
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def describe(self) -> str:
        kind = {"libpq": " (PostgreSQL, via libpq)", "unix": " (Unix socket)"}.get(self.via, "")
        if self.via == "libpq" and self.port is None:
            kind = " (PostgreSQL Unix socket, via libpq)"
        if self.via == "seen":
            kind = " (from a program that is not Python: seen, not refused)"
        return self.target + kind


@dataclass(frozen=True)
class Allowlist:
    """Endpoints a guarded process may reach: ``hosts`` (any port), ``endpoints`` (host, port) and
    ``socket_dirs`` (Unix sockets inside them)."""

    endpoints: tuple[tuple[str, int], ...] = ()
    hosts: tuple[str, ...] = ()
    socket_dirs: tuple[str, ...] = ()

    def allows(self, host: str, port: int | None) -> bool:
        if host.startswith("/") or host.startswith("@"):
            return any(os.path.dirname(host) == d.rstrip("/") or host == d for d in self.socket_dirs)
        names = LOCAL_ALIASES.get(host, {host})
        return any(h in names for h in self.hosts) or any(p == port and h in names for h, p in self.endpoints)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def of(cls, entries: Sequence[str]) -> Allowlist:
        """An allowlist from ``lanes.unit_allow_hosts``-style entries: ``host`` (every port), ``host:port`` or
        ``[v6 address]:port`` (that port only); a bare IPv6 address is a host."""
        hosts: list[str] = []
        endpoints: list[tuple[str, int]] = []
        for entry in entries:
            host, _, port = entry.rpartition(":")
            if entry.startswith("[") and host.endswith("]") and port.isdigit():
                endpoints.append((host[1:-1], int(port)))
            elif host and ":" not in host and port.isdigit():
                endpoints.append((host, int(port)))
            else:
                hosts.append(entry)
        return cls(endpoints=tuple(endpoints), hosts=tuple(hosts))

    @classmethod
    def from_json(cls, text: str) -> Allowlist:
        data = json.loads(text)
        return cls(
            tuple((str(h), int(p)) for h, p in data.get("endpoints", ())),
            tuple(data.get("hosts", ())),
            tuple(data.get("socket_dirs", ())),
        )


Check = Callable[[str, "int | None", str], None]


# --------------------------------------------------------------------------- the guard


@contextlib.contextmanager
def guarded(check: Check) -> Iterator[None]:
    """Call ``check(host, port, via)`` before every connection this process opens (see module doc).

    ``check`` raises to refuse. Patches are undone on exit (nesting is allowed)."""
    missing = object()  # socket.socket inherits connect/connect_ex from the C class: shadow, then delete
    saved: list[tuple[Any, str, Any]] = []

    def apply(patches: Iterable[tuple[Any, str, Any]]) -> None:
        for owner, name, replacement in patches:
            saved.append((owner, name, owner.__dict__.get(name, missing)))
            setattr(owner, name, replacement)

    apply(_socket_patches(check))
    for module, builder in _DRIVERS.items():
        if module in sys.modules:
            apply(builder(sys.modules[module], check))
    hook = _PatchOnImport(lambda name, mod: apply(_DRIVERS[name](mod, check)))
    sys.meta_path.insert(0, hook)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(hook)
        for owner, name, value in reversed(saved):
            if value is missing:
                delattr(owner, name)
            else:
                setattr(owner, name, value)


def _exempt() -> bool:
    # testlane's own background threads (pool workers) serve the run, not the guarded code.
    return threading.current_thread().name.startswith("testlane-")


def _socket_patches(check: Check) -> list[tuple[Any, str, Any]]:
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex

    def inspect(sock: socket.socket, address: Any) -> None:
        __tracebackhide__ = True  # pytest shows the caller and the refusal, not the guard's frames
        if _exempt():
            return
        if sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
            check(str(address[0]), int(address[1]), "tcp")
        elif sock.family == getattr(socket, "AF_UNIX", None) and isinstance(address, str | bytes):
            path = os.fsdecode(address)
            if _SERVER_SOCKET.search(path):
                check(path, None, "unix")

    def connect(self: socket.socket, address: Any) -> None:
        __tracebackhide__ = True  # pytest shows the caller and the refusal, not the guard's frames
        inspect(self, address)
        return original_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        __tracebackhide__ = True  # pytest shows the caller and the refusal, not the guard's frames
        inspect(self, address)
        return original_connect_ex(self, address)

    return [(socket.socket, "connect", connect), (socket.socket, "connect_ex", connect_ex)]


DEFAULT_SOCKET_DIR = "<libpq's default socket directory>"


def libpq_targets(conninfo: str, kwargs: dict[str, Any]) -> list[tuple[str, int | None]]:
    """Where libpq would connect for ``conninfo`` + ``kwargs``, resolved as libpq resolves it.

    Returns ``(host, port)`` pairs for TCP and ``(socket file path, None)`` for a Unix socket (a host
    that is a directory, or ``@`` for Linux's abstract namespace: ``<dir>/.s.PGSQL.<port>``).

    Precedence, as libpq's: the conninfo and keyword arguments; then the service they name (``service``)
    or ``PGSERVICE`` names, from the service file (``PGSERVICEFILE``, else ``~/.pg_service.conf``) or the
    system one (``$PGSYSCONFDIR/pg_service.conf``); then ``PGHOST``, ``PGPORT``, ``PGHOSTADDR``; then
    libpq's compiled-in defaults (no host at all: its default socket directory, named
    :data:`DEFAULT_SOCKET_DIR`, never one of testlane's). ``hostaddr`` wins over ``host`` for where
    the connection goes; comma-separated lists give several targets.

    For a service named by ``PGSERVICE`` alone, libpq's own answer (``PQconndefaults``) is used, so its
    compiled-in system directory counts too. A service named in the conninfo that is in none of the files
    above gives ``[("<service 'NAME' (not in FILES)>", 0)]``, which no allowlist allows. Raises nothing: an
    unparsable conninfo gives ``[("<unparsable conninfo>", 0)]``."""
    try:
        from psycopg import pq
        from psycopg.conninfo import conninfo_to_dict

        params = {k: str(v) for k, v in conninfo_to_dict(conninfo, **kwargs).items() if v not in (None, "")}
        options = pq.Conninfo.get_defaults()
    except Exception:
        return [("<unparsable conninfo>", 0)]

    def text(raw: bytes | None) -> str | None:
        return raw.decode() if raw is not None else None

    service = params.get("service")
    if service and service != os.environ.get("PGSERVICE"):
        # libpq's defaults resolved PGSERVICE's service (or none): resolve the conninfo's one here.
        files = _service_files(params.get("servicefile"))
        found = _service_entry(service, files)
        if found is None:
            return [(f"<service {service!r} (not in {', '.join(map(str, files)) or 'any service file'})>", 0)]
        defaults = {}
        for o in options:
            keyword = o.keyword.decode()
            envvar = text(o.envvar)
            from_env = os.environ.get(envvar) if envvar else None
            defaults[keyword] = found.get(keyword, from_env if from_env is not None else text(o.compiled) or "")
    else:
        # PQconndefaults: PGSERVICE's service, then the PG* variables, then compiled-in defaults.
        defaults = {o.keyword.decode(): text(o.val) or "" for o in options}

    def value(key: str) -> str:
        return params.get(key) or defaults.get(key, "")

    hosts = (value("hostaddr") or value("host")).split(",")
    ports = (value("port") or "5432").split(",")
    out: list[tuple[str, int | None]] = []
    for index, host in enumerate(hosts):
        raw_port = (ports[index] if index < len(ports) else ports[-1]).strip()
        try:
            port = int(raw_port or 5432)
        except ValueError:
            return [("<unparsable conninfo>", 0)]
        host = host.strip() or DEFAULT_SOCKET_DIR
        if host == DEFAULT_SOCKET_DIR or host.startswith(("/", "@")):
            out.append((f"{host.rstrip('/')}/.s.PGSQL.{port}", None))
        else:
            out.append((host, port))
    return out


def _service_files(servicefile: str | None) -> list[Path]:
    """The service files libpq reads, in its order: the user's, then the system one."""
    files = []
    user = servicefile or os.environ.get("PGSERVICEFILE")
    if user:
        files.append(Path(user))
    else:
        with contextlib.suppress(RuntimeError):  # no home directory
            files.append(Path.home() / ".pg_service.conf")
    if os.environ.get("PGSYSCONFDIR"):
        files.append(Path(os.environ["PGSYSCONFDIR"]) / "pg_service.conf")
    return files


def _service_entry(service: str, files: list[Path]) -> dict[str, str] | None:
    """The ``[service]`` section of the first file that has it (libpq's INI-like format), or None."""
    import configparser

    for path in files:
        parser = configparser.ConfigParser(interpolation=None, strict=False, comment_prefixes=("#",))
        try:
            parser.read_string(path.read_text())
        except (OSError, UnicodeDecodeError, configparser.Error):
            continue
        if parser.has_section(service):
            return {key: val.strip() for key, val in parser.items(service)}
    return None


def _psycopg_patches(psycopg: Any, check: Check) -> list[tuple[Any, str, Any]]:
    if not hasattr(psycopg, "Connection"):
        return []

    def guard(conninfo: str, kwargs: dict[str, Any]) -> None:
        __tracebackhide__ = True  # pytest shows the caller and the refusal, not the guard's frames
        if _exempt():
            return
        for host, port in libpq_targets(conninfo, kwargs):
            check(host, port, "libpq")

    sync_connect = psycopg.Connection.__dict__["connect"].__func__
    async_connect = psycopg.AsyncConnection.__dict__["connect"].__func__

    def connect(cls: Any, /, conninfo: str = "", **kwargs: Any) -> Any:
        __tracebackhide__ = True  # pytest shows the caller and the refusal, not the guard's frames
        guard(conninfo, kwargs)
        return sync_connect(cls, conninfo, **kwargs)

    async def aconnect(cls: Any, /, conninfo: str = "", **kwargs: Any) -> Any:
        __tracebackhide__ = True  # pytest shows the caller and the refusal, not the guard's frames
        guard(conninfo, kwargs)
        return await async_connect(cls, conninfo, **kwargs)

    bound: Any = psycopg.__dict__.get("connect")  # `psycopg.connect` is `Connection.connect`, bound at import

    def module_connect(conninfo: str = "", **kwargs: Any) -> Any:
        __tracebackhide__ = True  # pytest shows the caller and the refusal, not the guard's frames
        guard(conninfo, kwargs)
        return bound(conninfo, **kwargs)

    patches: list[tuple[Any, str, Any]] = [
        (psycopg.Connection, "connect", classmethod(connect)),
        (psycopg.AsyncConnection, "connect", classmethod(aconnect)),
    ]
    if bound is not None:
        patches.append((psycopg, "connect", module_connect))
    return patches


def _psycopg2_patches(psycopg2: Any, check: Check) -> list[tuple[Any, str, Any]]:
    original = psycopg2.__dict__.get("connect")
    if original is None:
        return []

    def connect(
        dsn: str | None = None, connection_factory: Any = None, cursor_factory: Any = None, **kwargs: Any
    ) -> Any:
        __tracebackhide__ = True  # pytest shows the caller and the refusal, not the guard's frames
        if not _exempt():
            params = {k: v for k, v in kwargs.items() if k not in ("async", "async_")}
            for host, port in libpq_targets(dsn or "", params):
                check(host, port, "libpq")
        return original(dsn, connection_factory=connection_factory, cursor_factory=cursor_factory, **kwargs)

    return [(psycopg2, "connect", connect)]


_DRIVERS: dict[str, Callable[[Any, Check], list[tuple[Any, str, Any]]]] = {
    "psycopg": _psycopg_patches,
    "psycopg2": _psycopg2_patches,
}


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Patches a libpq driver as soon as its import finishes (the child guard starts before it)."""

    def __init__(self, patch: Callable[[str, Any], None]) -> None:
        self.patch = patch

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: Any = None) -> Any:
        if fullname not in _DRIVERS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        loader, patch = spec.loader, self.patch

        class Loader(importlib.abc.Loader):
            def create_module(self, spec: Any) -> Any:
                return loader.create_module(spec)

            def exec_module(self, module: Any) -> None:
                loader.exec_module(module)
                patch(fullname, module)

        spec.loader = Loader()
        return spec


# --------------------------------------------------------------------------- diagnosis


def _application_variable(name: str) -> bool:
    # libpq's own PG* variables are read by the driver (psycopg), not by the application.
    return bool(_DB_VARIABLE.search(name.upper())) and not re.match(r"^PG[A-Z_]+$", name)


class EnvironmentReads:
    """Records the database-looking variables read through ``os.environ``/``os.getenv`` while unset.

    Best effort: code that copies the environment wholesale (pydantic-settings) is not seen."""

    def __init__(self) -> None:
        self.unset: list[str] = []

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        original = os.environ
        unset = self.unset

        class Recording(type(original)):  # type: ignore[misc]
            def __getitem__(self, key: str) -> str:
                try:
                    return str(super().__getitem__(key))
                except KeyError:
                    if isinstance(key, str) and _application_variable(key) and key not in unset:
                        unset.append(key)
                    raise

        env: Any = original
        # Same storage (env._data), so writes stay visible both ways; os.getenv looks os.environ up per call.
        os.environ = Recording(env._data, env.encodekey, env.decodekey, env.encodevalue, env.decodevalue)  # noqa: B003
        try:
            yield
        finally:
            os.environ = original  # noqa: B003


def pointing_variables(host: str, port: int | None, environ: dict[str, str] | os._Environ[str]) -> list[str]:
    """Variables in ``environ`` whose value names ``host`` and ``port`` (a URL, or a host with a port)."""
    out = []
    names = LOCAL_ALIASES.get(host, {host})
    for key, value in environ.items():
        if key.startswith("TESTLANE_"):
            continue
        if port is None:
            if host in value or os.path.dirname(host) in value.split(","):
                out.append(key)
            continue
        for found in re.finditer(r"(?:@|//|^|host=)\[?([^\s/:@?,\]=]+)\]?:(\d+)", value):
            if found.group(1) in names and int(found.group(2)) == port:
                out.append(key)
                break
    return sorted(out)


def make_attempt(host: str, port: int | None, via: str, unset: list[str]) -> Attempt:
    """An :class:`Attempt`, diagnosed against the current environment."""
    return Attempt(host, port, via, pointing_variables(host, port, os.environ), list(unset))


# --------------------------------------------------------------------------- programs that are not Python


def foreign_connections(pid: int, allow: Allowlist) -> list[Attempt]:
    """TCP connections that process ``pid`` and its descendants hold *now* to servers ``allow`` does not
    allow, as attempts with ``via="seen"``: detected, not refused (a program that is not Python is not
    patched). A connection opened and closed between two looks is missed; see docs/isolation.md."""
    import psutil  # a dependency of testlane; imported here so child Pythons never pay for it

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return []
    out = []
    for proc in processes:
        try:
            connections = proc.net_connections(kind="inet")
        except psutil.Error:
            continue
        for conn in connections:
            if conn.raddr and not allow.allows(str(conn.raddr.ip), int(conn.raddr.port)):
                out.append(Attempt(str(conn.raddr.ip), int(conn.raddr.port), "seen"))
    return out


# --------------------------------------------------------------------------- child Pythons

_SITECUSTOMIZE = '''\
"""Written by testlane for its template build: refuses connections to servers other than the run's."""


def _testlane_egress_guard():
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("_testlane_egress", {module!r})
    module = importlib.util.module_from_spec(spec)
    sys.modules["_testlane_egress"] = module
    spec.loader.exec_module(module)
    module.install_child_guard({private!r})


_testlane_egress_guard()
del _testlane_egress_guard
'''


def child_guard_environment(allow: Allowlist, private_dir: Path, environ: dict[str, str]) -> dict[str, str]:
    """The variables that guard every Python started with them (write the sitecustomize first).

    ``private_dir`` (0700, the caller's) receives ``sitecustomize.py``; refused attempts are appended
    to ``<private_dir>/refused.jsonl`` (read them with :func:`read_reports`). Returns ``PYTHONPATH``
    (the private dir first), :data:`ALLOW_ENV` and :data:`REPORT_ENV`."""
    (private_dir / "sitecustomize.py").write_text(
        _SITECUSTOMIZE.format(module=str(Path(__file__).resolve()), private=str(private_dir))
    )
    existing = environ.get("PYTHONPATH", "")
    # Written here, not through testlane.core.runenv.RunEnv: the sitecustomize reading them back imports this
    # module alone (module doc); tests/unit/test_layers.py allows it.
    return {
        "PYTHONPATH": str(private_dir) + (os.pathsep + existing if existing else ""),
        ALLOW_ENV: allow.to_json(),
        REPORT_ENV: str(private_dir / "refused.jsonl"),
    }


def read_reports(private_dir: Path) -> list[Attempt]:
    """The attempts child Pythons refused (see :func:`child_guard_environment`)."""
    path = private_dir / "refused.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError, TypeError):
            out.append(Attempt(**json.loads(line)))
    return out


_CHILD_SCOPES: list[contextlib.AbstractContextManager[None]] = []


def install_child_guard(private_dir: str) -> None:
    """Entry point of the child ``sitecustomize``: guard this whole process (never undone)."""
    text = os.environ.get(ALLOW_ENV)
    if not text:
        return
    allow = Allowlist.from_json(text)
    report = os.environ.get(REPORT_ENV, os.path.join(private_dir, "refused.jsonl"))
    reads = EnvironmentReads()

    def check(host: str, port: int | None, via: str) -> None:
        if allow.allows(host, port):
            return
        attempt = make_attempt(host, port, via, reads.unset)
        with contextlib.suppress(OSError), open(report, "a") as fh:
            fh.write(json.dumps(asdict(attempt)) + "\n")
        raise EgressRefusedError(
            f"testlane refused a connection to {attempt.describe()}: while the template is built, only the "
            "run's own servers may be reached (see the message testlane prints)."
        )

    for scope in (guarded(check), reads.recording()):
        scope.__enter__()
        _CHILD_SCOPES.append(scope)  # referenced for the process's life: a collected one would undo itself
    _chain_sitecustomize(private_dir)


def _chain_sitecustomize(private_dir: str) -> None:
    """Run the project's own ``sitecustomize`` too (ours shadows the first one on sys.path)."""
    import importlib.util

    paths = [p for p in sys.path if os.path.abspath(p or ".") != os.path.abspath(private_dir)]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", paths)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
