"""``setup = [...]``: the project's own set-up commands, as a migration source.

An existing project already knows how to prepare its database: ``alembic upgrade head``, then
``python app/initial_data.py``. testlane runs those commands, in order, from the project root, with the
project's mapped environment (``[tool.testlane.env]``) pointing at the database being prepared — the
template, when per-test isolation is on — so what they produce (schema and seed data) is in every test's
database. Their output is shown only when one fails, with the command and its exit code.

The template's hash covers the commands and the files they read: ``setup_inputs``, or by default the
Alembic folder (from alembic.ini), ``alembic/`` or ``migrations/``, and every file a command names.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

from testlane.core.config import Settings
from testlane.core.errors import ExtensionMissingError, MigrationError
from testlane.databases.migrations import AlembicMigrations, MigrationSource, Target
from testlane.services.env_mapping import render_mapping
from testlane.services.instance import Instance
from testlane.services.postgres import PostgresServer

__all__ = ["SetupCommands"]

MISSING_EXTENSION = re.compile(r'extension "([^"]+)" is not available|extension control file ".*/([^/"]+)\.control"')


class SetupCommands(MigrationSource):
    """Run the project's set-up commands against the target database."""

    kind = "setup"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.commands = list(settings.setup)
        self.root = settings.project_root

    def inputs(self) -> list[Path]:
        """The files whose contents the commands' result depends on."""
        if self.settings.setup_inputs:
            named = [self.settings.resolve_path(p) for p in self.settings.setup_inputs]
        else:
            named = []
            ini = self.root / "alembic.ini"
            if ini.is_file():
                named += [ini, AlembicMigrations(ini).script_location]
            named += [self.root / name for name in ("alembic", "migrations") if (self.root / name).is_dir()]
            for command in self.commands:
                for token in shlex.split(command):
                    candidate = self.root / token
                    if not token.startswith("-") and candidate.is_file():
                        named.append(candidate)
        files: list[Path] = []
        for path in dict.fromkeys(named):
            if path.is_dir():
                files += sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
            elif path.is_file():
                files.append(path)
        return files

    def fingerprint(self) -> str:
        digest = hashlib.sha256("\n".join(self.commands).encode())
        for path in self.inputs():
            digest.update(str(path.relative_to(self.root) if path.is_relative_to(self.root) else path).encode())
            digest.update(path.read_bytes())
        return digest.hexdigest()

    def describe(self) -> str:
        return f"set-up commands ({'; '.join(self.commands)})"

    def environment(self, target: Target) -> dict[str, str]:
        """The mapped environment pointing at ``target`` (only Postgres runs while a template is built)."""
        parts = urlsplit(target.url)
        instance = Instance(
            run_id="setup",
            name="postgres",
            engine="postgres",
            backend="url",
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 5432,
            user=unquote(parts.username or "postgres"),
            password=unquote(parts.password) if parts.password else None,
            database=parts.path.lstrip("/"),
        )
        server = PostgresServer(instance, owned=False)
        env = dict(os.environ)
        # The environment testlane itself runs in: `alembic`, `python` are this interpreter's, even when the
        # virtualenv is not activated (testlane invoked by path, from a Makefile, by an agent).
        bin_dir = str(Path(sys.executable).parent)
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
        env.update(server.env())
        env["TESTLANE_POSTGRES_URL"] = target.url
        env.update(render_mapping(self.settings.env, {"postgres": server}, only_available=True))
        return env

    def apply(self, target: Target) -> None:
        env = self.environment(target)
        for command in self.commands:
            proc = subprocess.run(
                command,
                shell=True,
                cwd=self.root,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                check=False,
            )
            if proc.returncode == 0:
                continue
            tail = "\n".join(proc.stdout.splitlines()[-30:])
            message = (
                f"set-up command `{command}` failed with exit code {proc.returncode} (run from {self.root})."
                f"\n--- its output (last lines) ---\n{tail}\n---"
            )
            missing = MISSING_EXTENSION.search(proc.stdout)
            if missing:
                name = missing.group(1) or missing.group(2)
                raise ExtensionMissingError(
                    message,
                    hint=f"the PostgreSQL binaries in use do not ship the {name!r} extension. Declare it "
                    f'(extensions = ["{name}"] in [tool.testlane]) so `auto` picks binaries that have it, or use '
                    'postgres.backend = "local" with a PostgreSQL that has it (Debian: postgresql-contrib).',
                )
            raise MigrationError(
                message,
                hint="fix the command, or run it by hand with the same environment "
                '(`testlane services start`, then `eval "$(testlane services env)"`).',
            )
