"""The ``testlane`` command.

Exit codes: ``testlane run`` exits with the run's verdict, which its pytest exits with
(testlane.reports.verdict, pytest's codes: 0 nothing failed, 1 failed, 2 interrupted or
collection errors, 3 internal error, 4 usage, 5 nothing tested: nothing collected, all
deselected or every test an integration test with the lane off), 130/143 when stopped by
SIGINT/SIGTERM (the verdict its pytest prints says that code too), 128+N when pytest was
killed by signal N. ``testlane gate`` exits 0 when every check passed, 1 otherwise;
``testlane hook ...`` always exits 0 (its decision is on stdout).
testlane's own failures: 4 for a usage or configuration mistake, 3 when a service could
not be found or started or the migrated template could not be built (before pytest ran:
the message names the root cause, e.g. the migration's file:line, and the fix). A user
mistake is one message on stderr, never a traceback (``-v`` adds testlane's debug log).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.markup import escape

from testlane.cli.cache import cache_group
from testlane.cli.common import CliState, add_global_options, add_setting_options, console, pass_state
from testlane.cli.doctor import doctor_command
from testlane.cli.gate import gate_command
from testlane.cli.hooks import hook_group
from testlane.cli.init import init_command
from testlane.cli.run import run_pytest_under_services
from testlane.cli.services import reap_command, services_group
from testlane.core.errors import ConfigError, TestlaneError

__all__ = ["cli", "main"]

USAGE_EXIT = 4
SERVICE_EXIT = 3


def services_one_liner() -> str:
    """``real services (PostgreSQL, Valkey, ...)``: the registered kinds, for the help and other one-liners."""
    from testlane.services import kinds

    return f"real services ({', '.join(kind.display.split(' (')[0] for kind in kinds.registered())})"


class _Cli(click.Group):
    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # The registry, when the help is shown (a kind registered after import is listed too).
        template = self.help or ""
        self.help = template.replace("{services}", services_one_liner())
        try:
            super().format_help_text(ctx, formatter)
        finally:
            self.help = template


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="testlane")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """testlane: {services} for your tests, isolated per test, in milliseconds.

    --config, --set, -v and -q go before or after the command's name (testlane run --set k=v)."""
    ctx.ensure_object(CliState)  # the global options (added below) filled it in


@cli.command("run", context_settings={"allow_interspersed_args": False})
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED)
@pass_state
def run_command(state: CliState, pytest_args: tuple[str, ...]) -> None:
    """Start the services, run pytest with the integration lane on, stop the services.

    Starts the configured services (setting `services`), applies [tool.testlane.env], then runs pytest
    with TESTLANE_IT=1: both lanes run, and a project that never set [tool.testlane.lanes]
    integration_patterns has every test in the integration lane (no network guard). Exits with pytest's
    code. Arguments after `--` go to pytest: testlane run -- tests/ -x -k login. When a coding agent or CI
    is detected, pytest prints a failure digest (`-- --format terminal` for its own output).
    """
    state.settings()  # the options generated from the settings table are in state.overrides already
    code = run_pytest_under_services(state, list(pytest_args))
    raise SystemExit(code)


add_setting_options(run_command, "run")  # --services, --backend, --isolation...: from the settings table
add_setting_options(gate_command, "gate")  # --exec-prefix, --fail-fast
cli.add_command(services_group)
cli.add_command(reap_command)
cli.add_command(cache_group)
cli.add_command(doctor_command)
cli.add_command(gate_command)
cli.add_command(hook_group)
cli.add_command(init_command)
add_global_options(cli)  # --config, --set, -v, -q: on every command, before or after its name


def _print_cause(error: TestlaneError) -> None:
    """The error that stopped ``testlane run`` before pytest, as the digest's group for it (one place
    renders a root cause): the file:line to fix and the fix, then the verdict with the exit code, 3."""
    from testlane.reports.digest import render_cause
    from testlane.reports.failures import failure_from_error

    head, *rest = render_cause(failure_from_error(error, Path.cwd()))
    console.print(f"[red]testlane: error:[/red] {escape(head.split(' — ', 1)[-1])}")
    for line in rest:
        console.print(escape(line), highlight=False)
    cause = error.cause or ""
    what = "a service could not be started" if cause.startswith("service") else "the run could not be set up"
    if cause.startswith(("migration", "set-up command", "template")):
        what = "the migrated template could not be built"
    console.print(f"[red]testlane: FAILED —[/red] {what}; no tests ran (exit {SERVICE_EXIT})")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning user mistakes into one message and an exit code."""
    try:
        cli.main(args=argv, prog_name="testlane", standalone_mode=False)
    except click.exceptions.NoSuchOption as exc:
        hint = ""
        if exc.ctx is not None and exc.ctx.command.name == "run":
            hint = "\n  hint: pytest's options go after `--`, e.g. testlane run -- -x -k name"
        console.print(f"[red]testlane: error:[/red] {escape(exc.format_message() + hint)}")
        raise SystemExit(USAGE_EXIT) from None
    except click.exceptions.UsageError as exc:
        console.print(f"[red]testlane: error:[/red] {escape(exc.format_message())}")
        if exc.ctx is not None:
            console.print(escape(f"{exc.ctx.get_usage()}\nTry '{exc.ctx.command_path} --help'."), style="dim")
        raise SystemExit(USAGE_EXIT) from None
    except click.exceptions.Abort:
        console.print("[red]testlane: aborted[/red]")
        raise SystemExit(130) from None
    except click.exceptions.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except ConfigError as exc:
        console.print(f"[red]testlane: configuration error:[/red] {escape(str(exc))}")
        raise SystemExit(USAGE_EXIT) from None
    except TestlaneError as exc:
        if exc.cause:  # a root cause of testlane's (a migration, a set-up command, a service): as the digest says it
            _print_cause(exc)
        else:
            console.print(f"[red]testlane: error:[/red] {escape(str(exc))}")
        raise SystemExit(SERVICE_EXIT) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    raise SystemExit(0)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
