"""Migration sources: what turns an empty database into your schema, and its content hash.

Four kinds, chosen from the ``db.migrations`` setting (or given directly):

* ``sql``: a folder of ``.sql`` files applied in name order (natural order: ``2_`` before ``10_``);
* ``alembic``: an Alembic project (path to ``alembic.ini``, or to the ``script_location`` folder),
  upgraded to ``head``;
* ``metadata``: a SQLAlchemy ``MetaData`` given as ``"package.module:attribute"``; ``create_all``;
* ``callable``: ``"package.module:function"`` receiving a psycopg connection (autocommit off;
  committed after it returns).

Each source has a *fingerprint*: a hash of its contents (file bytes; the DDL a ``MetaData``
generates; the source of a callable's module). Templates and snapshots are keyed by it, so a
changed migration file rebuilds them and an unchanged one never re-runs.

Every source can apply into a *schema* (schema isolation) as well as into a whole database.
A failure raises :class:`MigrationError` naming the file, the statement and the server's error.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import logging
import os
import re
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testlane.core.errors import ConfigError, ExtensionMissingError, MigrationError, Origin, config_errors
from testlane.services.backends import undeclared_extension_hint

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "AlembicMigrations",
    "CallableMigrations",
    "MetadataMigrations",
    "MigrationSource",
    "SqlFolder",
    "Target",
    "load_object",
    "source_from_spec",
    "split_statements",
]

log = logging.getLogger("testlane")


@dataclass(frozen=True)
class Target:
    """Where migrations go: a database URL (libpq form) and optionally a schema in it."""

    url: str
    schema: str | None = None

    def connect(self, *, autocommit: bool = False) -> psycopg.Connection:
        import psycopg

        conn = psycopg.connect(self.url, autocommit=autocommit)
        if self.schema:
            from psycopg import sql

            conn.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(self.schema)))
            if not autocommit:
                conn.commit()
        return conn

    def sqlalchemy_url(self, driver: str = "psycopg") -> str:
        """The same target as a SQLAlchemy URL, with the schema on the search path."""
        from testlane.core.urls import ServiceUrl

        url = ServiceUrl.parse(self.url).for_sqlalchemy(driver)
        if self.schema:
            url = url.with_query({"options": f"-csearch_path={self.schema},public"})
        return str(url)


def _natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _hash_files(paths: Sequence[Path], root: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path.relative_to(root)).encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def load_object(spec: str, *, what: str) -> Any:
    """Import ``"package.module:attribute"`` (with the project root on sys.path)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{what} {spec!r} is not of the form 'package.module:attribute'.")
    with config_errors(
        ImportError,
        lambda exc: f"{what} {spec!r}: cannot import {module_name!r}: {exc}",
        hint="check the module path; it is imported with the project root on sys.path.",
    ):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            raise
        except Exception as exc:  # the module's settings, read at import time, lacked a variable
            missing = settings_failure(exc)
            if missing is None:
                raise
            raise ConfigError(f"{what} {spec!r}: importing {module_name!r} failed: {missing}.", hint=ENV_HINT) from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{what} {spec!r}: {module_name} has no attribute {attr!r}.") from None
    return obj


class MigrationSource(ABC):
    """Something that migrates a database (or a schema in it) and has a content fingerprint."""

    kind: str

    @abstractmethod
    def fingerprint(self) -> str:
        """A hash of the source's contents."""

    @abstractmethod
    def describe(self) -> str:
        """A short description for messages, e.g. ``sql folder migrations/ (3 files)``."""

    @abstractmethod
    def apply(self, target: Target) -> None:
        """Migrate ``target``; raise :class:`MigrationError` on failure."""

    def prepare(self) -> None:
        """Import the libraries applying this source needs (never the project's own code: that is imported
        inside the build, its environment applied), so that a build that waits for its server meanwhile does
        not import them afterwards. Best effort: an import that fails is left to the build, which says why."""

    def step_keys(self) -> list[str]:
        """The content hash of each of the source's steps, in the order they apply (one step by default).

        Together they cover what :meth:`fingerprint` covers: a template built step by step keeps a
        checkpoint after some steps (:mod:`~testlane.databases.snapshots`), and an edited step replays
        from the last checkpoint before it. Called only when a template is built."""
        return [self.fingerprint()]

    def apply_steps(self, target: Target, start: int, stop: int) -> None:
        """Apply steps ``start`` to ``stop - 1`` to ``target``, which holds steps ``0`` to ``start - 1``."""
        if (start, stop) != (0, 1):
            raise ValueError(f"{self.describe()} has one step; cannot apply steps {start}..{stop - 1}")
        self.apply(target)


# --------------------------------------------------------------------------- SQL folder


class SqlFolder(MigrationSource):
    """A folder of ``.sql`` files, applied in natural name order, each in its own transaction; or one ``.sql``
    file (``db.seed = ["tests/fixtures/seed.sql"]``, as docs/isolation.md shows)."""

    kind = "sql"

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.is_file() and path.suffix != ".sql":
            raise ConfigError(
                f"{path} is a file but not a .sql file.",
                hint="give a folder of .sql files, one .sql file, alembic.ini or 'module:object' "
                "(db.migrations, db.seed: docs/configuration.md).",
            )
        if not path.exists():
            raise ConfigError(f"migration folder {path} does not exist.", hint="check db.migrations and db.seed.")

    @property
    def _root(self) -> Path:
        return self.path if self.path.is_dir() else self.path.parent

    def files(self) -> list[Path]:
        if self.path.is_file():
            return [self.path]
        return sorted(
            (p for p in self.path.rglob("*.sql") if p.is_file()),
            key=lambda p: (
                _natural_key(p.parent.relative_to(self.path)) if p.parent != self.path else [],
                _natural_key(p),
            ),
        )

    def fingerprint(self) -> str:
        return _hash_files(self.files(), self._root)

    def describe(self) -> str:
        if self.path.is_file():
            return f"sql file {self.path}"
        return f"sql folder {self.path} ({len(self.files())} files)"

    def apply(self, target: Target) -> None:
        with target.connect() as conn:
            for path in self.files():
                apply_sql_file(conn, path)

    def step_keys(self) -> list[str]:
        """One step per file: its path in the folder and its bytes."""
        return [_hash_files([path], self._root) for path in self.files()]

    def apply_steps(self, target: Target, start: int, stop: int) -> None:
        with target.connect() as conn:
            for path in self.files()[start:stop]:
                apply_sql_file(conn, path)


def apply_sql_file(conn: psycopg.Connection, path: Path) -> None:
    """Run one SQL file in a transaction; on error, name the file, line, statement and error."""
    import psycopg

    text = path.read_text(encoding="utf-8")
    if not text.strip():
        return
    try:
        conn.execute(text.encode("utf-8"))  # bytes: no % placeholder parsing
        conn.commit()
    except psycopg.Error as exc:
        conn.rollback()
        raise migration_error(exc, source=str(path), sql_text=text) from None


def split_statements(text: str) -> list[tuple[int, str]]:
    """(offset, statement) pairs, split by sqlparse (Postgres: to point at the failing statement in a
    message; MariaDB: to run a file statement by statement)."""
    import sqlparse

    out = []
    offset = 0
    for stmt in sqlparse.split(text):
        found = text.find(stmt, offset)
        found = offset if found < 0 else found
        out.append((found, stmt))
        offset = found + len(stmt)
    return out


def _locate(text: str, position: int | None) -> tuple[int, str] | None:
    """(line of the error, statement) for the server's error position in ``text``."""
    if position is None:
        return None
    index = position - 1  # server positions are 1-based characters
    statements = split_statements(text)
    for start, stmt in statements:
        if start <= index < start + len(stmt):
            return text.count("\n", 0, index) + 1, stmt
    return None


def migration_error(
    exc: Exception, *, source: str, sql_text: str | None = None, origin: Origin | None = None
) -> MigrationError | ExtensionMissingError:
    """A :class:`MigrationError` (or ExtensionMissingError) naming source, statement and server error.

    Its root cause (``cause``, ``origin``: see :mod:`testlane.core.errors`) is the failing file and line:
    ``origin`` when the caller knows it (an Alembic revision), else ``source`` and the statement's line
    in ``sql_text``, else ``source`` alone.
    """
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) or str(exc).strip().splitlines()[0]
    parts = [f"migration failed in {source}: {primary}"]
    statement: str | None = None
    line: int | None = None
    if sql_text is not None and diag is not None:
        position = getattr(diag, "statement_position", None)
        located = _locate(sql_text, int(position) if position else None)
        if located is None:
            located = _find_failing_statement(sql_text, exc)
        if located is not None:
            line, statement = located
    if statement:
        where = f" (line {line})" if line else ""
        parts.append(f"statement{where}:\n    " + statement.strip().replace("\n", "\n    "))
    for label, attr in (("detail", "message_detail"), ("hint from the server", "message_hint")):
        value = getattr(diag, attr, None) if diag is not None else None
        if value:
            parts.append(f"{label}: {value}")
    message = "\n".join(parts)
    if origin is None:
        origin = (source, line)
    cause = f"migration {origin[0]}" + (f":{origin[1]}" if origin[1] else "")
    missing = re.search(
        r'extension "([^"]+)" is not available|could not open extension control file ".*/([^/"]+)\.control"', str(exc)
    )
    if missing:
        name = missing.group(1) or missing.group(2)
        return ExtensionMissingError(message, hint=undeclared_extension_hint(name), cause=cause, origin=origin)
    return MigrationError(
        message, hint="fix the migration; the template is rebuilt when its files change.", cause=cause, origin=origin
    )


def _find_failing_statement(text: str, exc: Exception) -> tuple[int, str] | None:
    """Without a server position, guess the failing statement from names quoted in the error."""
    names = re.findall(r'"([^"]+)"', str(exc))
    if not names:
        return None
    for start, stmt in split_statements(text):
        if all(name in stmt for name in names[:1]):
            # The line that names it: what the server would have pointed at, had it given a position.
            return text.count("\n", 0, start + stmt.index(names[0])) + 1, stmt
    return None


# --------------------------------------------------------------------------- failures that are not the migration's

ENV_HINT = (
    'give the build the variable: a line in [tool.testlane.env] (a constant, `SECRET_KEY = "test"`, or a '
    'service\'s coordinate, `DATABASE_URL = "{postgres.url}"`), which is applied to db.migrations and setup '
    "alike (docs/adopting.md). No migration needs fixing."
)
IMPORT_HINT = (
    "make what env.py imports importable in the build (the app's package installed, or its folder on sys.path "
    "via alembic.ini's prepend_sys_path), and map the variables its settings read in [tool.testlane.env] "
    "(docs/adopting.md). No migration needs fixing."
)
LOADING_HINT = (
    "usually a setting the app reads from its environment that the build does not have: map it in "
    "[tool.testlane.env] (docs/adopting.md); otherwise fix env.py. No migration ran."
)
# Exceptions settings libraries raise for a missing or invalid variable: Django's and django-environ's
# ImproperlyConfigured, python-decouple's UndefinedValueError, environs' EnvError (pydantic's
# ValidationError is recognised by its errors() below).
SETTINGS_ERRORS = ("ImproperlyConfigured", "UndefinedValueError", "EnvError", "EnvValidationError")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it was raised from or while handling, outermost first."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _read_environ(exc: BaseException) -> bool:
    """Raised by ``os.environ[name]`` (its ``__getitem__`` in os.py is on the traceback)."""
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        # os is frozen in the interpreter (its frames say "<frozen os>") unless run from source (os.py).
        if code.co_name == "__getitem__" and code.co_filename in ("<frozen os>", os.__file__):
            return True
        tb = tb.tb_next
    return False


def settings_failure(exc: BaseException) -> str | None:
    """What was missing when ``exc`` came from reading the project's environment or settings (``os.environ
    [name]``, a pydantic settings class that did not validate, Django's ImproperlyConfigured, ...), in a few
    words; None for anything else. The build has only the variables ``[tool.testlane.env]`` maps (and the
    caller's own), so such a failure is a line of configuration, not code, to fix."""
    for error in _chain(exc):
        if isinstance(error, KeyError) and _read_environ(error) and error.args:
            return f"the environment variable {error.args[0]!s} is not set"
        errors = getattr(error, "errors", None)
        if type(error).__name__ == "ValidationError" and callable(errors):
            try:
                items = list(errors())
            except Exception:  # not pydantic's after all
                items = []
            missing = [".".join(map(str, item.get("loc", ()))) for item in items if item.get("type") == "missing"]
            if missing:
                return f"the app's settings lack {', '.join(missing)} ({type(error).__qualname__})"
            if items:
                return f"the app's settings did not validate: {str(error).strip().splitlines()[0]}"
        if type(error).__name__ in SETTINGS_ERRORS:
            return f"the app's settings are incomplete ({type(error).__name__}: {error})"
    return None


# The same, in a set-up command's output: the last line of a Python traceback.
SETTINGS_FAILURE_LINE = re.compile(
    r"^(?:\S*ValidationError: .*validation error|\S*(?:" + "|".join(SETTINGS_ERRORS) + r")\b).*$", re.MULTILINE
)
ENVIRON_KEY_ERROR = re.compile(
    r'(?:<frozen os>|os\.py)", line \d+, in __getitem__\n(?:.*\n)*?KeyError: (.+)$', re.MULTILINE
)


def settings_failure_in_output(output: str) -> str | None:
    """:func:`settings_failure` for a set-up command that died of a Python traceback: its last line, or None."""
    key = ENVIRON_KEY_ERROR.search(output)
    if key:
        return f"the environment variable {key.group(1).strip().strip(chr(39))} is not set"
    line = SETTINGS_FAILURE_LINE.search(output)
    return line.group(0).strip() if line else None


# --------------------------------------------------------------------------- Alembic


@contextlib.contextmanager
def preserved_logging() -> Iterator[None]:
    """Undo what an Alembic env.py's ``fileConfig()`` does to logging (it disables existing loggers)."""
    root = logging.getLogger()
    saved_root = (root.level, list(root.handlers))
    manager = logging.Logger.manager
    saved = {
        name: (lg.level, list(lg.handlers), lg.disabled, lg.propagate)
        for name, lg in list(manager.loggerDict.items())
        if isinstance(lg, logging.Logger)
    }
    try:
        yield
    finally:
        root.setLevel(saved_root[0])
        root.handlers[:] = saved_root[1]
        for name, lg in list(manager.loggerDict.items()):
            if not isinstance(lg, logging.Logger):
                continue
            if name in saved:
                lg.level, handlers, lg.disabled, lg.propagate = saved[name]
                lg.handlers[:] = handlers
            else:
                lg.disabled = False


def _literal_revisions(files: list[Path]) -> dict[str, tuple[str | None, Path]] | None:
    """revision -> (down_revision, file) from module-level literal assignments; None when a revision file
    does not state them as plain strings (or ``None``): a merge's tuple, a computed value."""
    import ast

    found: dict[str, tuple[str | None, Path]] = {}
    for path in files:
        values: dict[str, object] = {}
        for node in ast.parse(path.read_bytes(), str(path)).body:
            target: ast.expr | None = node.target if isinstance(node, ast.AnnAssign) else None
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target = node.targets[0]
            value = getattr(node, "value", None)
            if isinstance(target, ast.Name) and target.id in ("revision", "down_revision") and value is not None:
                values[target.id] = ast.literal_eval(value)
        if "revision" not in values:
            if path.name.startswith("_"):
                continue  # __init__.py and helpers beside the revisions
            return None
        revision, down = values["revision"], values.get("down_revision")
        if not isinstance(revision, str) or not (down is None or isinstance(down, str)) or revision in found:
            return None
        found[revision] = (down, path)
    return found


def script_location_from_ini(ini: Path) -> Path:
    """The ``script_location`` an ``alembic.ini`` names (relative to the ini's folder, or ``%(here)s``)."""
    import configparser

    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(ini)
    except configparser.Error:
        return ini.parent / "alembic"
    location = parser.get("alembic", "script_location", fallback="alembic")
    location = location.replace("%(here)s", str(ini.parent))
    path = Path(location)
    return path if path.is_absolute() else ini.parent / path


def ini_candidates(folder: Path, root: Path | None) -> list[Path]:
    """Where an Alembic project keeps the ``alembic.ini`` of ``folder``: the folder's parent, the folders
    above it up to the project root, the project root."""
    places = [folder.parent]
    if root is not None:
        resolved_root = root.resolve()
        for parent in folder.resolve().parents:
            if resolved_root not in (parent, *parent.parents):
                break
            places.append(parent)
        places.append(root)
    seen: set[Path] = set()
    out = []
    for place in places:
        if place.resolve() not in seen:
            seen.add(place.resolve())
            out.append(place / "alembic.ini")
    return out


def ini_for_folder(folder: Path, root: Path | None) -> Path | None:
    """The ``alembic.ini`` whose ``script_location`` resolves to ``folder`` (see :func:`ini_candidates`)."""
    target = folder.resolve()
    for ini in ini_candidates(folder, root):
        if ini.is_file() and script_location_from_ini(ini).resolve() == target:
            return ini
    return None


def _env_needs_ini(exc: BaseException, source: AlembicMigrations) -> bool:
    """Did ``exc`` come from an env.py that reads ``config.config_file_name`` (which is None without an ini)?"""
    env_py = source.script_location / "env.py"
    try:
        if "config_file_name" not in env_py.read_text(encoding="utf-8"):
            return False
    except OSError:
        return False
    names = {str(env_py), str(env_py.resolve())}
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename in names:
            return True
        tb = tb.tb_next
    return False


class AlembicMigrations(MigrationSource):
    """An Alembic project upgraded to ``head`` (or ``revision``)."""

    kind = "alembic"

    def __init__(self, path: Path, *, revision: str = "head", root: Path | None = None) -> None:
        self.revision = revision
        self._root = root
        if path.is_dir() and (path / "alembic.ini").is_file():
            path = path / "alembic.ini"
        if path.is_file():
            self.ini: Path | None = path
            self.script_location = script_location_from_ini(path)
        elif path.is_dir() and (path / "env.py").is_file():
            # The folder given, not its ini: the project's ini is still what `alembic` itself would use (its
            # env.py may read config.config_file_name: fileConfig(), the fastapi template's assert).
            self.ini = ini_for_folder(path, root)
            self.script_location = path
        else:
            raise ConfigError(
                f"{path} is neither an alembic.ini nor an Alembic script folder (with env.py).",
                hint="point db.migrations at alembic.ini or at the folder holding env.py and versions/.",
            )

    def _files(self) -> list[Path]:
        return sorted(
            p
            for p in self.script_location.rglob("*")
            if p.is_file() and p.suffix in (".py", ".sql") and "__pycache__" not in p.parts
        )

    def fingerprint(self) -> str:
        digest = hashlib.sha256(_hash_files(self._files(), self.script_location).encode())
        if self.ini is not None:
            digest.update(self.ini.read_bytes())
        digest.update(self.revision.encode())
        return digest.hexdigest()

    def chain(self) -> list[tuple[str, Path]] | None:
        """(revision, file) from the first revision to the target one, or None when the history is not
        one straight line (branches, merges, several heads) or cannot be read: then it is one step.

        Read from the revision files' text (``revision`` and ``down_revision`` as literal assignments), not
        by importing them: a revision file may import the project's settings, which, imported before the
        build applies ``[tool.testlane.env]``, would keep the values they found (found on mealie: its
        settings then named a SQLite file, and env.py migrated that). Alembic itself loads the files only
        inside the build, with the mapping applied. Anything the text does not say plainly: one step.
        """
        try:
            revisions = _literal_revisions(self._version_files())
        except (OSError, SyntaxError, ValueError) as exc:
            log.debug("alembic history of %s read as one step: %s", self.script_location, exc)
            return None
        if not revisions:
            return None
        children: dict[str | None, list[str]] = {}
        for revision, (down, _path) in revisions.items():
            children.setdefault(down, []).append(revision)
        if any(len(kids) > 1 for kids in children.values()) or len(children.get(None, [])) != 1:
            return None  # a branch point, or not one base
        order = [children[None][0]]
        while order[-1] in children:
            order.append(children[order[-1]][0])
        if len(order) != len(revisions):
            return None  # a revision whose parent is missing
        if self.revision not in ("head", "heads"):
            matches = [i for i, rev in enumerate(order) if rev == self.revision]
            if len(matches) != 1:
                return None  # a prefix, a relative or branch name: left to Alembic, one step
            order = order[: matches[0] + 1]
        return [(rev, revisions[rev][1]) for rev in order]

    def _version_files(self) -> list[Path]:
        """The revision files: ``version_locations`` of the ini when set, else ``<script_location>/versions``."""
        locations = [self.script_location / "versions"]
        if self.ini is not None:
            import configparser

            parser = configparser.ConfigParser(interpolation=None)
            parser.read(self.ini)
            raw = parser.get("alembic", "version_locations", fallback="")
            if raw.strip():
                separator = parser.get("alembic", "version_path_separator", fallback="")
                splits = {"os": os.pathsep, "colon": ":", "semicolon": ";", "newline": "\n"}
                parts = raw.split(splits.get(separator))
                here = str(self.ini.parent)
                found = [Path(part.strip().replace("%(here)s", here)) for part in parts if part.strip()]
                locations = [loc if loc.is_absolute() else self.ini.parent / loc for loc in found]
        return sorted(p for loc in locations for p in loc.rglob("*.py") if "__pycache__" not in p.parts)

    def step_keys(self) -> list[str]:
        """One step per revision: its file, plus everything else in the project (env.py, the ini, the
        target revision) in every step, so a change there replays them all."""
        chain = self.__dict__.get("_chain") or self.chain()
        if chain is None:
            return [self.fingerprint()]
        self.__dict__["_chain"] = chain
        revision_files = {path.resolve() for _, path in chain}
        others = [p for p in self._files() if p.resolve() not in revision_files]
        context = hashlib.sha256(_hash_files(others, self.script_location).encode())
        if self.ini is not None:
            context.update(self.ini.read_bytes())
        context.update(self.revision.encode())
        common = context.hexdigest()
        keys = []
        for revision, path in chain:
            keys.append(hashlib.sha256(f"{common}|{revision}|{_hash_files([path], path.parent)}".encode()).hexdigest())
        return keys

    def apply_steps(self, target: Target, start: int, stop: int) -> None:
        """``alembic upgrade`` to the revision of step ``stop - 1`` (from the one ``target`` is stamped at)."""
        chain = self.__dict__.get("_chain")
        if chain is None:
            super().apply_steps(target, start, stop)
            return
        script = self.__dict__.get("_script")
        if script is None:  # loaded here, inside the build (the env mapping applied), once for every step
            from alembic.script import ScriptDirectory

            with preserved_logging():
                script = self.__dict__["_script"] = ScriptDirectory.from_config(self._config(None))
        self._upgrade(target, self.revision if stop == len(chain) else chain[stop - 1][0], script)

    def _config(self, url: str | None) -> Any:
        from alembic.config import Config

        cfg = Config(str(self.ini)) if self.ini else Config()
        cfg.set_main_option("script_location", str(self.script_location))
        if url is not None:
            cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
        return cfg

    def describe(self) -> str:
        return f"alembic project {self.ini or self.script_location} (to {self.revision})"

    def apply(self, target: Target) -> None:
        self._upgrade(target, self.revision)

    def prepare(self) -> None:
        # Alembic and SQLAlchemy: 0.3-0.7 s of a build after an edit on this machine (bench/migration_edit.py)
        for module in ("sqlalchemy", "alembic.command", "alembic.script", "alembic.runtime.environment"):
            with contextlib.suppress(ImportError):
                importlib.import_module(module)

    def _upgrade(self, target: Target, revision: str, script: Any = None) -> None:
        """``alembic upgrade revision``; with ``script`` (a loaded ScriptDirectory), as ``command.upgrade``
        does but without loading every revision file again (a build step by step upgrades several times)."""
        try:
            from alembic import command
        except ImportError:
            raise ConfigError(
                "db.migrations points at an Alembic project but Alembic is not installed.",
                hint="pip install 'testlane[sqlalchemy]' (or alembic and sqlalchemy).",
            ) from None
        import sqlalchemy

        url = target.sqlalchemy_url()
        cfg = self._config(url)
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.begin() as connection, preserved_logging():
                cfg.attributes["connection"] = connection  # for env.py files that share a connection
                if target.schema:
                    cfg.attributes["schema"] = target.schema
                if script is not None and hasattr(script, "_upgrade_revs"):
                    _upgrade_with(script, cfg, revision)
                else:
                    command.upgrade(cfg, revision)
        except ConfigError:
            raise
        except Exception as exc:
            if self.ini is None and _env_needs_ini(exc, self):
                raise self._ini_missing(exc) from None
            raise alembic_error(exc, self) from None
        finally:
            engine.dispose()
        self._check_applied(target)

    def _ini_missing(self, exc: BaseException) -> ConfigError:
        looked = ", ".join(str(p) for p in ini_candidates(self.script_location, self._root))
        what = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
        return ConfigError(
            f"db.migrations names the Alembic folder {self.script_location}, and its env.py needs an ini file "
            f"(it reads config.config_file_name, which is None without one): {what}. No alembic.ini whose "
            f"script_location is that folder was found (looked for {looked}).",
            hint='point db.migrations at the project\'s alembic.ini (db.migrations = "alembic.ini"), whose '
            "script_location names the folder.",
        )

    def _check_applied(self, target: Target) -> None:
        with target.connect(autocommit=True) as conn:
            row = conn.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone()
        if not (row and row[0]):
            raise MigrationError(
                f"alembic ran ({self.describe()}) but the target database has no alembic_version table: "
                "the project's env.py probably connected to another database (for example one named by an "
                "environment variable such as DATABASE_URL) instead of the URL testlane gave it.",
                hint="make env.py use config.get_main_option('sqlalchemy.url') or "
                "config.attributes['connection'], or map your variable in [tool.testlane.env].",
            )


def _upgrade_with(script: Any, cfg: Any, revision: str) -> None:
    from alembic.runtime.environment import EnvironmentContext

    def upgrade(rev: Any, context: Any) -> Any:
        return script._upgrade_revs(revision, rev)

    with EnvironmentContext(cfg, script, fn=upgrade, as_sql=False, starting_rev=None, destination_rev=revision):
        script.run_env()


def alembic_error(exc: Exception, source: AlembicMigrations) -> MigrationError | ExtensionMissingError:
    """Find the revision file and the driver error in an Alembic failure.

    A failure while Alembic loads its environment (env.py, the app's settings and models it imports, a
    revision file's imports) is not a migration's: it says so, and names ``[tool.testlane.env]`` when a
    variable or setting was missing (mealie: env.py's settings lacked a variable; "fix the migration" sent
    the user to the wrong file)."""
    tb = exc.__traceback__
    origin: Origin | None = None
    in_revision = False  # a revision's upgrade()/downgrade() was running, not a file being imported
    folder = source.ini.parent if source.ini else source.script_location.parent
    projects = tuple({f"{folder}/", f"{folder.resolve()}/"})  # as given (alembic's %(here)s) and resolved

    def own(filename: str) -> bool:  # the project's code (env.py, revisions, the app), not a library's
        return filename.startswith(projects) and "site-packages" not in filename

    deepest: Origin | None = None  # the project's own frame nearest the raise (env.py, the app's settings)
    raised_in_project = False
    while tb is not None:
        code = tb.tb_frame.f_code
        filename = code.co_filename
        if str(source.script_location) in filename and "env.py" not in filename:
            origin = (filename, tb.tb_lineno)
            in_revision = in_revision or code.co_name != "<module>"
        if own(filename):
            deepest = (filename, tb.tb_lineno)
        raised_in_project = own(filename)
        tb = tb.tb_next
    orig = getattr(exc, "orig", None)
    missing = settings_failure(exc)
    importing = isinstance(exc, ImportError)
    # An error Alembic itself raises (a missing revision, two heads) is the history's: not this case.
    if orig is None and (missing or importing or (raised_in_project and not in_revision)):
        where = f"{deepest[0]}:{deepest[1]}" if deepest else str(source.script_location)
        what = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
        if in_revision and origin is not None:
            head = f"migration {origin[0]}:{origin[1]} failed reading the app's environment or settings, not in SQL"
        else:
            head = (
                "Alembic failed loading its environment (env.py and what it imports, such as the app's "
                f"settings), before any migration ran, at {where}"
            )
        return MigrationError(
            f"{head}: " + (f"{missing}.\n{what}" if missing else what),
            hint=ENV_HINT if missing else IMPORT_HINT if importing else LOADING_HINT,
            cause=f"alembic environment {where}",
            origin=deepest,
        )
    statement = getattr(exc, "statement", None)
    where = f"{origin[0]}:{origin[1]}" if origin else str(source.script_location)
    if orig is not None:
        err = migration_error(orig, source=where, origin=origin or (where, None))
        if statement:
            err.message += "\nstatement:\n    " + str(statement).strip().replace("\n", "\n    ")
            err.args = (err.message,)
        return err
    return MigrationError(
        f"migration failed in {where}: {type(exc).__name__}: {exc}",
        hint="fix the migration; the template is rebuilt when its files change.",
        cause=f"migration {where}",
        origin=origin,
    )


# --------------------------------------------------------------------------- SQLAlchemy metadata


class MetadataMigrations(MigrationSource):
    """A SQLAlchemy ``MetaData``: ``create_all``; fingerprinted by the DDL it generates."""

    kind = "metadata"

    def __init__(self, spec: str, metadata: Any = None) -> None:
        self.spec = spec
        self._metadata = metadata

    @property
    def metadata(self) -> Any:
        if self._metadata is None:
            self._metadata = load_object(self.spec, what="db.migrations")
        return self._metadata

    def ddl(self) -> list[str]:
        from sqlalchemy.dialects import postgresql
        from sqlalchemy.schema import CreateIndex, CreateTable

        dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
        out = []
        for table in self.metadata.sorted_tables:
            out.append(str(CreateTable(table).compile(dialect=dialect)))
            out.extend(str(CreateIndex(index).compile(dialect=dialect)) for index in table.indexes)
        return out

    def fingerprint(self) -> str:
        return hashlib.sha256("\n".join(self.ddl()).encode()).hexdigest()

    def describe(self) -> str:
        return f"SQLAlchemy metadata {self.spec} ({len(self.metadata.tables)} tables)"

    def apply(self, target: Target) -> None:
        import sqlalchemy

        engine = sqlalchemy.create_engine(target.sqlalchemy_url(), poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.begin() as connection:
                if target.schema:
                    connection = connection.execution_options(schema_translate_map={None: target.schema})
                self.metadata.create_all(connection)
        except Exception as exc:
            orig = getattr(exc, "orig", None)
            raise migration_error(orig or exc, source=self.describe()) from None
        finally:
            engine.dispose()


# --------------------------------------------------------------------------- callable


class CallableMigrations(MigrationSource):
    """A Python function that receives a psycopg connection (committed after it returns)."""

    kind = "callable"

    def __init__(self, spec: str, func: Callable[[Any], Any] | None = None) -> None:
        self.spec = spec
        self._func = func

    @property
    def func(self) -> Callable[[Any], Any]:
        if self._func is None:
            func = load_object(self.spec, what="db.migrations")
            if not callable(func):
                raise ConfigError(f"db.migrations {self.spec!r} is not callable.")
            self._func = func
        return self._func

    def fingerprint(self) -> str:
        digest = hashlib.sha256(self.spec.encode())
        module = sys.modules.get(getattr(self.func, "__module__", "") or "")
        try:
            digest.update(inspect.getsource(module or self.func).encode())
        except (OSError, TypeError):
            digest.update(repr(self.func).encode())
        return digest.hexdigest()

    def describe(self) -> str:
        return f"callable {self.spec}"

    def apply(self, target: Target) -> None:
        import psycopg

        with target.connect() as conn:
            try:
                self.func(conn)
                conn.commit()
            except psycopg.Error as exc:
                conn.rollback()
                raise migration_error(exc, source=self.describe()) from None


# --------------------------------------------------------------------------- choosing


def source_from_spec(spec: str | Path | Any, *, root: Path, kind: str = "auto") -> MigrationSource:
    """Build a source from a setting value (path, ``module:attr``) or an object (MetaData, callable)."""
    if isinstance(spec, MigrationSource):
        return spec
    if not isinstance(spec, str | Path):
        if hasattr(spec, "sorted_tables"):
            return MetadataMigrations(f"{getattr(spec, '__module__', 'metadata')}:<object>", spec)
        if callable(spec):
            name = f"{getattr(spec, '__module__', '?')}:{getattr(spec, '__qualname__', '?')}"
            return CallableMigrations(name, spec)
        raise ConfigError(f"cannot use {spec!r} as a migration source.")
    text = str(spec)
    looks_like_object = ":" in text and not Path(text).exists() and re.match(r"^[\w.]+:[\w.]+$", text)
    if kind in ("metadata", "callable") or (kind == "auto" and looks_like_object):
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
        if kind == "callable":
            return CallableMigrations(text)
        obj = load_object(text, what="db.migrations")
        if kind == "metadata" or hasattr(obj, "sorted_tables"):
            return MetadataMigrations(text, obj)
        if callable(obj):
            return CallableMigrations(text, obj)
        raise ConfigError(f"db.migrations {text!r} is neither a SQLAlchemy MetaData nor a callable.")
    path = Path(text).expanduser()
    path = path if path.is_absolute() else root / path
    if kind == "alembic" or (
        kind == "auto"
        and (path.name.endswith(".ini") or (path / "alembic.ini").is_file() or (path / "env.py").is_file())
    ):
        return AlembicMigrations(path, root=root)
    if kind in ("sql", "auto"):
        if not path.exists():
            raise ConfigError(
                f"db.migrations: {path} does not exist.",
                hint="give a folder of .sql files, one .sql file, an alembic.ini, or 'package.module:metadata'.",
            )
        folder = SqlFolder(path)
        if not folder.files():
            raise _not_sql(path, root)
        return folder
    raise ConfigError(f"unknown migration kind {kind!r}.")


# A module-level `revision = "..."` / `down_revision = ...`: what makes a .py file an Alembic revision.
REVISION_LINE = re.compile(r"^(?:down_)?revision\s*(?::[^=]*)?=", re.MULTILINE)


def _not_sql(path: Path, root: Path) -> ConfigError:
    """A folder read as SQL files has none: an empty template, found only later as a missing table.

    fastapi template: ``db.migrations = "app/alembic/versions"`` built an empty schema and the seed failed
    with ``relation "user" does not exist``. A folder of Alembic revisions names the ini or folder to use."""

    def shown(p: Path) -> str:
        return str(p.relative_to(root)) if p.is_relative_to(root) else str(p)

    revisions = [
        p
        for p in sorted(path.rglob("*.py"))
        if "__pycache__" not in p.parts and REVISION_LINE.search(p.read_text(encoding="utf-8", errors="replace"))
    ]
    if revisions:
        alembic_folder = path.parent if (path.parent / "env.py").is_file() else None
        ini = ini_for_folder(alembic_folder, root) if alembic_folder else None
        if ini is None and (root / "alembic.ini").is_file():
            ini = root / "alembic.ini"
        use = shown(ini) if ini else shown(alembic_folder) if alembic_folder else "alembic.ini"
        what = "the project's alembic.ini" if ini or not alembic_folder else "the Alembic folder (holding env.py)"
        return ConfigError(
            f"db.migrations: {shown(path)} holds Alembic revision files ({len(revisions)} .py with revision =), "
            "no .sql files: read as a folder of SQL files, it would build an empty schema.",
            hint=f'point db.migrations at {what}: db.migrations = "{use}".',
        )
    return ConfigError(
        f"db.migrations: {shown(path)} holds no .sql files: the template would be an empty database.",
        hint="point db.migrations at a folder of .sql files, an alembic.ini (or the Alembic folder), or "
        "'package.module:metadata'; leave it unset for an empty database.",
    )
