"""``testlane run``: services up, pytest in the integration lane, services down, pytest's exit code.

Signals: on SIGTERM testlane forwards SIGTERM to pytest (whose testlane plugin
turns it into an orderly interruption), waits for it, stops the services and
exits 143. On SIGINT it does the same and exits 130; when the terminal sent the
Ctrl-C to the whole foreground process group, pytest already has it and is not
signalled twice. A pytest that does not stop within the grace period is
terminated, then killed. If testlane itself is SIGKILLed, the parent-death
signal stops pytest and the servers, and the next start reaps what is left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from types import FrameType

from rich.markup import escape

from testlane.cli.common import CliState, console, progress_printer
from testlane.core.envmap import referenced_services
from testlane.core.runtime import RunContext, new_run_id
from testlane.core.waiting import Deadline
from testlane.databases.appdb import drop_app_databases, mapped_environment
from testlane.databases.provision import start_services
from testlane.services.process import parent_death_preexec
from testlane.services.stack import ServiceStack

__all__ = ["run_pytest_under_services"]

IT_ENV = "TESTLANE_IT"
GRACE_SECONDS = 15.0


class _Supervisor:
    """Waits for the pytest child; turns our signals into an orderly stop of it."""

    def __init__(self, child: subprocess.Popen[bytes]) -> None:
        self.child = child
        self.signal: int | None = None
        self._deadline: Deadline | None = None

    def _terminal_sent_it(self) -> bool:
        try:
            return os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp()
        except OSError:
            return False

    def handle(self, signum: int, frame: FrameType | None) -> None:
        first = self.signal is None
        self.signal = self.signal or signum
        if signum == signal.SIGINT and first and self._terminal_sent_it():
            pass  # the terminal delivered Ctrl-C to pytest too
        else:
            self._send(signum)
        if self._deadline is None:
            self._deadline = Deadline.after(GRACE_SECONDS)

    def _send(self, signum: int) -> None:
        if self.child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.child.send_signal(signum)

    def wait(self) -> int:
        while True:
            try:
                timeout = self._deadline.remaining if self._deadline is not None else None
                return self.child.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                console.print("[yellow]testlane:[/yellow] pytest did not stop in time; terminating it")
                self._send(signal.SIGTERM if self.child.poll() is None else 0)
                try:
                    return self.child.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.child.kill()
                    return self.child.wait()


def _describe(stack: ServiceStack) -> str:
    parts = []
    for server in stack.servers.values():
        inst = server.instance
        parts.append(f"{inst.engine} {inst.version} ({inst.backend}) at {server.url}")
    return "; ".join(parts)


def run_pytest_under_services(
    state: CliState,
    pytest_args: list[str],
    *,
    services: list[str] | None = None,
    extra_env: dict[str, str] | None = None,
) -> int:
    """Start services, run pytest with the integration lane on, stop services; return the exit code."""
    settings = state.settings()
    # Always a new run, owned by this process, even when started from inside another run.
    context = RunContext.from_settings(settings, run_id=new_run_id(), owner=os.getpid())
    received: list[int] = []

    def early_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    previous_term = signal.signal(signal.SIGTERM, early_signal)
    stack = ServiceStack(
        settings, context, progress=progress_printer(state.quiet), die_with_parent=not settings.db.keep_failed
    )
    try:
        started = time.perf_counter()
        wanted = list(dict.fromkeys([*(services or settings.services), *referenced_services(settings.env)]))
        try:
            start_services(stack, wanted, progress=progress_printer(state.quiet))
        except KeyboardInterrupt:
            return 128 + (received[0] if received else signal.SIGINT)
        stack.write_services_file()
        if not state.quiet and stack.servers:
            elapsed = time.perf_counter() - started
            console.print(
                f"[dim]testlane:[/dim] run {context.run_id}: {_describe(stack)} [dim](ready in {elapsed:.2f}s)[/dim]"
            )
        mapped = mapped_environment(settings, stack.servers, context.run_id)
        if mapped and not state.quiet:
            console.print(f"[dim]testlane:[/dim] mapped for the application: {escape(', '.join(sorted(mapped)))}")
        env = {**_clean_env(os.environ), **stack.env(), **mapped, IT_ENV: "1", **(extra_env or {})}
        preexec = parent_death_preexec(signal.SIGTERM)
        child = subprocess.Popen([sys.executable, "-m", "pytest", *pytest_args], env=env, preexec_fn=preexec)
        supervisor = _Supervisor(child)
        signal.signal(signal.SIGTERM, supervisor.handle)
        previous_int = signal.signal(signal.SIGINT, supervisor.handle)
        try:
            code = supervisor.wait()
        finally:
            signal.signal(signal.SIGINT, previous_int)
        if supervisor.signal is not None:
            return 128 + supervisor.signal
        return code
    finally:
        # No signal may interrupt the clean-up itself.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            drop_app_databases(stack.servers, context.run_id)
            stack.stop()
        finally:
            signal.signal(signal.SIGTERM, previous_term)
            signal.signal(signal.SIGINT, old_int if old_int is not signal.SIG_IGN else signal.default_int_handler)


# Variables that describe *a* run; a nested run must not inherit the outer run's.
RUN_SCOPED_ENV = (
    "TESTLANE_RUN_ID",
    "TESTLANE_OWNER_PID",
    "TESTLANE_SERVICES_FILE",
    "TESTLANE_POSTGRES_URL",
    "TESTLANE_POSTGRES_HOST",
    "TESTLANE_POSTGRES_PORT",
    "TESTLANE_POSTGRES_USER",
    "TESTLANE_REDIS_URL",
    "TESTLANE_VALKEY_URL",
    "TESTLANE_REDIS_HOST",
    "TESTLANE_REDIS_PORT",
    "TESTLANE_MARIADB_URL",
)


def _clean_env(environ: os._Environ[str] | dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in environ.items() if k not in RUN_SCOPED_ENV}
