"""What one reset of the pool costs in Python, 1 table: the CPU of the worker thread that runs it, A/B.

Usage: python bench/reset_cpu.py [--tests 400] [--rounds 4] [--before SRC] [--json]

A testlane Postgres server; a template of one table (``items``, a serial key); a pool of 4 with one worker
thread; ``--tests`` times: take a database, insert a row on its connection, commit, give it back (the worker
resets it: process scan, sanitize, counters read, plan, ``DELETE``/``setval``), 4 ms apart so that the resets
do not queue. Measured around ``PostgresDatabaseEngine.reset`` on the worker thread: ``time.thread_time``
(the Python and libpq work that holds the interpreter lock) and the wall time; medians past the first 20
resets. Every reset must reuse the database (none dropped).

With ``--before SRC`` (the ``src`` directory of another checkout) each round runs that code and this
checkout's, one process each, alternately; figures are the medians over rounds of each process's median.

JSON keys: ``tests``, ``rounds``, ``cpu_ms``, ``wall_ms`` and, with ``--before``, ``before_cpu_ms``,
``before_wall_ms``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def measure(tests: int) -> dict[str, float]:
    from testlane.core.config import load_settings
    from testlane.core.runtime import RunContext
    from testlane.databases.postgres_engine import PostgresDatabaseEngine, PostgresPool
    from testlane.services.postgres import PostgresServer
    from testlane.services.stack import ServiceStack

    times: list[tuple[float, float]] = []
    reset = PostgresDatabaseEngine.reset

    def timed(self: PostgresDatabaseEngine, lease: object, **kwargs: object) -> object:
        cpu, wall = time.thread_time(), time.perf_counter()
        try:
            return reset(self, lease, **kwargs)  # type: ignore[arg-type]
        finally:
            times.append((time.thread_time() - cpu, time.perf_counter() - wall))

    PostgresDatabaseEngine.reset = timed  # type: ignore[assignment,method-assign]
    settings = load_settings(environ={})
    with ServiceStack(settings, RunContext.from_settings(settings, owner=os.getpid())) as stack:
        server = stack.start(["postgres"])["postgres"]
        assert isinstance(server, PostgresServer)
        with server.connect(autocommit=True) as admin:
            admin.execute("DROP DATABASE IF EXISTS bench_reset_cpu")
            admin.execute("CREATE DATABASE bench_reset_cpu")
        with server.connect("bench_reset_cpu", autocommit=True) as conn:
            conn.execute("CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL)")
        with server.connect(autocommit=True) as admin:
            admin.execute("ALTER DATABASE bench_reset_cpu ALLOW_CONNECTIONS false")  # as a sealed template
        engine = PostgresDatabaseEngine(server)
        pool = PostgresPool(engine, "bench_reset_cpu", run_id="bench", worker="cpu", size=4, workers=1).start()
        try:
            for i in range(tests):
                lease = pool.acquire(wait=5)
                with lease.connection(lambda: None) as conn:  # type: ignore[arg-type,return-value]
                    conn.execute("INSERT INTO items (name) VALUES (%s)", (f"item-{i}",))
                    conn.commit()
                pool.release(lease)
                time.sleep(0.004)  # a test's pace: the resets do not queue
        finally:
            pool.close()
        if pool.stats.reused_truncated < tests - 10:
            raise SystemExit(f"databases were not reset: {pool.stats}")
    steady = times[20:]
    return {
        "cpu_ms": statistics.median(cpu for cpu, _ in steady) * 1000,
        "wall_ms": statistics.median(wall for _, wall in steady) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tests", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--before", help="src directory of the code to compare against")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.tests)))
        return
    sides = {"": SRC, **({"before_": Path(args.before).resolve()} if args.before else {})}
    results: dict[str, list[dict[str, float]]] = {prefix: [] for prefix in sides}
    for _ in range(args.rounds):
        for prefix, src in reversed(sides.items()):
            env = {**os.environ, "PYTHONPATH": str(src)}
            argv = [sys.executable, __file__, "--child", "--tests", str(args.tests)]
            out = subprocess.run(argv, env=env, check=True, capture_output=True, text=True).stdout
            results[prefix].append(json.loads(out.strip().splitlines()[-1]))
    summary: dict[str, object] = {"tests": args.tests, "rounds": args.rounds}
    for prefix, runs in results.items():
        for key in ("cpu_ms", "wall_ms"):
            summary[prefix + key] = round(statistics.median(run[key] for run in runs), 3)
    if args.json:
        print(json.dumps(summary))
        return
    for prefix in sides:
        name = prefix.rstrip("_") or "this checkout"
        print(f"{name}: reset CPU {summary[prefix + 'cpu_ms']} ms, wall {summary[prefix + 'wall_ms']} ms")


if __name__ == "__main__":
    main()
