"""What every ``testlane`` command shares: settings from options, logging, the console."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from testlane.core.config import (
    DIGEST_FLAG,
    DIGEST_FLAG_HELP,
    OptionInfo,
    Settings,
    command_options,
    load_settings,
    parse_set_options,
)
from testlane.core.logs import setup_logging
from testlane.core.redact import redact

__all__ = [
    "CliState",
    "add_global_options",
    "add_setting_options",
    "console",
    "pass_state",
    "progress_printer",
    "setup_logging",
]


class RedactingConsole(Console):
    """A rich console that masks credentials (:func:`~testlane.core.redact.redact`) in every string it prints.

    Every message of the ``testlane`` command goes through it: the run banner, errors, ``services``
    and ``doctor`` output. (``testlane services env`` prints with ``click.echo`` on purpose: its
    output is for the user's own shell and must carry the passwords.)
    """

    def print(self, *objects: Any, **kwargs: Any) -> None:
        super().print(*(redact(o) if isinstance(o, str) else o for o in objects), **kwargs)


console = RedactingConsole(stderr=True, highlight=False, soft_wrap=True)


@dataclass
class CliState:
    """The global options (:func:`add_global_options`), turned into settings on first use."""

    config_file: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    flags: dict[str, str] = field(default_factory=dict)  # overrides given by a setting's own option: key -> option
    verbose: int = 0
    quiet: bool = False
    _settings: Settings | None = None

    def settings(self, **extra_overrides: Any) -> Settings:
        if self._settings is None or extra_overrides:
            overrides = {**self.overrides, **{k: v for k, v in extra_overrides.items() if v is not None}}
            self._settings = load_settings(config_file=self.config_file, overrides=overrides, flags=self.flags)
            # log_level is resolved like every setting (--set beats TESTLANE_LOG_LEVEL beats pyproject); -v wins.
            setup_logging("debug" if self.verbose else self._settings.log_level)
        return self._settings


pass_state = click.make_pass_decorator(CliState)


def _state(ctx: click.Context) -> CliState:
    # One state for the whole command line: the group's context creates it, subcommands inherit it.
    return ctx.ensure_object(CliState)


def _config(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None and not value.strip():  # never a quiet fall-back to searching upward
        raise click.BadParameter("is empty: name a pyproject.toml, or leave --config out to use the nearest one.")
    if value:
        _state(ctx).config_file = Path(value)


def _set(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> None:
    if value:
        given = parse_set_options(list(value))
        _state(ctx).overrides.update(given)
        for key in given:  # the value now comes from --set, not from the setting's own option
            _state(ctx).flags.pop(key, None)


def _verbose(ctx: click.Context, param: click.Parameter, value: int) -> None:
    _state(ctx).verbose += value or 0


def _quiet(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        _state(ctx).quiet = True


def _global_options() -> list[click.Parameter]:
    return [
        click.Option(
            ["--config"],
            type=click.Path(dir_okay=False),
            expose_value=False,
            callback=_config,
            help="pyproject.toml to read instead of searching upward.",
        ),
        click.Option(
            ["--set"],
            multiple=True,
            metavar="KEY=VALUE",
            expose_value=False,
            callback=_set,
            help="Override a setting, e.g. --set postgres.backend=local (repeatable).",
        ),
        click.Option(
            ["-v", "--verbose"],
            count=True,
            expose_value=False,
            callback=_verbose,
            help="Show testlane's debug log: what it did and why.",
        ),
        click.Option(["-q", "--quiet"], is_flag=True, expose_value=False, callback=_quiet, help="Print only errors."),
    ]


def add_global_options(command: click.Command) -> None:
    """Give ``command`` and every command under it ``--config``, ``--set``, ``-v`` and ``-q``.

    Declared here once; accepted before or after any subcommand's name (``testlane --set k=v run`` and
    ``testlane run --set k=v`` are the same), all into one :class:`CliState`: a later ``--config`` wins,
    ``--set`` items add up (a later one for the same key wins), ``-v`` counts add up. For ``testlane run``
    they go before ``--``: what follows it is pytest's."""
    command.params.extend(_global_options())
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            add_global_options(sub)


def _setting_option(info: OptionInfo) -> click.Option:
    """A command's option for one setting (its ``cli=`` flag): given, it is an override like ``--set``."""
    key, path = info.key, info.cli_metavar == "PATH"

    def store(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is None:
            return  # not given: the setting keeps its value from pyproject or the environment
        if path and value:
            # Relative to where the command runs (as for pytest's own option), not to the project root.
            value = os.path.abspath(os.path.expanduser(value))
        _state(ctx).overrides[key] = value
        _state(ctx).flags[key] = info.cli or key

    assert info.cli is not None
    text = f"{info.help.replace('`', '')} (setting {key})"
    if info.is_flag:
        return click.Option(
            [f"{info.cli}/{info.negative}"], default=None, expose_value=False, callback=store, help=text
        )
    # Text, read by the settings as --set and the variable are (one message, whatever the source).
    kind: Any = click.Choice(info.choices) if info.choices else click.STRING
    metavar = info.cli_metavar or (None if info.choices else key.rsplit(".", 1)[-1].upper())
    return click.Option(
        [info.cli], type=kind, default=None, metavar=metavar, expose_value=False, callback=store, help=text
    )


def add_setting_options(command: click.Command, name: str) -> None:
    """Give ``command`` an option for every setting whose ``cli=`` flag belongs to ``name`` (the settings
    table in core.config declares them; ``"run"``: ``testlane run``'s, the same flags pytest has)."""
    command.params.extend(_setting_option(info) for info in command_options(name))
    if name == "run":
        command.params.append(_digest_option())


def _digest_option() -> click.Option:
    """``--digest``: pytest's shortcut for ``--format digest`` (testlane.reports.pytest_reporter), here too."""

    def store(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        if value:
            _state(ctx).overrides["reports.format"] = "digest"
            _state(ctx).flags["reports.format"] = DIGEST_FLAG

    return click.Option(
        [DIGEST_FLAG],
        is_flag=True,
        default=False,
        expose_value=False,
        callback=store,
        help=DIGEST_FLAG_HELP,
    )


def progress_printer(quiet: bool) -> Any:
    """A progress callback for long steps (first-time cluster initialization)."""

    def progress(message: str) -> None:
        if not quiet:
            console.print(f"[dim]testlane:[/dim] {escape(message)}")

    return progress
