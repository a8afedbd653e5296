"""``setup = [...]``: the project's own set-up commands, as a migration source.

An existing project already knows how to prepare its database: ``alembic upgrade head``, then
``python app/initial_data.py``. testlane runs those commands, in order, from the project root, with the
project's mapped environment (``[tool.testlane.env]``) pointing at the database being prepared — the
template, when per-test isolation is on — so what they produce (schema and seed data) is in every test's
database. Their output is shown only when one fails, with the command and its exit code. The environment
and the guard that refuses connections to any other server are :mod:`testlane.databases.build_scope`'s,
the same as for ``db.migrations``.

The template's hash covers the commands and the files they read: ``setup_inputs``, or by default the
Alembic folder (from alembic.ini), ``alembic/`` or ``migrations/``, and every file a command names.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import re
import shlex
import subprocess
from pathlib import Path

from testlane.core.config import Settings
from testlane.core.errors import ExtensionMissingError, MigrationError
from testlane.databases.migrations import (
    ENV_HINT,
    AlembicMigrations,
    MigrationSource,
    Target,
    settings_failure_in_output,
)
from testlane.services.backends import undeclared_extension_hint
from testlane.services.egress import Allowlist, Attempt, foreign_connections, pointing_variables

__all__ = ["SetupCommands"]

# How often a running set-up command's process tree is looked at for connections to foreign servers
# (programs that are not Python cannot be refused, only seen; a psutil look costs well under 1 ms).
WATCH_INTERVAL = 0.02

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
                tokens = shlex.split(command)
                for token in tokens:
                    candidate = self.root / token
                    if not token.startswith("-") and candidate.is_file():
                        named.append(candidate)
                named += self._module_packages(tokens)
        files: list[Path] = []
        for path in dict.fromkeys(named):
            if path.is_dir():
                files += sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
            elif path.is_file():
                files.append(path)
        return files

    def _module_packages(self, tokens: list[str]) -> list[Path]:
        """For ``python -m pkg.module``: the project's top-level package ``pkg`` (at the root or under ``src/``),
        whole — the module runs the project's code (``app.initial_data`` seeds through ``app.core.db``), so any
        file of it may change what the command writes."""
        found: list[Path] = []
        for flag, module in itertools.pairwise(tokens):
            if flag != "-m":
                continue
            top = module.split(".")[0]
            for base in (self.root, self.root / "src"):
                if (base / top).is_dir():
                    found.append(base / top)
                elif (base / f"{top}.py").is_file():
                    found.append(base / f"{top}.py")
        return found

    def fingerprint(self) -> str:
        digest = hashlib.sha256("\n".join(self.commands).encode())
        for path in self.inputs():
            digest.update(str(path.relative_to(self.root) if path.is_relative_to(self.root) else path).encode())
            digest.update(path.read_bytes())
        return digest.hexdigest()

    def describe(self) -> str:
        return f"set-up commands ({'; '.join(self.commands)})"

    def apply(self, target: Target) -> None:
        from testlane.databases.build_scope import build_scope, current_scope

        outer = current_scope()
        with contextlib.ExitStack() as stack:
            scope = outer or stack.enter_context(build_scope(target, self.settings.env))
            env, private = stack.enter_context(scope.child_environment())
            for command in self.commands:
                failure, seen = self._run(command, env, scope.allow)
                refused = scope.child_refusals(private) + seen
                if refused:  # whatever the exit code: the command may have swallowed the error
                    raise scope.refusal(refused, f"set-up command `{command}`")
                if failure is not None:
                    raise failure

    def _run(
        self, command: str, env: dict[str, str], allow: Allowlist
    ) -> tuple[MigrationError | ExtensionMissingError | None, list[Attempt]]:
        """Run one command: its failure as an error to raise (None when it succeeded), and the foreign
        connections seen in its process tree while it ran (programs that are not Python: not refusable)."""
        proc = subprocess.Popen(
            command, shell=True, cwd=self.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        seen: dict[str, Attempt] = {}
        try:
            while True:
                try:
                    output, _ = proc.communicate(timeout=WATCH_INTERVAL)
                    break
                except subprocess.TimeoutExpired:  # still running: look at its connections (output is kept)
                    for attempt in foreign_connections(proc.pid, allow):
                        attempt.pointing = pointing_variables(attempt.host, attempt.port, env)
                        seen.setdefault(attempt.target, attempt)
        except BaseException:  # interrupted (Ctrl-C, SIGTERM): the command and what it started go too
            _kill_tree(proc)
            raise
        found = list(seen.values())
        if proc.returncode == 0:
            return None, found
        tail = "\n".join(output.splitlines()[-30:])
        message = (
            f"set-up command `{command}` failed with exit code {proc.returncode} (run from {self.root})."
            f"\n--- its output (last lines) ---\n{tail}\n---"
        )
        cause = f"set-up command `{command}`"  # one root cause for every test that needed the template
        missing = MISSING_EXTENSION.search(output)
        if missing:
            name = missing.group(1) or missing.group(2)
            return ExtensionMissingError(message, hint=undeclared_extension_hint(name), cause=cause), found
        lacking = settings_failure_in_output(output)
        if lacking:  # the project's settings, not the command: a line of [tool.testlane.env] fixes it
            return MigrationError(f"{message}\n{lacking}", hint=ENV_HINT, cause=cause), found
        return MigrationError(
            message,
            hint="fix the command, or run it by hand with the same environment "
            '(`testlane services start`, then `eval "$(testlane services env)"`).',
            cause=cause,
        ), found


def _kill_tree(proc: subprocess.Popen[str]) -> None:
    """Kill a set-up command's shell and every process under it, and reap the shell."""
    import psutil

    with contextlib.suppress(psutil.Error):
        tree = psutil.Process(proc.pid)
        for process in [*tree.children(recursive=True), tree]:
            with contextlib.suppress(psutil.Error):
                process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.communicate(timeout=5)
