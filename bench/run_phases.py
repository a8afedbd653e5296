"""Where the time to first test goes, phase by phase, `pytest --it` and `testlane run`, nothing edited and the last
of 60 Alembic migrations edited (issue 19's migration row).

Usage: python bench/run_phases.py [--checkout <path>] [--runs 5] [--migrations 60] [--sleep-ms 20]

The project is bench/migration_edit.py's (its revisions, its one test asking for ``pg_conn``), on tmpfs with its
own cache and data directories, the checkout's sources first on ``PYTHONPATH``. A probe plugin (``-p probe``, in
the project) records wall-clock times (``time.time()``, from spawning the process) at its own import, at the
start of ``pytest_load_initial_conftests`` (under ``testlane run``: once pytest has the services' variables),
``pytest_configure``, ``pytest_sessionstart`` (start and end), the end of collection, the first test's set-up
and call, and the process's exit. Per runner, rounds alternate: unchanged, then the last revision edited (a new
column each time). Figures are medians in seconds; ``edited - unchanged`` per phase is the edit's cost there.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/: migration_edit
import migration_edit

PROBE = """
import atexit, json, os, time
import pytest
MARKS = {"probe_import": time.time()}
atexit.register(lambda: open(os.environ["PROBE_OUT"], "w").write(json.dumps(MARKS)))

@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args):
    MARKS["load_initial_conftests"] = time.time()

@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    MARKS["configure"] = time.time()

@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_sessionstart(session):
    MARKS["sessionstart"] = time.time()
    yield
    MARKS["sessionstart_end"] = time.time()

def pytest_collection_finish(session):
    MARKS["collected"] = time.time()

@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    MARKS.setdefault("setup", time.time())

@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    MARKS.setdefault("call", time.time())
"""

PHASES = (
    "probe_import",
    "load_initial_conftests",
    "configure",
    "sessionstart",
    "sessionstart_end",
    "collected",
    "setup",
    "call",
    "exit",
)


def run(side: migration_edit.Side, runner: str) -> dict[str, float]:
    out = side.root / "probe.json"
    env = {
        **side.python_env(),
        "TESTLANE_CACHE_DIR": str(side.cache),
        "TESTLANE_DATA_DIR": str(side.data),
        "BENCH_FIRST_TEST": str(side.root / "first-test"),
        "PROBE_OUT": str(out),
    }
    argv = migration_edit.runner_argv(runner, ["-q", "-p", "no:cacheprovider", "-p", "probe", "test_first.py"])
    started = time.time()
    proc = subprocess.run(argv, cwd=side.project, env=env, capture_output=True, text=True, check=False)
    ended = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"{runner}: the run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    marks = json.loads(out.read_text())
    return {**{k: v - started for k, v in marks.items()}, "exit": ended - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--migrations", type=int, default=60)
    parser.add_argument("--sleep-ms", type=float, default=20.0, help="pg_sleep in every revision (default 20)")
    args = parser.parse_args()
    migration_edit.SLEEP_S = args.sleep_ms / 1000
    side = migration_edit.Side("phases", args.checkout, args.migrations)
    (side.project / "probe.py").write_text(PROBE)
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    try:
        for runner in ("pytest", "testlane"):
            run(side, runner)  # the snapshot, the bytecode caches
            run(side, runner)
        for _ in range(args.runs):
            for runner in ("pytest", "testlane"):
                results.setdefault((runner, "unchanged"), []).append(run(side, runner))
                side.edit_last()
                results.setdefault((runner, "edited"), []).append(run(side, runner))
    finally:
        side.close()
    print(
        f"{args.migrations} Alembic migrations (+{args.sleep_ms:g} ms each); seconds from spawning the process, "
        f"medians of {args.runs}; checkout {args.checkout}"
    )
    print(f"{'runner':<10}{'run':<11}" + "".join(f"{p[:14]:>15}" for p in PHASES))
    for (runner, kind), rows in results.items():
        medians = {p: statistics.median(r[p] for r in rows) for p in PHASES}
        print(f"{runner:<10}{kind:<11}" + "".join(f"{medians[p]:>15.3f}" for p in PHASES))
    for runner in ("pytest", "testlane"):
        unchanged, edited = results[(runner, "unchanged")], results[(runner, "edited")]
        cost = [statistics.median(e[p] for e in edited) - statistics.median(u[p] for u in unchanged) for p in PHASES]
        print(f"{runner:<10}{'edit costs':<11}" + "".join(f"{c:>+15.3f}" for c in cost))


if __name__ == "__main__":
    main()
