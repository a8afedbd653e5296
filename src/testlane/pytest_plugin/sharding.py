"""Sharding for CI matrices, by pytest-split: ``--shard I/N`` is ``--splits N --group I`` with its
``least_duration`` algorithm, and the durations file is ``lanes.durations_file``.

pytest-split (a dependency) owns the splitting, ``--store-durations``, ``--durations-path``,
``--splitting-algorithm`` and ``--clean-durations``; installed, it registers them whether or not a project
opted in to testlane, and without testlane they behave as pytest-split documents. This module, registered
only for a project that opted in, adds what pytest-split has no notion of:

* ``--shard I/N``, the spelling testlane documented first (one option, so a CI matrix passes one value);
* the durations file defaults to ``lanes.durations_file`` (``.testlane/durations.json``, the file testlane
  wrote before it used pytest-split: same format) instead of pytest-split's ``.test_durations``;
  ``--durations-path`` given on the command line still wins;
* hand-written because pytest-split reads the file with a bare ``json.loads`` (a committed file with a merge
  conflict in it ends the run with an INTERNALERROR traceback) and writes it without creating its folder:
  an unreadable file is one usage-error line here, and the folder is created before pytest-split writes.

Each shard is a separate ``testlane run`` (or pytest) process, so each brings up its own services.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

__all__ = ["SPLITTING_ALGORITHM", "add_options", "parse_shard"]

SPLITTING_ALGORITHM = "least_duration"  # longest first, each to the least loaded group: every order works


def parse_shard(value: str) -> tuple[int, int]:
    """``"2/4"`` → ``(2, 4)``; raises ``pytest.UsageError`` for anything else."""
    index, sep, total = value.partition("/")
    if not sep or not index.isdigit() or not total.isdigit() or not 1 <= int(index) <= int(total):
        raise pytest.UsageError(f"--shard {value!r}: expected I/N with 1 <= I <= N, e.g. --shard 1/4")
    return int(index), int(total)


def add_options(group: pytest.OptionGroup) -> None:
    """``--shard`` (registered by the plugin whether or not the project opted in); pytest-split registers the rest."""
    group.addoption(
        "--shard",
        dest="testlane_shard",
        default=None,
        metavar="I/N",
        help="run shard I of N, balanced by recorded durations (pytest-split's --splits N --group I "
        f"--splitting-algorithm {SPLITTING_ALGORITHM}; record them with --store-durations)",
    )


def _pytest_split_default_path(config: pytest.Config) -> str:
    # pytest-split's default for --durations-path: ``.test_durations`` in the directory pytest started in.
    return os.path.join(str(config.invocation_params.dir), ".test_durations")


def _check_readable(path: Path) -> None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise pytest.UsageError(f"testlane: cannot read the durations file {path}: {exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise pytest.UsageError(
            f"testlane: the durations file {path} is not JSON ({exc}); record it again with "
            "`pytest --store-durations`, or delete it to split by test count."
        ) from None
    if not isinstance(data, dict | list):
        raise pytest.UsageError(f"testlane: the durations file {path} is not a mapping of test ids to seconds.")


@pytest.hookimpl(tryfirst=True)  # before pytest-split's own pytest_configure, which reads these options
def pytest_configure(config: pytest.Config) -> None:
    from testlane.pytest_plugin.plugin import settings_for

    option = config.option
    value = config.getoption("testlane_shard")
    if value:
        index, total = parse_shard(value)
        if getattr(option, "splits", None) or getattr(option, "group", None):
            raise pytest.UsageError("--shard I/N is --splits N --group I: give one or the other, not both.")
        option.splits, option.group = total, index
        option.splitting_algorithm = SPLITTING_ALGORITHM
    if not (option.splits or option.store_durations):
        return
    if option.durations_path == _pytest_split_default_path(config):
        settings = settings_for(config)
        option.durations_path = str(settings.resolve_path(settings.lanes.durations_file))
    path = Path(option.durations_path)
    _check_readable(path)
    if option.store_durations:
        path.parent.mkdir(parents=True, exist_ok=True)
