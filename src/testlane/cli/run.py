"""``testlane run``: services up, pytest in the integration lane, services down, pytest's exit code.

pytest's exit code is the run's verdict (:mod:`testlane.reports.verdict`: the reports plugin sets it),
so the digest printed here and the code returned agree: 5 when every test was skipped, for example.

Signals: on SIGTERM testlane forwards SIGTERM to pytest (whose testlane plugin
turns it into an orderly interruption), waits for it, stops the services and
exits 143. On SIGINT it does the same and exits 130; when the terminal sent the
Ctrl-C to the whole foreground process group, pytest already has it and is not
signalled twice (a group's SIGINT sent by a script reaches both, and the copy testlane forwards is
ignored by pytest: :mod:`testlane.core.interrupts`). A pytest that does not stop within the grace period
(``stop_grace``, 15 s) is terminated, then killed 5 s later. If testlane itself is SIGKILLed, the parent-death
signal stops pytest and the servers, and the next start reaps what is left. Whatever was interrupted
(the services starting, the template being built, pytest), one line says so once everything is cleaned up.

Reports: with ``reports.format = auto`` (the default) pytest prints a failure digest when a coding
agent or CI is detected from the environment (``reports.agent_variables``), pytest's own output
otherwise; the choice reaches pytest as ``TESTLANE_REPORTS_FORMAT``, and ``--format``/``--digest``
after ``--`` still win. The digest's rerun commands start with this very command
(``TESTLANE_RERUN_PREFIX``). A pytest that ends without its report (killed by a signal, an exit
code pytest never uses, ``os._exit`` from a test) is reported here, in the same format, as a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType

from rich.markup import escape

from testlane.cli.common import CliState, console, progress_printer
from testlane.core import environment
from testlane.core.config import Settings, join_option_values, overrides_environment
from testlane.core.envmap import referenced_services
from testlane.core.interrupts import Interruption, interrupted_line, last_interruption, phase, record
from testlane.core.redact import redact_url
from testlane.core.runenv import RunEnv
from testlane.core.runtime import RunContext, new_run_id
from testlane.core.waiting import Deadline
from testlane.databases.appdb import drop_app_databases, mapped_environment
from testlane.databases.provision import start_services, sweep_shared_run
from testlane.databases.shared_server import shared_server_notices
from testlane.services.base import Server
from testlane.services.process import child_preexec, terminate
from testlane.services.stack import ServiceStack

__all__ = ["agent_detected", "report_format", "run_pytest_under_services"]

IT_ENV = environment.IT
FORMAT_ENV = "TESTLANE_REPORTS_FORMAT"
START_FD_ENV = environment.START_FD
POLL_SECONDS = 0.25
KILL_AFTER = 5.0  # seconds a pytest that was terminated after the grace period has before it is killed
# A pytest that reported and is still alive this long after is kept alive by something its tests started
# (a non-daemon thread: Python waits for them at exit; plain pytest hangs there too), never by pytest itself.
EXIT_AFTER_REPORT = 5.0
PYTEST_EXIT_CODES = range(6)
PYTEST_CHILD = str(Path(__file__).with_name("pytest_child.py"))


def agent_detected(settings: Settings, environ: Mapping[str, str]) -> str | None:
    """The first of ``reports.agent_variables`` that is set (and not 0/false), if any."""
    for name in settings.reports.agent_variables:
        value = environ.get(name, "").strip().lower()
        if value and value not in ("0", "false", "no", "off"):
            return name
    return None


def report_format(settings: Settings, environ: Mapping[str, str], pytest_args: Sequence[str] = ()) -> str:
    """The format pytest will print in: ``--format``/``--digest`` after ``--``, else the setting (auto resolved)."""
    chosen: str | None = None
    args = list(pytest_args)
    for index, arg in enumerate(args):
        if arg == "--digest":
            chosen = "digest"
        elif arg == "--format" and index + 1 < len(args):
            chosen = args[index + 1]
        elif arg.startswith("--format="):
            chosen = arg.split("=", 1)[1]
    if chosen is None or chosen == "auto":
        chosen = settings.reports.format
    if chosen == "auto":
        chosen = "digest" if agent_detected(settings, environ) else "terminal"
    return chosen


def rerun_prefix(state: CliState) -> str:
    """This command as the user typed it, up to ``--``: how the digest says to re-run a test."""
    program = sys.argv[0] if sys.argv and sys.argv[0] else "testlane"
    on_path = shutil.which("testlane")
    if Path(program).name != "testlane" or (on_path and Path(on_path).resolve() == Path(program).resolve()):
        program = "testlane"
    else:
        with contextlib.suppress(ValueError):
            program = str(Path(program).resolve().relative_to(Path.cwd()))
    words = [program]
    if state.config_file is not None:
        words += ["--config", str(state.config_file)]
    for key, value in state.overrides.items():
        words += ["--set", f"{key}={value}"]
    return shlex.join([*words, "run", "--"])


def _report_crash(fmt: str, code: int, budget: int) -> None:
    """pytest ended without reporting (killed, exited from a test, an exit code it never uses): a failure."""
    import json

    from testlane.reports.digest import render_digest
    from testlane.reports.jsonreport import document
    from testlane.reports.model import RunResult

    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        what = f"pytest was killed by {name} before it could report (out of memory? a segfault?)"
    elif code in PYTEST_EXIT_CODES:
        what = (
            f"pytest exited (code {code}) before it could report: a test or plugin ended the process "
            "(os._exit, or pytest-timeout's thread method)"
        )
    else:
        what = f"pytest exited with code {code}, which pytest itself never uses: it crashed or was stopped"
    result = RunResult(exit_code=None, notes=[what])
    if fmt == "digest":
        sys.stdout.write(render_digest(result, budget))
    elif fmt in ("json", "jsonl"):
        sys.stdout.write(json.dumps(document(result, digest_budget=budget)) + "\n")
    else:
        console.print(f"[red]testlane: FAILED —[/red] {what}")
    sys.stdout.flush()


class _Supervisor:
    """Waits for the pytest child; turns our signals into an orderly stop of it."""

    def __init__(self, child: subprocess.Popen[bytes], grace: float, reported: Path | None = None) -> None:
        self.child = child
        self.grace = grace
        self.reported = reported  # the file pytest's reporter creates once it has reported
        self.signal: int | None = None
        self._deadline: Deadline | None = None
        self._reported_at: float | None = None  # when this process first saw that file
        self._said_hung = False
        self._asked_again = False
        # Whether pytest had reported before our first signal (an interrupted pytest reports too, after it).
        self.reported_before_signal = False

    def has_reported(self) -> bool:
        return self.reported is not None and self.reported.exists()

    def _check_exit_after_report(self) -> None:
        """Says once that pytest reported but does not exit: otherwise the run waits without a word while
        the servers keep running, and an interruption would look like one in the middle of the tests."""
        if self._said_hung or not self.has_reported():
            return
        now = time.monotonic()
        if self._reported_at is None:
            self._reported_at = now
        elif now - self._reported_at >= EXIT_AFTER_REPORT:
            self._said_hung = True
            console.print(
                f"[yellow]testlane:[/yellow] pytest reported {EXIT_AFTER_REPORT:g}s ago but has not exited: something"
                " the tests started is still running (a non-daemon thread or a child process; testlane's findings"
                " above name what a test left running). Ctrl-C ends it; the run's servers are cleaned up then."
            )

    def _terminal_sent_it(self) -> bool:
        try:
            return os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp()
        except OSError:
            return False

    def handle(self, signum: int, frame: FrameType | None) -> None:
        first = self.signal is None
        if record(signum, "pytest was running") is None and not first:
            return  # the same interruption delivered again (to the group, then forwarded): already handled
        if first:
            self.reported_before_signal = self.has_reported()
        self.signal = self.signal or signum
        if signum == signal.SIGINT and first and self._terminal_sent_it():
            pass  # the terminal delivered Ctrl-C to pytest too
        else:
            self._send(signum)
        if self._deadline is None:
            self._deadline = Deadline.after(self.grace)
        elif not first:  # asked again: the grace period ends now (pytest is terminated, then killed)
            self._deadline = Deadline.after(0)
            self._asked_again = True

    def _send(self, signum: int) -> None:
        if self.child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.child.send_signal(signum)

    def wait(self) -> int:
        # Never an untimed wait: a signal handled during one does not end it (the wait is resumed,
        # PEP 475), so the grace period the handler starts would never be checked.
        while True:
            deadline = self._deadline
            try:
                # In steps: a signal handled meanwhile may move the deadline (asked again: now).
                return self.child.wait(
                    timeout=POLL_SECONDS if deadline is None else min(POLL_SECONDS, deadline.remaining)
                )
            except subprocess.TimeoutExpired:
                if deadline is None:
                    self._check_exit_after_report()
                    continue
                if not deadline.expired:
                    continue
            why = "asked again" if self._asked_again else f"pytest did not stop within {self.grace:g}s of the signal"
            console.print(f"[yellow]testlane:[/yellow] {why}; terminating it")
            code = terminate(self.child, grace=KILL_AFTER)
            return self.child.wait() if code is None else code


def _describe(servers: Mapping[str, Server], referenced: set[str]) -> str:
    """The banner's servers; for a kind the application's mapping (``referenced``) uses, where it points when
    that is not the server's URL (RabbitMQ: the run's own vhost)."""
    from testlane.services import kinds

    parts = []
    for name, server in servers.items():
        inst = server.instance
        part = f"{inst.engine} {inst.version} ({inst.backend}) at {redact_url(server.url)}"
        kind = kinds.find(name)
        note = kind.app_namespace(server) if kind is not None and name in referenced else None
        parts.append(f"{part} ({note})" if note else part)
    return "; ".join(parts)


def run_pytest_under_services(
    state: CliState,
    pytest_args: list[str],
    *,
    services: list[str] | None = None,
    extra_env: dict[str, str] | None = None,
) -> int:
    """Start services, run pytest with the integration lane on, stop services; return the exit code."""
    pytest_args = join_option_values(pytest_args)  # --report-json PATH: never a path to test for pytest
    settings = state.settings()
    # Always a new run, owned by this process, even when started from inside another run.
    context = RunContext.from_settings(settings, run_id=new_run_id(), owner=os.getpid())
    interrupted: Interruption | None = None

    def early_signal(signum: int, frame: FrameType | None) -> None:
        # Until pytest runs, SIGINT and SIGTERM stop the start-up; a copy of the same signal (sent to the
        # process group, and again to us) is ignored, so the clean-up is not interrupted in turn.
        if record(signum, "starting the services") is not None:
            raise KeyboardInterrupt

    previous_term = signal.signal(signal.SIGTERM, early_signal)
    previous_int = signal.signal(signal.SIGINT, early_signal)
    reported: Path | None = None
    keep_databases = False  # failed tests' databases kept for inspection (db.keep_failed)
    stack = ServiceStack(
        settings, context, progress=progress_printer(state.quiet), die_with_parent=not settings.db.keep_failed
    )
    child: subprocess.Popen[bytes] | None = None
    release: int | None = None  # the start pipe's write end, until the services' variables are sent
    try:
        started = time.perf_counter()
        chosen = settings.services if services is None else services  # [] is a choice: no services
        wanted_by_env = referenced_services(settings.env)
        wanted = list(dict.fromkeys([*chosen, *wanted_by_env]))
        fmt = report_format(settings, os.environ, pytest_args)
        # In the run's private directory, not the shared temp dir: a name another local user could
        # guess (the run id shows in `ps`) must not be a symlink planted for us to touch.
        reported = context.ensure_run_dir() / f".reported.{os.getpid()}"
        reported.unlink(missing_ok=True)
        own = {  # set after the services' variables: they win over them, as they did when all were set at once
            **RunEnv(
                it="1",
                rerun_prefix=rerun_prefix(state),
                reported_file=str(reported),
                # pytest's plugin stops when its rootdir has another [tool.testlane] than the one read here
                run_settings=str(settings.config_file) if settings.config_file is not None else "none",
            ).to_environ(),
            FORMAT_ENV: fmt,
            **(extra_env or {}),
        }
        env = {**_clean_env(os.environ), **_settings_environment(state), **own}
        try:
            with phase("starting the services"):
                # pytest starts now, beside the services: it imports itself and its plugins on the other core while
                # they start (and a migrated template is built), then waits for their variables (pytest_child.py).
                with _sigint_held():
                    child, release = _spawn_pytest(pytest_args, env)
                # store_later: a snapshot the start leaves for after the tests is stored below, once pytest is done
                start_services(stack, wanted, progress=progress_printer(state.quiet), store_later=True)
                stack.write_services_file()
                # A pytest that already ended (its own start-up error, printed) is not told about: it ran nothing.
                if not state.quiet and stack.servers and child.poll() is None:
                    elapsed = time.perf_counter() - started
                    described = escape(_describe(stack.servers, wanted_by_env))
                    ready = f"[dim](ready in {elapsed:.2f}s)[/dim]"
                    console.print(f"[dim]testlane:[/dim] run {context.run_id}: {described} {ready}")
                for notice in shared_server_notices(stack.servers.values()):
                    console.print(f"[yellow]testlane:[/yellow] {escape(notice)}")
                mapped = mapped_environment(settings, stack.servers, context.run_id)  # may clone app databases
                if mapped and not state.quiet and child.poll() is None:
                    names = escape(", ".join(sorted(mapped)))
                    console.print(f"[dim]testlane:[/dim] mapped for the application: {names}")
                sys.stdout.flush()  # before pytest, which goes on once it has the variables, writes to the terminal
                # From here our signals are pytest's to handle (forwarded): installed before it is let go, and
                # inside this block, so that no signal finds neither handler (it would end in click's "Aborted").
                supervisor = _Supervisor(child, grace=settings.stop_grace, reported=reported)
                signal.signal(signal.SIGTERM, supervisor.handle)
                signal.signal(signal.SIGINT, supervisor.handle)
        except KeyboardInterrupt:
            interrupted = last_interruption() or Interruption(signal.SIGINT, "starting the services", 0.0)
            return 128 + interrupted.signum
        interrupted = last_interruption()
        if interrupted is not None:
            # Recorded, but its KeyboardInterrupt was raised where Python ignores exceptions (a fork's callbacks,
            # logging's and filelock's, run in this process after every subprocess start): the start went on.
            _abandon_pytest(child, release)
            child = release = None
            return 128 + interrupted.signum
        late = {key: value for key, value in {**stack.env(), **mapped}.items() if key not in own}
        _send_variables(release, late)
        release = None
        child = None  # the supervisor's from here: waited for below
        code = supervisor.wait()
        keep_databases = settings.db.keep_failed and code not in (0, 5)
        if supervisor.signal is not None:
            during = "pytest had reported but not exited" if supervisor.reported_before_signal else "pytest was running"
            interrupted = Interruption(supervisor.signal, during, 0.0)
            return 128 + supervisor.signal
        if stack.deferred:
            # Interruptible as the start is: the store cleans up after itself (see the snapshots module).
            signal.signal(signal.SIGTERM, early_signal)
            signal.signal(signal.SIGINT, early_signal)
            try:
                stack.run_deferred()
            except KeyboardInterrupt:
                interrupted = last_interruption() or Interruption(signal.SIGINT, "storing the snapshot", 0.0)
                return 128 + interrupted.signum
        # Exit code 1 with no report: the process was ended from inside (other codes before reporting
        # are pytest's own start-up errors, which it printed).
        silent_failure = code == 1 and fmt != "terminal" and not reported.exists()
        # 130/143 with a report: pytest was interrupted by a signal sent to it alone, and said so (its
        # verdict gives that code, as this process would have).
        signalled = code in (128 + signal.SIGINT, 128 + signal.SIGTERM) and reported.exists()
        if (code not in PYTEST_EXIT_CODES and not signalled) or silent_failure:
            _report_crash(fmt, code, settings.reports.digest_budget)
            return 128 - code if code < 0 else code
        return code
    finally:
        if reported is not None:
            reported.unlink(missing_ok=True)
        # No signal may interrupt the clean-up itself.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            if child is not None:  # the services did not start: pytest, still waiting for them, goes first
                _abandon_pytest(child, release)
            drop_app_databases(stack.servers, context.run_id)
            if not keep_databases:
                sweep_shared_run(stack.servers.values(), context.run_id)
            stack.stop()
        finally:
            signal.signal(signal.SIGTERM, previous_term)
            signal.signal(signal.SIGINT, previous_int)
        if interrupted is not None:  # said once everything above is done, so "cleaned up" is true
            console.print(escape(interrupted_line(interrupted)), style="yellow")


def _spawn_pytest(pytest_args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    """Start pytest (``pytest_child``) to wait for the services' variables on a pipe; returns it and the pipe's
    write end, for :func:`_send_variables` (or :func:`_abandon_pytest`)."""
    read_end, write_end = os.pipe()
    try:
        # pytest_child, not `-m pytest`: it ignores a repeated delivery from its first instruction on
        # (an interrupt while pytest is still importing would print an import traceback).
        child = subprocess.Popen(
            [sys.executable, PYTEST_CHILD, *pytest_args],
            env={**env, START_FD_ENV: str(read_end)},
            pass_fds=(read_end,),
            preexec_fn=child_preexec(signal.SIGTERM),
        )
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    return child, write_end


@contextlib.contextmanager
def _sigint_held() -> Iterator[None]:
    """SIGINT blocked in the block, for the pytest it starts (the mask is inherited): a Ctrl-C in that pytest's
    first milliseconds, before pytest_child has installed its handler, waits for it instead of printing a
    traceback of Python's start. Here it stays pending until the block's end, once the child is ours to
    clean up, and is then handled as any other."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _send_variables(write_end: int, variables: dict[str, str]) -> None:
    """Hand the started services' variables to pytest, which goes on. A pytest that already ended (an unknown
    plugin given to ``-p``, say) has nothing to read them: its exit code says what happened."""
    try:
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(json.dumps(variables).encode())
    except BrokenPipeError:
        pass


def _abandon_pytest(child: subprocess.Popen[bytes], write_end: int | None) -> None:
    """End a pytest whose services did not start: the pipe closed empty ends it quietly once it reads it, and
    SIGTERM ends it sooner if it is still importing (it prints nothing either way)."""
    if write_end is not None:
        os.close(write_end)
    terminate(child, grace=KILL_AFTER)


# Variables that describe *a* run; a nested run must not inherit the outer run's.
RUN_SCOPED_ENV = (*environment.run_scoped_names(), FORMAT_ENV)


def _settings_environment(state: CliState) -> dict[str, str]:
    """What makes the pytest child resolve the settings this command resolved: ``TESTLANE_CONFIG`` for
    ``--config``, a ``TESTLANE_*`` variable per ``--set`` (and ``--services``, ``--backend``...), which
    win over pyproject.toml and over the same variables already exported, as the options did here."""
    env = overrides_environment(state.overrides)
    if state.config_file is not None:
        env.update(RunEnv(config_file=str(state.config_file.resolve())).to_environ())
    return env


def _clean_env(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without the outer run's variables (the whole environment otherwise: pytest and the
    application under test need the user's own variables)."""
    return RunEnv().child_environ(environ, drop=RUN_SCOPED_ENV)
