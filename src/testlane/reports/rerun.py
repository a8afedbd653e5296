"""The options of the user's own pytest command that a re-run must repeat to really re-run a test.

The digest's ``rerun:`` command names the failing tests; the rest of it comes from the command that ran
them (``config.invocation_params.args``: under ``testlane run``, the pytest arguments after ``--``). What
changes how a test runs stays (``-p no:django``, ``-o``, ``-c``, ``--rootdir``, ``--import-mode``, ``-W``,
``--timeout``, ``--lane``, testlane's settings such as ``--isolation``, any other plugin's option); what
chooses the tests (paths, node ids, ``-k``, ``--lf``, ``-x``, ``-n``...) or shapes the output
(``-v``, ``--tb``, ``--format``...) goes: the re-run names its own tests and the digest its own output.
``PYTEST_ADDOPTS`` and the ini file's ``addopts`` apply to the re-run by themselves.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

from testlane.core.redact import MASK

# Destinations (argparse ``dest``) of the options a re-run drops: pytest's, pytest-xdist's, pytest-split's
# and testlane's own that select tests or shape the output. Everything else is kept.
SELECTION = frozenset(
    {
        "file_or_dir",
        "keyword",
        "markexpr",
        "lf",
        "failedfirst",
        "newfirst",
        "last_failed_no_failures",
        "deselect",
        "ignore",
        "ignore_glob",
        "exitfirst",
        "maxfail",
        "stepwise",
        "stepwise_skip",
        "stepwise_reset",
        "collectonly",
        "numprocesses",
        "maxprocesses",
        "dist",
        "tx",
        "looponfail",
        "testlane_shard",
        "splits",
        "group",
        "store_durations",
        "testlane_it",
    }
)
OUTPUT = frozenset(
    {
        "verbose",
        "quiet",
        "tbstyle",
        "reportchars",
        "showlocals",
        "durations",
        "durations_min",
        "color",
        "code_highlight",
        "fulltrace",
        "showcapture",
        "no_summary",
        "no_header",
        "setupshow",
        "setuponly",
        "setupplan",
        "usepdb",
        "usepdb_cls",
        "trace",
        "xmlpath",
        "junitprefix",
        "pastebin",
        "debug",
        "traceconfig",
        "help",
        "version",
        "showfixtures",
        "show_fixtures_per_test",
        "markers",
        "verbosity_assertions",
        "cacheshow",
        "basetemp",  # a re-run in the same directory would wipe the files the user may be looking at
    }
)
# Options whose value is a path, relative to where pytest started: made absolute when the re-run starts
# elsewhere (``cd <rootdir> && ...``, because node ids are relative to the rootdir).
PATHS = frozenset({"inifilename", "rootdir", "confcutdir"})


def rerun_options(
    args: Sequence[str],
    actions: dict[str, argparse.Action],
    drop: frozenset[str] = frozenset(),
    absolute_from: str | None = None,
) -> list[str]:
    """The words of ``args`` (a pytest command line) a re-run repeats.

    ``actions`` maps option strings to their argparse actions (how many values each takes and its
    ``dest``); ``drop`` adds destinations to leave out; ``absolute_from``, when given, is the directory
    relative path values are resolved from."""
    kept: list[str] = []
    words = list(args)
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if word == "--":
            break  # the rest are paths and node ids
        if not word.startswith("-") or word == "-":
            continue  # a path or node id
        name, equals, attached = word.partition("=") if word.startswith("--") else (word, "", "")
        options: list[tuple[str, str | None]] = []  # (option string, value given in the same word)
        if name in actions:
            options.append((name, attached if equals else None))
        elif not word.startswith("--") and len(word) > 2 and word[:2] in actions:
            # -pno:django (a value attached) or -xvs (flags together)
            head = actions[word[:2]]
            if _takes_value(head):
                options.append((word[:2], word[2:]))
            else:
                for position, letter in enumerate(word[1:], start=1):
                    action = actions.get(f"-{letter}")
                    if action is not None and _takes_value(action):
                        options.append((f"-{letter}", word[position + 1 :] or None))
                        break
                    options.append((f"-{letter}", None))
        else:
            kept.append(word)  # not pytest's to say: keep it as given
            continue
        for option, value in options:
            action = actions.get(option)
            values: list[str] = []
            if action is not None and _takes_value(action):
                if value is not None:
                    values = [value]
                elif action.nargs in ("*", "+"):
                    while index < len(words) and not words[index].startswith("-"):
                        values.append(words[index])
                        index += 1
                elif index < len(words) and (action.nargs != "?" or not words[index].startswith("-")):
                    count = action.nargs if isinstance(action.nargs, int) else 1
                    values, index = words[index : index + count], index + count
            dest = action.dest if action is not None else ""
            if dest in SELECTION or dest in OUTPUT or dest in drop:
                continue
            if dest in PATHS and absolute_from is not None:
                values = [os.path.normpath(os.path.join(absolute_from, v)) for v in values]
            kept += [option, *values]
    return kept


def _takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0


def parser_actions(config: Any) -> dict[str, argparse.Action]:
    """Option string -> argparse action, from pytest's parser: the only place that knows every plugin's
    options and how many values each takes (``Parser.optparser`` is not public API: nothing when absent)."""
    # Private on purpose, no public API suffices: config.option / getoption give values by dest, not the
    # option strings nor how many words each takes; invocation_params.args are the raw words; the Parser a
    # pytest_addoption hook receives exposes no option list publicly, and our own hook runs before some
    # plugins add theirs. Without the table the rerun command keeps no options (tests/unit/test_reports.py).
    optparser = getattr(getattr(config, "_parser", None), "optparser", None)
    actions = getattr(optparser, "_option_string_actions", None)
    return dict(actions) if isinstance(actions, dict) else {}


def rerun_target(nodeid: str) -> str:
    """What a re-run names to select ``nodeid`` (a node id as the reports hold it: masked, ``model.Failure``).

    A parameter set whose id holds a URL (``test_q[postgresql://u:***@127.0.0.1:44271/tl_b5f57a4b_run]``) or a
    masked secret names something of this run only: the next run has another password, port and database
    name, and a masked id matches nothing. Such a test is named by its function (``file::test_q``,
    ``file::Class::test_q``), which pytest accepts and which selects all its parameter sets; the rerun line
    says so (:func:`widened`). Any other node id is named as it is."""
    head, sep, last = nodeid.rpartition("::")
    name, bracket, params = last.partition("[")
    if bracket and ("://" in params or MASK in params):
        return f"{head}{sep}{name}"
    return nodeid


def widened(nodeid: str) -> bool:
    """Whether :func:`rerun_target` names more than ``nodeid`` (its function, all its parameter sets)."""
    return rerun_target(nodeid) != nodeid
