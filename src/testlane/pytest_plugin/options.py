"""pytest options generated from the settings table: every setting that declares a ``cli=`` flag.

One function registers them (:func:`add_setting_options`) and one reads them back
(:func:`command_line_overrides`): the values actually given on the command line, as
``load_settings`` overrides. An option not given holds :data:`NOT_GIVEN` (never a default
that could be mistaken for a value: ``--digest-budget 0`` and ``--no-keep-failed-db`` are kept).

A flag another plugin registered first (e.g. its own ``--isolation``) is left to that plugin:
ours is skipped, and ``--testlane-set db.isolation=...`` still sets the key. Stays cheap to
import (the plugin module imports it to register options in every pytest process).
"""

from __future__ import annotations

import argparse
import itertools
import os
from pathlib import Path
from typing import Any

import pytest

from testlane.core.config import OptionInfo, command_options, testlane_table_file, value_flags
from testlane.core.errors import ConfigError
from testlane.core.runenv import RunEnv

__all__ = [
    "NOT_GIVEN",
    "add_setting_options",
    "check_rootdir",
    "command_line_overrides",
]


# None, because argparse never produces it for these options (typed values, choices, store_const True/False),
# and because pytest-xdist's --looponfail sends config.option to its child: an object of our own would not
# cross (execnet sends builtins only).
NOT_GIVEN: Any = None


def _registered_names(parser: pytest.Parser) -> set[str]:
    # pytest 8 only checks names within one group (argparse is built later); pytest 9 raises at once.
    # Looking first covers both, and the error is still caught below.
    groups = [parser._anonymous, *parser._groups]
    return {name for group in groups for option in group.options for name in option.names()}


def _help(info: OptionInfo) -> str:
    text = info.help.replace("`", "").replace("%", "%%")  # argparse formats help with %
    return f"{text} (setting {info.key})"


def add_setting_options(group: pytest.OptionGroup, parser: pytest.Parser) -> list[str]:
    """Register each setting's ``cli=`` flag in ``group``; returns the flags left to other plugins."""
    taken = _registered_names(parser)
    skipped: list[str] = []
    for info in command_options("run"):
        assert info.cli is not None
        names = [info.cli, *([info.negative] if info.negative else [])]
        if taken.intersection(names):
            skipped.append(info.cli)
            continue
        common: dict[str, Any] = {"dest": info.dest, "default": NOT_GIVEN}
        try:
            if info.is_flag:
                group.addoption(info.cli, action="store_const", const=True, help=_help(info), **common)
                group.addoption(
                    f"{info.negative}", action="store_const", const=False, help=f"turn {info.key} off", **common
                )
            else:
                group.addoption(
                    info.cli,
                    # Kept as text: the settings read it as they read --set and the variable (one message
                    # naming the key and what it accepts, the same whatever the source).
                    choices=info.choices,
                    metavar=info.cli_metavar or (None if info.choices else info.key.rsplit(".", 1)[-1].upper()),
                    help=_help(info),
                    **common,
                )
        except (ValueError, argparse.ArgumentError):
            skipped.append(info.cli)  # registered by another plugin in a way the look-up above missed
    return skipped


def command_line_overrides(namespace: Any) -> dict[str, Any]:
    """The settings given as options in ``namespace`` (``config.option`` or ``known_args_namespace``)."""
    out: dict[str, Any] = {}
    for info in command_options("run"):
        value = getattr(namespace, info.dest, NOT_GIVEN)
        if value is not NOT_GIVEN:
            out[info.key] = value
    return out


# -- an option's value taken for a path to test --------------------------------------------------------------------


def check_rootdir(config: pytest.Config, args: list[str]) -> None:
    """Stop with the fix when a settings flag's value, an existing path, moved pytest's rootdir.

    Raises :class:`pytest.UsageError` naming the one-word form. Looks only when such a value is on the command
    line (nothing is computed otherwise); then runs pytest's own rootdir look-up again (``determine_setup``, the
    function ``Config`` calls) with the options known, and compares. pytest's choice is not replaced: its
    configuration (``addopts``, ``pythonpath``, plugins) was already read from it.
    """
    flags = value_flags()
    taken = [
        (word, value)
        for word, value in itertools.pairwise(args)
        if word in flags and not value.startswith("-") and os.path.exists(value.split("::")[0])
    ]
    if not taken:
        return
    from _pytest.config.findpaths import determine_setup  # pytest's rootdir look-up: no public API

    known = config.known_args_namespace
    try:
        rootpath = determine_setup(
            inifile=known.inifilename,
            override_ini=known.override_ini,
            args=known.file_or_dir,
            rootdir_cmd_arg=known.rootdir or None,
            invocation_dir=config.invocation_params.dir,
        )[0]
    except (TypeError, pytest.UsageError):  # another pytest's signature, or its own error: pytest says it later
        return
    if rootpath == config.rootpath:
        return
    flag, value = taken[0]
    raise pytest.UsageError(
        f"testlane: pytest took {flag}'s value {value!r} for a path to test and chose {config.rootpath} for its "
        f"rootdir (not {rootpath}); write {flag}={value} as one word (`testlane run` does it for you)"
    )


# -- the settings `testlane run` read against those pytest's rootdir gives ----------------------------------------


def check_run_settings(config: pytest.Config, env: RunEnv) -> None:
    """Under ``testlane run``: stop when pytest's rootdir would have this process read another ``[tool.testlane]``
    table than the pyproject.toml the run's services were started from.

    ``testlane run`` finds its settings upward from the current directory (or ``--config``); pytest's plugin from
    pytest's rootdir, which the paths given to pytest decide (``testlane run -- sub/tests`` from a parent
    directory). Two tables would mean services started for one project and tests run with another's settings
    and mapping: said with the fix instead. Raises :class:`pytest.UsageError`; returns at once outside a run.
    """
    if env.run_settings is None or env.config_file or env.xdist_worker:
        return  # not under testlane run, or one file named for both (--config), or a worker (its controller checked)
    used = None if env.run_settings == "none" else Path(env.run_settings).resolve()
    try:
        here = testlane_table_file(Path(str(config.rootpath)))
    except ConfigError:
        return  # said by the opt-in check, with its own message
    if here is None or here.resolve() == used:
        return
    read = f"{used}" if used is not None else "no pyproject.toml (its defaults)"
    raise pytest.UsageError(
        f"testlane: `testlane run` started the services with the settings of {read}, found from the current "
        f"directory, but pytest's rootdir is {config.rootpath}, whose {here} has its own [tool.testlane]: run "
        f"`testlane run` from {here.parent}, or name the file: `testlane run --config {here} -- ...`"
    )
