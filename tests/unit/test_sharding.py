"""The shard split itself (pure logic)."""

from __future__ import annotations

import random

import pytest

from testlane.pytest_plugin.sharding import assign_shards, parse_shard


def test_every_test_lands_in_exactly_one_shard() -> None:
    ids = [f"t{i}" for i in range(101)]
    shards = assign_shards(ids, {}, 4)
    flat = [n for shard in shards for n in shard]
    assert sorted(flat) == sorted(ids)
    assert max(len(s) for s in shards) - min(len(s) for s in shards) <= 1


def test_balanced_by_duration_and_deterministic() -> None:
    rng = random.Random(7)
    ids = [f"t{i}" for i in range(200)]
    durations = {n: rng.expovariate(1.0) * (20 if i < 5 else 1) for i, n in enumerate(ids)}
    shards = assign_shards(ids, durations, 4)
    totals = [sum(durations[n] for n in s) for s in shards]
    assert (max(totals) - min(totals)) / max(totals) < 0.2
    assert assign_shards(list(reversed(ids)), durations, 4) == shards


def test_parse_shard() -> None:
    assert parse_shard("2/4") == (2, 4)
    for bad in ("0/4", "5/4", "x/4", "2", "2/"):
        with pytest.raises(pytest.UsageError):
            parse_shard(bad)
