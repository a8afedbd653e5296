"""Time to first test, Postgres + Valkey, whole pytest process: two checkouts side by side, one anchor.

Usage: python bench/first_test.py [--a /work/main] [--b <this checkout>] [--runs 7] [--tests 50] [--cold]
[--dont-write-bytecode] [--runner pytest|testlane] [--json]

The project: ``services = ["postgres", "valkey"]``, one migration (one table), ``--tests`` tests each using
``pg_conn`` (``database`` isolation) and ``redis_client``. Each side is a source tree put first on
``PYTHONPATH`` (same interpreter and packages), with its own cache and data directories on tmpfs. Rounds
alternate the order of the sides. Per run, from spawning ``python -m pytest`` (wall clock, ``time.time``):

* ``first_s``: to the first test's call (its fixtures set up): the issue's *time to first test*;
* ``first_cpu_s``: the CPU time of pytest's thread until then (less sensitive to the machine's load than
  ``first_s``: what the other threads and processes overlap is not in it);
* ``setup_ms``: the first test's set-up alone (waiting for the servers, the template, its database);
* ``exit_s``: from the last test's end to the process's exit (closing pools, stopping servers);
* ``waited``: how many tests found no database ready in the pool (``PoolStats.waited + on_demand``).

Bytecode is cached per side outside the source trees (``PYTHONPYCACHEPREFIX``), as an installed package
has it; the first run of each side fills the caches and is not counted. ``PYTHONDONTWRITEBYTECODE`` is
removed from the runs' environment (set, as in this machine's sessions, no cache is ever written: every
module is compiled on every run, and pytest rewrites testlane's modules, a pytest plugin's, every run);
``--dont-write-bytecode`` keeps it set, for that case. The anchor is pytest's own start: the same number of
tests on a no-service project (``-p no:testlane``), time to its first test's call. ``past_anchor_s`` =
``first_s`` - the anchor's (the issue's "services past pytest's own start"), ``past_anchor_cpu_s`` the same
for ``first_cpu_s``. ``--cold`` removes the side's cache before each run (``initdb`` and the template's
snapshot are rebuilt). ``--runner testlane``: the sides' runs are ``testlane run`` processes (it starts the
services and pytest in a child; the clock starts when ``testlane run`` is spawned, ``first_cpu_s`` is the child's
pytest thread's), the anchor stays a plain pytest. Figures are medians; ratios are B / A.
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
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests.helpers
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/: ab
from ab import ab_medians, print_ab
from tests.helpers import FOREIGN_PLUGINS_OFF, inner_pyproject

HERE = Path(__file__).resolve().parent.parent
MIGRATION = "CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL);\n"

CONFTEST = textwrap.dedent(
    """
    import json, os, time
    import pytest
    _marks = {}

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(item):
        _marks.setdefault("setup", time.time())

    def pytest_runtest_call(item):
        _marks.setdefault("first", time.time())
        _marks.setdefault("first_cpu", time.thread_time())  # pytest's thread, since the process started

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logfinish(nodeid, location):
        _marks["last_end"] = time.time()

    @pytest.fixture
    def fake_conn():
        return None

    def pytest_sessionfinish(session):
        stats = {}
        plugin = session.config.pluginmanager.get_plugin("testlane-session")
        manager = getattr(plugin, "_databases", None)
        for pool in getattr(manager, "_pools", {}).values():
            stats = {"waited": pool.stats.waited + pool.stats.on_demand}
        _marks.update(stats)
        with open(os.environ["BENCH_OUT"], "w") as fh:
            json.dump(_marks, fh)
    """
)

TEST = """
def test_{i}(pg_conn, redis_client):
    pg_conn.execute("INSERT INTO items (name) VALUES ('x')")
    pg_conn.commit()
    redis_client.set("k", "v")
"""
ANCHOR_TEST = """
def test_{i}(fake_conn):
    assert fake_conn is None
"""


def write_project(root: Path, n: int, *, services: bool) -> Path:
    root.mkdir(parents=True)
    (root / "migrations").mkdir()
    (root / "migrations" / "001.sql").write_text(MIGRATION)
    (root / "conftest.py").write_text(CONFTEST)
    pyproject = inner_pyproject(name="bench", services='["postgres", "valkey"]', db="")
    (root / "pyproject.toml").write_text(pyproject if services else "[tool.pytest.ini_options]\n")
    body = TEST if services else ANCHOR_TEST
    (root / "test_suite_it.py").write_text("".join(body.format(i=i) for i in range(n)))
    return root


def run(project: Path, env_extra: dict[str, str], extra: list[str], runner: str = "pytest") -> dict[str, float]:
    out = project / f"timing-{time.monotonic_ns()}.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TESTLANE_", "PYTEST_"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # the caches described above; --dont-write-bytecode sets it again
    env.update({"BENCH_OUT": str(out), **env_extra})
    argv = [sys.executable, "-m", "pytest"] if runner == "pytest" else [sys.executable, "-m", "testlane", "run", "--"]
    argv += ["-q", "-p", "no:cacheprovider", "-p", "no:django", *FOREIGN_PLUGINS_OFF, *extra]
    started = time.time()
    proc = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True, check=False)
    ended = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"suite failed in {project}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    marks = json.loads(out.read_text())
    out.unlink()
    return {
        "first_s": marks["first"] - started,
        "first_cpu_s": marks["first_cpu"],
        "setup_ms": (marks["first"] - marks["setup"]) * 1000,
        "exit_s": ended - marks["last_end"],
        "waited": float(marks.get("waited", 0)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", default="/work/main", help="checkout A (the baseline), default /work/main")
    parser.add_argument("--b", default=str(HERE), help="checkout B, default this script's checkout")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--tests", type=int, default=50)
    parser.add_argument("--cold", action="store_true", help="remove the side's cache before each run")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--runner", choices=("pytest", "testlane"), default="pytest", help="the sides' runs")
    parser.add_argument(
        "--dont-write-bytecode", action="store_true", help="PYTHONDONTWRITEBYTECODE=1 in the runs: no bytecode cache"
    )
    args = parser.parse_args()
    no_cache = {"PYTHONDONTWRITEBYTECODE": "1"} if args.dont_write_bytecode else {}
    sides = {"a": Path(args.a).resolve() / "src", "b": Path(args.b).resolve() / "src"}
    root = Path(tempfile.mkdtemp(prefix="testlane-bench-first-", dir="/dev/shm"))
    os.chmod(root, 0o755)  # as root, the service user must reach the caches below
    figures = ("first_s", "past_anchor_s", "first_cpu_s", "past_anchor_cpu_s", "setup_ms", "exit_s", "waited")
    results: dict[str, list[float]] = {f"{f}_{s}": [] for f in figures for s in sides}
    anchors: list[float] = []
    anchors_cpu: list[float] = []
    load_before = os.getloadavg()[0]
    try:
        anchor = write_project(root / "anchor", args.tests, services=False)
        anchor_env = {"PYTHONPYCACHEPREFIX": str(root / "anchor-pycache"), **no_cache}
        run(anchor, anchor_env, ["-p", "no:testlane"])
        envs: dict[str, dict[str, str]] = {}
        projects: dict[str, Path] = {}
        for side, src in sides.items():
            cache, data = root / side / "cache", root / side / "data"
            cache.mkdir(parents=True)
            os.chmod(root / side, 0o755)
            os.chmod(cache, 0o755)
            envs[side] = {
                "PYTHONPATH": str(src),
                "TESTLANE_CACHE_DIR": str(cache),
                "TESTLANE_DATA_DIR": str(data),
                "TESTLANE_IT": "1",
                # Bytecode as an installed package has it, kept out of the source trees.
                "PYTHONPYCACHEPREFIX": str(root / side / "pycache"),
                **no_cache,
            }
            projects[side] = write_project(root / side / "project", args.tests, services=True)
            run(projects[side], envs[side], [], args.runner)  # warm this side's caches
        for round_ in range(args.runs):
            anchor_run = run(anchor, anchor_env, ["-p", "no:testlane"])
            anchors.append(anchor_run["first_s"])
            anchors_cpu.append(anchor_run["first_cpu_s"])
            for side in sides if round_ % 2 == 0 else reversed(list(sides)):
                if args.cold:
                    cache = Path(envs[side]["TESTLANE_CACHE_DIR"])
                    shutil.rmtree(cache)
                    cache.mkdir()
                    os.chmod(cache, 0o755)
                figures_run = run(projects[side], envs[side], [], args.runner)
                figures_run["past_anchor_s"] = figures_run["first_s"] - anchors[-1]
                figures_run["past_anchor_cpu_s"] = figures_run["first_cpu_s"] - anchors_cpu[-1]
                for figure in figures:
                    results[f"{figure}_{side}"].append(figures_run[figure])
            print(f"round {round_ + 1}/{args.runs} done", file=sys.stderr)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    summary: dict[str, object] = {
        "runs": args.runs,
        "tests": args.tests,
        "cold": args.cold,
        "runner": args.runner,
        "bytecode_cache": not args.dont_write_bytecode,
        "a": str(sides["a"].parent),
        "b": str(sides["b"].parent),
        "anchor_first_s": round(statistics.median(anchors), 3),
        "anchor_first_cpu_s": round(statistics.median(anchors_cpu), 3),
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # 1-minute, before and after
    }
    summary.update(ab_medians(results, figures))
    heading = [
        f"A = {summary['a']}",
        f"B = {summary['b']}",
        f"medians of {args.runs} alternating rounds, {args.tests} tests",
        f"anchor (pytest's own start, no services): first test at {summary['anchor_first_s']} s, "
        f"{summary['anchor_first_cpu_s']} s CPU",
        f"bytecode cache: {summary['bytecode_cache']}; load average (1 min) before, after: {summary['load_average']}",
    ]
    print_ab(summary, figures, heading, as_json=args.json)


if __name__ == "__main__":
    main()
