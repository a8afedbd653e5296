"""A/B: two checkouts of testlane measured in one run, alternating, with one anchor.

Usage: python bench/ab.py [--a /work/main] [--b <this checkout>] [--runs 5] [--tests 200] [--start-only] [--json]

Each side is a source tree (``<path>/src`` is put first on ``PYTHONPATH``, so both run under this
interpreter and its packages); each gets its own cache and data directories on tmpfs, warmed once
before measuring. Every round runs side A then side B, or B then A on odd rounds, so that drifting
load on a shared machine falls on both alike. Figures are medians over the rounds; the ratio is B / A.

Per side and round:

* ``warm_start_ms``: ``ServiceStack.start(["postgres"])`` on a warm cache, to ready (for B this
  includes setting the run's password), median of 5 starts in one process;
* ``connect_ms``: one TCP connection with the handed-out URL (``psycopg.connect(url)``, ``SELECT 1``,
  close), median of 100: what every new connection a test opens costs;
* ``db_in_test_ms`` / ``txn_in_test_ms``: the per-test overhead of ``database`` / ``transaction``
  isolation, as in bench/isolation.py: the median time a test takes from set-up to tear-down (first
  and last tests left out) minus the anchor's (the same N tests on a fake connection, no database,
  run once per round);
* ``db_total_s``: the ``database``-isolation suite's wall-clock total (pytest start to exit).

``--start-only`` measures only the first two (a round takes seconds instead of minutes, so more rounds
fit: better medians on a noisy machine).

JSON keys (``--json``): ``runs``, ``tests``, ``a``, ``b``, ``anchor_per_test_ms`` and, for each figure
above, ``<figure>_a``, ``<figure>_b`` and ``<figure>_ratio``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from isolation import run_pytest, write_project

HERE = Path(__file__).resolve().parent.parent

START_SCRIPT = r"""
import json, os, statistics, sys, time
import psycopg
from testlane.core.config import load_settings
from testlane.core.runtime import RunContext
from testlane.services.stack import ServiceStack

import testlane
assert testlane.__file__.startswith(sys.argv[3]), (testlane.__file__, sys.argv[3])
settings = load_settings(environ={}, overrides={"cache_dir": sys.argv[1], "data_dir": sys.argv[2]})
starts, connects = [], []
for i in range(6):
    stack = ServiceStack(settings, RunContext.from_settings(settings, owner=os.getpid()))
    t = time.perf_counter()
    stack.start(["postgres"])
    if i:  # the first start pays imports and a cold cache
        starts.append(time.perf_counter() - t)
    if i == 5:
        url = stack.servers["postgres"].url
        for _ in range(100):
            t = time.perf_counter()
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("SELECT 1").fetchone()
            connects.append(time.perf_counter() - t)
    stack.stop()
print(json.dumps({"warm_start_ms": statistics.median(starts) * 1000, "connect_ms": statistics.median(connects) * 1000}))
"""

FIGURES = ("warm_start_ms", "connect_ms", "db_in_test_ms", "txn_in_test_ms", "db_total_s")


def ab_medians(results: Mapping[str, Sequence[float]], figures: Sequence[str]) -> dict[str, float | None]:
    """For each figure, ``<figure>_a`` and ``<figure>_b`` (the medians of ``results["<figure>_a"]`` and
    ``["<figure>_b"]``, to 3 decimals) and ``<figure>_ratio`` (B / A; None when A is 0).

    The one A/B summary of bench/ab.py, bench/first_test.py and bench/background_clones.py."""
    out: dict[str, float | None] = {}
    for figure in figures:
        a = statistics.median(results[f"{figure}_a"])
        b = statistics.median(results[f"{figure}_b"])
        out[f"{figure}_a"], out[f"{figure}_b"] = round(a, 3), round(b, 3)
        out[f"{figure}_ratio"] = round(b / a, 3) if a else None
    return out


def ab_table(summary: Mapping[str, object], figures: Sequence[str]) -> list[str]:
    """The A/B table's lines: a header, then one row per figure: A, B and B/A from ``summary``
    (:func:`ab_medians`' keys), right-aligned under their headings."""
    width = max(len("figure"), *(len(f) for f in figures)) + 2
    lines = [f"{'figure':<{width}} {'A':>10} {'B':>10} {'B/A':>7}"]
    for figure in figures:
        a, b, ratio = (summary[f"{figure}_{part}"] for part in ("a", "b", "ratio"))
        lines.append(f"{figure:<{width}} {a!s:>10} {b!s:>10} {ratio!s:>7}")
    return lines


def print_ab(summary: Mapping[str, object], figures: Sequence[str], heading: Sequence[str], *, as_json: bool) -> None:
    """Print ``summary``: as JSON (``--json``), else the ``heading`` lines and :func:`ab_table`."""
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    print("\n".join([*heading, *ab_table(summary, figures)]))


def side_env(src: Path, cache: Path, data: Path) -> dict[str, str]:
    return {
        "PYTHONPATH": str(src),
        "TESTLANE_CACHE_DIR": str(cache),
        "TESTLANE_DATA_DIR": str(data),
        "TESTLANE_IT": "1",
    }


def measure_start(src: Path, cache: Path, data: Path) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TESTLANE_", "PYTEST_"))}
    env["PYTHONPATH"] = str(src)
    proc = subprocess.run(
        [sys.executable, "-c", START_SCRIPT, str(cache), str(data), str(src)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
    )
    if proc.returncode != 0:
        raise SystemExit(f"start-up benchmark failed for {src}:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", default="/work/main", help="checkout A (the baseline), default /work/main")
    parser.add_argument("--b", default=str(HERE), help="checkout B, default this script's checkout")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tests", type=int, default=200)
    parser.add_argument("--start-only", action="store_true", help="only warm_start_ms and connect_ms")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sides = {"a": Path(args.a).resolve() / "src", "b": Path(args.b).resolve() / "src"}
    for name, src in sides.items():
        if not (src / "testlane" / "__init__.py").is_file():
            raise SystemExit(f"--{name} {src.parent}: no src/testlane there")

    root = Path(tempfile.mkdtemp(prefix="testlane-bench-ab-", dir="/dev/shm"))
    os.chmod(root, 0o755)  # as root, the service user must reach the caches below
    results: dict[str, list[float]] = {f"{f}_{s}": [] for f in FIGURES for s in sides}
    anchors: list[float] = []
    try:
        nodb = write_project(root / "anchor", "nodb", args.tests)
        projects: dict[str, tuple[Path, Path, Path, Path]] = {}
        for side in sides:
            cache, data = root / side / "cache", root / side / "data"
            cache.mkdir(parents=True)
            os.chmod(root / side, 0o755)
            os.chmod(cache, 0o755)
            db = write_project(root / side / "db", "testlane", args.tests, "database")
            txn = write_project(root / side / "txn", "testlane", args.tests, "transaction")
            projects[side] = (cache, data, db, txn)
            # Warm this side's caches: the base cluster and the migrated snapshot.
            if args.start_only:
                measure_start(sides[side], cache, data)
                continue
            run_pytest(db, [], env_extra=side_env(sides[side], cache, data))
            run_pytest(txn, [], env_extra=side_env(sides[side], cache, data))
        figures = FIGURES[:2] if args.start_only else FIGURES
        for round_ in range(args.runs):
            if not args.start_only:
                anchors.append(run_pytest(nodb, [])[2] * 1000)
            order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
            for side in order:
                cache, data, db, txn = projects[side]
                env = side_env(sides[side], cache, data)
                start = measure_start(sides[side], cache, data)
                results[f"warm_start_ms_{side}"].append(start["warm_start_ms"])
                results[f"connect_ms_{side}"].append(start["connect_ms"])
                if args.start_only:
                    continue
                db_total, _first, db_per_test = run_pytest(db, [], env_extra=env)
                _total, _first, txn_per_test = run_pytest(txn, [], env_extra=env)
                anchor = anchors[-1]
                results[f"db_in_test_ms_{side}"].append(db_per_test * 1000 - anchor)
                results[f"txn_in_test_ms_{side}"].append(txn_per_test * 1000 - anchor)
                results[f"db_total_s_{side}"].append(db_total)
            print(f"round {round_ + 1}/{args.runs} done", file=sys.stderr)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    summary: dict[str, object] = {
        "runs": args.runs,
        "tests": args.tests,
        "a": str(sides["a"].parent),
        "b": str(sides["b"].parent),
        "anchor_per_test_ms": round(statistics.median(anchors), 3) if anchors else None,
    }
    summary.update(ab_medians(results, figures))
    heading = [
        f"A = {summary['a']}",
        f"B = {summary['b']}",
        f"medians of {args.runs} alternating rounds, {args.tests} tests",
        f"anchor (no database) per test: {summary['anchor_per_test_ms']} ms",
    ]
    print_ab(summary, figures, heading, as_json=args.json)


if __name__ == "__main__":
    main()
