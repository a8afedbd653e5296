"""Sharding for CI matrices: ``--shard I/N`` runs the I-th of N balanced, deterministic shards.

Tests are spread by their recorded durations (``lanes.durations_file``, default
``.testlane/durations.json``; commit it): longest first, each to the shard with the least total so
far (the LPT rule), ties broken by node id, so every job of a matrix computes the same split and
every selected test runs in exactly one shard. Tests without a recorded duration count as the
median of the recorded ones (1 s when none are). ``--store-durations`` records this run's
durations (setup + call + teardown) into the file, merged with what it held.

Each shard is a separate ``testlane run`` (or pytest) process, so each brings up its own services.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

__all__ = ["assign_shards", "parse_shard"]

durations_key = pytest.StashKey[dict[str, float]]()


def parse_shard(value: str) -> tuple[int, int]:
    """``"2/4"`` → ``(2, 4)``; raises ``pytest.UsageError`` for anything else."""
    index, sep, total = value.partition("/")
    if not sep or not index.isdigit() or not total.isdigit() or not 1 <= int(index) <= int(total):
        raise pytest.UsageError(f"--shard {value!r}: expected I/N with 1 <= I <= N, e.g. --shard 1/4")
    return int(index), int(total)


def assign_shards(nodeids: list[str], durations: dict[str, float], shards: int) -> list[list[str]]:
    """Split ``nodeids`` into ``shards`` lists of balanced total duration (deterministic)."""
    known = [durations[n] for n in nodeids if n in durations]
    default = statistics.median(known) if known else 1.0
    weighted = sorted(((durations.get(n, default), n) for n in nodeids), key=lambda pair: (-pair[0], pair[1]))
    totals = [0.0] * shards
    out: list[list[str]] = [[] for _ in range(shards)]
    for duration, nodeid in weighted:
        target = min(range(shards), key=lambda i: (totals[i], i))
        totals[target] += duration
        out[target].append(nodeid)
    return out


def add_options(group: pytest.OptionGroup) -> None:
    """``--shard`` and ``--store-durations`` (registered by the plugin whether or not the project opted in)."""
    group.addoption(
        "--shard",
        dest="testlane_shard",
        default=None,
        metavar="I/N",
        help="run shard I of N, balanced by recorded durations (see --store-durations)",
    )
    group.addoption(
        "--store-durations",
        dest="testlane_store_durations",
        action="store_true",
        default=False,
        help="record this run's test durations in lanes.durations_file",
    )


def _durations_path(config: pytest.Config) -> Path:
    from testlane.pytest_plugin.plugin import plugin_of

    settings = plugin_of(config).settings
    return settings.resolve_path(settings.lanes.durations_file)


def _load(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise pytest.UsageError(f"testlane: cannot read the durations file {path}: {exc}") from None
    return {str(k): float(v) for k, v in data.items()}


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    value = config.getoption("testlane_shard")
    if not value:
        return
    index, total = parse_shard(value)
    durations = _load(_durations_path(config))
    mine = set(assign_shards([item.nodeid for item in items], durations, total)[index - 1])
    selected = [item for item in items if item.nodeid in mine]
    deselected = [item for item in items if item.nodeid not in mine]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
    items[:] = selected


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("testlane_store_durations"):
        config.stash[durations_key] = {}
        config.pluginmanager.register(_DurationRecorder(config), "testlane-durations")


class _DurationRecorder:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        measured = self.config.stash[durations_key]
        measured[report.nodeid] = measured.get(report.nodeid, 0.0) + report.duration

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if hasattr(self.config, "workerinput"):
            return  # xdist workers' reports reach the controller, which writes the file
        path = _durations_path(self.config)
        merged = _load(path)
        merged.update({k: round(v, 4) for k, v in self.config.stash[durations_key].items()})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dict(sorted(merged.items())), indent=1) + "\n")
