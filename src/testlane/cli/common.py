"""What every ``testlane`` command shares: settings from options, logging, the console."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from testlane.core.config import Settings, load_settings, parse_set_options
from testlane.core.logs import setup_logging
from testlane.core.redact import redact

__all__ = ["CliState", "console", "pass_state", "progress_printer", "setup_logging"]


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
    """Options given before the subcommand, turned into settings on first use."""

    config_file: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    verbose: int = 0
    quiet: bool = False
    _settings: Settings | None = None

    def settings(self, **extra_overrides: Any) -> Settings:
        if self._settings is None or extra_overrides:
            overrides = {**self.overrides, **{k: v for k, v in extra_overrides.items() if v is not None}}
            self._settings = load_settings(config_file=self.config_file, overrides=overrides)
            level = "debug" if self.verbose else self._settings.log_level
            if os.environ.get("TESTLANE_LOG_LEVEL"):
                level = os.environ["TESTLANE_LOG_LEVEL"]
            setup_logging(level)
        return self._settings

    @classmethod
    def from_options(cls, config: str | None, set_items: tuple[str, ...], verbose: int, quiet: bool) -> CliState:
        return cls(
            config_file=Path(config) if config else None,
            overrides=parse_set_options(list(set_items)),
            verbose=verbose,
            quiet=quiet,
        )


pass_state = click.make_pass_decorator(CliState)


def progress_printer(quiet: bool) -> Any:
    """A progress callback for long steps (first-time cluster initialization)."""

    def progress(message: str) -> None:
        if not quiet:
            console.print(f"[dim]testlane:[/dim] {escape(message)}")

    return progress
