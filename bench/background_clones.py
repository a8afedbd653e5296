"""Background clones against the running test: two checkouts side by side, one anchor, in-test figures.

Usage: python bench/background_clones.py [--a /work/main] [--b <this checkout>] [--runs 5] [--tests 100]
       [--tables 300] [--json]

The suite: ``--tests`` tests in ``database`` isolation on a template of ``--tables`` tables, one of them seeded
(10 rows); every test writes the seeded table, so no released database can be reset (``TRUNCATE`` would lose
the seed) and the pool clones a new database for every test in the background, on the same cores as the
next tests. Per test, the in-test time (set-up to tear-down, ``pytest_runtest_protocol``, first and last
left out) is recorded as in bench/isolation.py; ``in_test_ms`` is a side's median minus the anchor's (the same
tests on a fake connection, no database, run once per round), ``waited`` how many tests found no database
ready (``PoolStats.waited + on_demand``), ``exit_s`` the time from the last test's end to the process's exit
(the pool closing over the used databases, the server stopping). Each side is a source tree put first on
``PYTHONPATH`` with its own caches; rounds alternate the order; figures are medians, ratios B / A.
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
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests.helpers

from ab import ab_medians, print_ab
from isolation import TIMING_CONFTEST
from tests.helpers import FOREIGN_PLUGINS_OFF, inner_pyproject

HERE = Path(__file__).resolve().parent.parent

POOL_STATS = """

_config = []

def pytest_configure(config):
    _config.append(config)

def pytest_runtest_logfinish(nodeid, location):  # the pools are closed at the session's end: read them here
    import json, os
    plugin = _config[0].pluginmanager.get_plugin("testlane-session")
    pools = list(getattr(getattr(plugin, "_databases", None), "_pools", {}).values())
    waited = sum(pool.stats.waited + pool.stats.on_demand for pool in pools)
    with open(os.environ["BENCH_OUT"] + ".pool", "w") as fh:
        json.dump({"waited": waited}, fh)
"""

TEST = """
def test_{i}({conn}):
    {conn}.execute("INSERT INTO seeded (name) VALUES (%s)", ("item-{i}",))
    {conn}.execute("SELECT count(*) FROM seeded").fetchall()
    {conn}.commit()
"""


def migration(tables: int) -> str:
    parts = ["CREATE TABLE seeded (id serial PRIMARY KEY, name text NOT NULL);"]
    parts.append("INSERT INTO seeded (name) SELECT 'seed-' || g FROM generate_series(1, 10) g;")
    for t in range(tables - 1):
        parts.append(f"CREATE TABLE t{t} (id serial PRIMARY KEY, name text NOT NULL, v int);")
        parts.append(f"CREATE INDEX ON t{t} (name);")
    return "\n".join(parts) + "\n"


def write_project(root: Path, n: int, tables: int, *, anchor: bool) -> Path:
    root.mkdir(parents=True)
    (root / "migrations").mkdir()
    (root / "migrations" / "001.sql").write_text(migration(tables))
    (root / "conftest.py").write_text(TIMING_CONFTEST + POOL_STATS)
    (root / "pyproject.toml").write_text(
        "[tool.pytest.ini_options]\n" if anchor else inner_pyproject(name="bench", db='isolation = "database"')
    )
    conn = "fake_conn" if anchor else "pg_conn"
    (root / "test_suite_it.py").write_text("".join(TEST.format(i=i, conn=conn) for i in range(n)))
    return root


def run(project: Path, env_extra: dict[str, str], extra: list[str]) -> dict[str, float]:
    out = project / f"timing-{time.monotonic_ns()}.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TESTLANE_", "PYTEST_"))}
    env.update({"BENCH_OUT": str(out), **env_extra})
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:django"]
    argv += [*FOREIGN_PLUGINS_OFF, *extra]
    proc = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True, check=False)
    ended = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"suite failed in {project}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    timing = json.loads(out.read_text())
    pool = json.loads(Path(str(out) + ".pool").read_text()) if Path(str(out) + ".pool").exists() else {}
    return {
        "per_test_ms": timing["per_test"] * 1000,
        "waited": float(pool.get("waited", 0)),
        "exit_s": ended - timing["end"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", default="/work/main", help="checkout A (the baseline), default /work/main")
    parser.add_argument("--b", default=str(HERE), help="checkout B, default this script's checkout")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tests", type=int, default=100)
    parser.add_argument("--tables", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sides = {"a": Path(args.a).resolve() / "src", "b": Path(args.b).resolve() / "src"}
    root = Path(tempfile.mkdtemp(prefix="testlane-bench-bg-", dir="/dev/shm"))
    os.chmod(root, 0o755)  # as root, the service user must reach the caches below
    figures = ("in_test_ms", "waited", "exit_s")
    results: dict[str, list[float]] = {f"{f}_{s}": [] for f in figures for s in sides}
    anchors: list[float] = []
    try:
        anchor = write_project(root / "anchor", args.tests, args.tables, anchor=True)
        anchor_env = {"PYTHONPYCACHEPREFIX": str(root / "anchor-pycache")}
        envs: dict[str, dict[str, str]] = {}
        projects: dict[str, Path] = {}
        for side, src in sides.items():
            cache = root / side / "cache"
            cache.mkdir(parents=True)
            os.chmod(root / side, 0o755)
            os.chmod(cache, 0o755)
            envs[side] = {
                "PYTHONPATH": str(src),
                "TESTLANE_CACHE_DIR": str(cache),
                "TESTLANE_DATA_DIR": str(root / side / "data"),
                "TESTLANE_IT": "1",
                "PYTHONPYCACHEPREFIX": str(root / side / "pycache"),
            }
            projects[side] = write_project(root / side / "project", args.tests, args.tables, anchor=False)
            run(projects[side], envs[side], [])  # builds the template's snapshot
        for round_ in range(args.runs):
            anchors.append(run(anchor, anchor_env, ["-p", "no:testlane"])["per_test_ms"])
            for side in sides if round_ % 2 == 0 else reversed(list(sides)):
                got = run(projects[side], envs[side], [])
                results[f"in_test_ms_{side}"].append(got["per_test_ms"] - anchors[-1])
                results[f"waited_{side}"].append(got["waited"])
                results[f"exit_s_{side}"].append(got["exit_s"])
            print(f"round {round_ + 1}/{args.runs} done", file=sys.stderr)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    summary: dict[str, object] = {
        "runs": args.runs,
        "tests": args.tests,
        "tables": args.tables,
        "a": str(sides["a"].parent),
        "b": str(sides["b"].parent),
        "anchor_per_test_ms": round(statistics.median(anchors), 3),
    }
    summary.update(ab_medians(results, figures))
    heading = [
        f"A = {summary['a']}",
        f"B = {summary['b']}",
        f"medians of {args.runs} alternating rounds, {args.tests} tests, {args.tables} tables (one seeded)",
        f"anchor (no database) per test: {summary['anchor_per_test_ms']} ms",
    ]
    print_ab(summary, figures, heading, as_json=args.json)


if __name__ == "__main__":
    main()
