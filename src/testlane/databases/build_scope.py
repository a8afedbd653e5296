"""What migrations and set-up commands run under while a template (or a test's schema) is built.

Two things, the same for every kind of migration source (``db.migrations`` applied in testlane's own
process, ``setup`` commands in child processes):

* **the environment**: ``[tool.testlane.env]`` rendered for the database being built, plus libpq's
  ``PGHOST``/``PGPORT``/``PGUSER``/``PGDATABASE`` (``PGPASSWORD``) and ``TESTLANE_POSTGRES_*``
  (:func:`build_environment`). In-process sources see it in ``os.environ`` for the duration of the
  build; set-up commands get it as their environment. An Alembic ``env.py`` that reads
  ``DATABASE_URL`` therefore finds the template's URL when ``DATABASE_URL`` is mapped.
* **the guard**: a connection to any server other than the one the template is being built on is
  refused *before anything is sent* (:mod:`testlane.services.egress`), in this process and in every
  Python a set-up command starts. A refusal becomes :class:`UnsafeDatabaseError` naming the host:port
  tried and the variable to map, whatever the migration did with the error.

Programs that are not Python (``psql``, a shell script's ``curl``) are not patched: they get the
environment above (so libpq's defaults point at the template), and docs/isolation.md says so.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path

from testlane.core.errors import UnsafeDatabaseError
from testlane.core.urls import ServiceUrl
from testlane.databases.migrations import MigrationSource, Target
from testlane.services.egress import (
    Allowlist,
    Attempt,
    EgressRefusedError,
    EnvironmentReads,
    child_guard_environment,
    guarded,
    make_attempt,
    read_reports,
)
from testlane.services.env_mapping import render_mapping
from testlane.services.instance import Instance
from testlane.services.postgres import PostgresServer

__all__ = ["BuildScope", "build_environment", "build_scope", "current_scope"]

_current: ContextVar[BuildScope | None] = ContextVar("testlane_build_scope", default=None)


def _server_for(target: Target) -> PostgresServer:
    url = ServiceUrl.parse(target.url)
    instance = Instance(
        run_id="setup",
        name="postgres",
        engine="postgres",
        backend="url",
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user=url.user or "postgres",
        password=url.password or None,
        database=url.database or "",
    )
    return PostgresServer(instance, owned=False)


def build_environment(mapping: Mapping[str, str], target: Target) -> dict[str, str]:
    """The variables migrations and set-up commands see: ``mapping`` (``[tool.testlane.env]``)
    rendered for ``target``'s database (services other than Postgres left out: only it runs while a
    template is built), libpq's ``PG*`` and ``TESTLANE_POSTGRES_*`` pointing at ``target``."""
    server = _server_for(target)
    inst = server.instance
    env = dict(server.env())
    env["TESTLANE_POSTGRES_URL"] = target.url
    env.update({"PGHOST": inst.host, "PGPORT": str(inst.port), "PGUSER": server.user})
    env["PGDATABASE"] = inst.database or "postgres"
    if inst.password:
        env["PGPASSWORD"] = inst.password
    env.update(render_mapping(mapping, {"postgres": server}, only_available=True))
    return env


class BuildScope:
    """One build's environment and guard (see module doc); get it from :func:`build_scope`."""

    def __init__(self, target: Target, mapping: Mapping[str, str], socket_dir: str | None) -> None:
        url = ServiceUrl.parse(target.url)
        host, port = url.host or "127.0.0.1", url.port or 5432
        endpoints = {(host, port): None}
        # A socket-level client (asyncpg, pg8000) connects to the resolved address, not the name: allow both.
        with contextlib.suppress(OSError):
            for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
                endpoints[(str(info[4][0]), port)] = None
        self.mapping = dict(mapping)
        self.allow = Allowlist(endpoints=tuple(endpoints), socket_dirs=(socket_dir,) if socket_dir else ())
        self.environment = build_environment(mapping, target)
        self.attempts: list[Attempt] = []
        self.reads = EnvironmentReads()

    @property
    def allowed(self) -> str:
        host, port = self.allow.endpoints[0]
        return f"{host}:{port}"

    def check(self, host: str, port: int | None, via: str) -> None:
        """The in-process guard's check: record and refuse what is not allowed."""
        if self.allow.allows(host, port):
            return
        attempt = make_attempt(host, port, via, self.reads.unset)
        self.attempts.append(attempt)
        raise EgressRefusedError(f"testlane refused a connection to {attempt.describe()} during the template build")

    def apply(self, source: MigrationSource, target: Target, steps: tuple[int, int] | None = None) -> None:
        """``source.apply(target)`` (``steps``: ``source.apply_steps(target, *steps)``); a refused connection
        becomes :class:`UnsafeDatabaseError`, whatever error the source raised (or swallowed) because of it."""
        before = len(self.attempts)
        try:
            if steps is None:
                source.apply(target)
            else:
                source.apply_steps(target, *steps)
        except UnsafeDatabaseError:
            raise
        except BaseException:
            if len(self.attempts) > before:
                raise self.refusal(self.attempts[before:], source.describe()) from None
            raise
        if len(self.attempts) > before:
            raise self.refusal(self.attempts[before:], source.describe())

    def refusal(self, attempts: list[Attempt], what: str) -> UnsafeDatabaseError:
        """The one message for a refused connection: where it went, and which variable to map."""
        attempt = next((a for a in attempts if a.via == "seen"), attempts[0])
        if attempt.via == "seen":
            message = (
                f"while building the template, {what} connected to {attempt.describe()}, which is not a "
                f"server of this run (the template is on {self.allowed}). A program that is not Python cannot "
                "be refused, only seen: that server may have received statements. The build was stopped."
            )
        else:
            message = (
                f"while building the template, {what} tried to connect to {attempt.describe()}, which is not a "
                f"server of this run (the template is on {self.allowed}). testlane refused the connection "
                "before anything was sent: that server was not touched."
            )
        pointing = [v for v in attempt.pointing if v not in self.mapping]
        unset = [v for v in attempt.unset if v not in self.mapping]
        variable = (pointing or unset or [""])[0]
        if pointing:
            message += (
                f"\n{', '.join(pointing)} in your environment point{'s' if len(pointing) == 1 else ''} there and "
                f"{'is' if len(pointing) == 1 else 'are'} not mapped in [tool.testlane.env]."
            )
        elif unset:
            message += (
                f"\nThe code read {', '.join(unset)}, which {'is' if len(unset) == 1 else 'are'} not set and not "
                "mapped in [tool.testlane.env], and fell back to a default that names that server."
            )
        example = f'{variable} = "{{postgres.url}}"' if variable else 'DATABASE_URL = "{postgres.url}"'
        hint = (
            f"map the variable your migrations read in [tool.testlane.env], e.g. {example} "
            '("{postgres.url:psycopg}" for a SQLAlchemy URL, or {postgres.host}, {postgres.port}, ... for '
            "separate variables); migrations and set-up commands get that mapping. See docs/isolation.md."
        )
        # The template's root cause (the server started; its build was stopped): reports and verdicts say so.
        return UnsafeDatabaseError(message, hint=hint, cause=f"template {what}")

    @contextlib.contextmanager
    def child_environment(self) -> Iterator[tuple[dict[str, str], Path]]:
        """The environment of a set-up command and the private directory its guard reports to.

        The current environment, testlane's interpreter's directory first on ``PATH`` (so ``alembic``
        and ``python`` are the ones testlane runs in, even from an unactivated virtualenv), the build
        environment, and the child guard. The directory is removed afterwards."""
        private = Path(tempfile.mkdtemp(prefix="testlane-build-"))
        try:
            # Wholesale: a set-up command (alembic, manage.py) needs the user's whole environment; the run's
            # own variables are the ones the tests see too.
            env = dict(os.environ)
            env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
            env.update(self.environment)
            env.update(child_guard_environment(self.allow, private, env))
            yield env, private
        finally:
            shutil.rmtree(private, ignore_errors=True)

    def child_refusals(self, private: Path) -> list[Attempt]:
        """What the guard refused in the Pythons a set-up command started (also recorded here)."""
        found = read_reports(private)
        (private / "refused.jsonl").unlink(missing_ok=True)
        self.attempts.extend(found)
        return found


def current_scope() -> BuildScope | None:
    """The scope of the build in progress in this context, if any."""
    return _current.get()


@contextlib.contextmanager
def build_scope(target: Target, mapping: Mapping[str, str], *, socket_dir: str | None = None) -> Iterator[BuildScope]:
    """Run the block with the build environment in ``os.environ`` and the guard on (see module doc).

    ``target`` is the database being built; its server (``host:port``, and ``socket_dir``) is the only
    one reachable. Nested use reuses the outer scope."""
    outer = _current.get()
    if outer is not None:
        yield outer
        return
    scope = BuildScope(target, mapping, socket_dir)
    saved = {key: os.environ.get(key) for key in scope.environment}
    os.environ.update(scope.environment)
    token = _current.set(scope)
    try:
        with guarded(scope.check), scope.reads.recording():
            yield scope
    finally:
        _current.reset(token)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
