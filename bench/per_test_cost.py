"""Where a test's milliseconds go under pytest, 1 table: `database` and `transaction` isolation, A/B.

Usage: python bench/per_test_cost.py [--tests 200] [--runs 5] [--before SRC] [--only V1,V2] [--json]

The suite of ``bench/isolation.py`` (each test inserts a row with ``pg_conn``, selects it back, commits), as
its own pytest process per variant, all interleaved, ``--runs`` times (medians):

* ``nodb`` (the anchor: a fake connection) and ``shared`` (one warm connection for the session: the test's own
  statements);
* ``database`` and ``transaction``: testlane's isolation modes; with ``--before SRC`` (the ``src`` directory
  of another checkout, e.g. ``git worktree add --detach /tmp/before main``) each runs a second time with that
  code first on ``PYTHONPATH``;
* ``database_reset_between``, a diagnostic: ``database`` mode with each released database reset on pytest's
  thread *after* the test's ``pytest_runtest_protocol`` instead of by the pool's worker while the next test
  runs. Its in-test time is what a test costs with nothing running beside it; the difference to ``database``
  is what the background reset costs the test by running on the same two cores (and taking the GIL);
* three more diagnostics of ``database`` mode, each replacing the pool's reset: ``database_reset_process``,
  the reset done by a child process per pool (``bench/reset_process.py``: the same code, no interpreter lock
  shared with the test; the test's session sanitized by the pool's worker); ``database_reset_sql_only``, the
  statements a reset of this suite's test sends, replayed by libpq calls on the pool's worker (the server's
  work of a reset, almost none of its Python: no process scan, no parsing, no planning); and
  ``database_no_reset``, the released database handed out again as it is (no work beside the next test: a
  floor, not an isolation).

Each process records, per test, the wall time from set-up to tear-down (``pytest_runtest_protocol``, the
first and last tests left out) and the CPU time of pytest's thread in that span (``time.thread_time``);
the CPU of every process of the run per test — pytest's, the server's and its backends', a reset process's
(user + system, from ``os.times`` and ``/proc/<pid>/stat``, between the 21st and the last test, divided by
the tests in between); and, from testlane's pool (``database`` variants): how many tests waited for a
database, and the median wall time of a background reset; the set-up, call and tear-down phases
(``pytest_runtest_setup``/``call``/``teardown``) and, in ``transaction`` mode, ``SavepointConnection.end_test``
(the end-of-test round trip, inside the tear-down). Figures are per test, medians over runs of each
process's median, minus the anchor's (``in-test``, the phases); the CPU columns likewise. The bytecode cache is on
(``PYTHONDONTWRITEBYTECODE`` removed). ``--only`` runs those variants (and the anchor).

JSON keys (``--json``): ``tests``, ``runs``, ``nodb_wall_ms``; per variant ``<v>_in_test_ms``, ``<v>_cpu_ms``
(pytest's thread, minus the anchor's), ``<v>_all_cpu_ms`` (every process, minus the anchor's),
``<v>_setup_ms``, ``<v>_call_ms``, ``<v>_teardown_ms`` (minus the anchor's), ``<v>_end_ms`` (transaction
variants), ``<v>_waited`` and ``<v>_reset_ms`` (database variants), for ``shared``, ``database``, ``transaction``,
``database_reset_between``, ``database_reset_process``, ``database_reset_sql_only``, ``database_no_reset``
and, with ``--before``, ``database_before`` and ``transaction_before``; and ``<v>_runs_ms``, each run's
in-test median in run order (not minus the anchor; ``nodb`` included), for paired readings.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/: isolation's helpers
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests.helpers
from isolation import FAKE_CONNECTION, MIGRATION, SHARED_HEADER, TEST, kill_leftovers, stop_pytest
from tests.helpers import inner_pyproject

SRC = Path(__file__).resolve().parents[1] / "src"
BENCH = Path(__file__).resolve().parent

CONFTEST = """
import json, os, statistics, threading, time
import pytest

{fake_connection}
_walls, _cpus, _resets, _pools = [], [], [], []
_phases = {"setup": [], "call": [], "teardown": [], "end": []}  # per test; "end": SavepointConnection.end_test
_pending = []
_tree = []  # CPU seconds of this process and every process under it, at the second and the last test
_TICK = os.sysconf("SC_CLK_TCK")
_WARM = 20

def _tree_cpu():
    # User + system CPU of this process (all threads, reaped children included) and of every live process
    # under it (the server and its backends, reset processes), each with its own reaped children.
    times = os.times()
    total = times.user + times.system + times.children_user + times.children_system
    pending = [str(os.getpid())]
    while pending:
        pid = pending.pop()
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as fh:
                    for child in fh.read().split():
                        with open(f"/proc/{child}/stat") as st:
                            fields = st.read().rsplit(")", 1)[1].split()
                        total += sum(int(n) for n in fields[11:15]) / _TICK  # utime stime cutime cstime
                        pending.append(child)
        except OSError:
            continue  # (a process that just exited: its time is in its parent's cutime)
    return total

def _instrument():
    try:
        from testlane.databases import pool, postgres_engine
    except ImportError:
        return
    if os.environ.get("BENCH_RESET_PROCESS"):
        import sys
        sys.path.insert(0, os.environ["BENCH_RESET_PROCESS"])
        import reset_process
        reset_process.install()
    reset = postgres_engine.PostgresDatabaseEngine.reset

    def timed_reset(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return reset(self, *args, **kwargs)
        finally:
            _resets.append(time.perf_counter() - started)

    postgres_engine.PostgresDatabaseEngine.reset = timed_reset
    from testlane.databases import transaction
    end_test = transaction.SavepointConnection.end_test

    def timed_end(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return end_test(self, *args, **kwargs)
        finally:
            _phases["end"].append(time.perf_counter() - started)

    transaction.SavepointConnection.end_test = timed_end
    init = pool.ClonePool.__init__

    def kept_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        _pools.append(self)

    pool.ClonePool.__init__ = kept_init
    if os.environ.get("BENCH_RESET_BETWEEN"):
        def release_later(self, lease, *, keep=False):
            with self._cond:
                self._resetting += 1  # on its way: the workers do not clone in its place
            lease.released_at = time.monotonic()
            _pending.append((self, lease))

        pool.ClonePool.release = release_later
    if os.environ.get("BENCH_RESET_NONE"):
        def recycle_none(self, lease):  # the lease back as it is: no work at all beside the next test
            with self._cond:
                self._resetting -= 1
                self._ready.append(lease)
                self._cond.notify_all()

        pool.ClonePool._recycle = recycle_none
    if os.environ.get("BENCH_RESET_SQL_ONLY"):
        from psycopg import generators
        from testlane.databases import reset as tl_reset

        # What a reset of this suite's test (one row, one sequence value) sends, as one simple-query string
        # each, on the released connection, by libpq calls: the server's work of a reset, almost no Python.
        restore = (
            "SET LOCAL session_replication_role = replica; SET LOCAL row_security = off; "
            "DELETE FROM ONLY public.items; SELECT setval('public.items_id_seq', 1, false); DISCARD SEQUENCES; "
            + tl_reset._OWN_CHANGES.format(oids="'public.items'::regclass, 'public.items_id_seq'::regclass")
            + "; " + tl_reset._FLUSH
        ).encode()
        sanitize = tl_reset.SANITIZE.encode()

        def recycle_sql(self, lease):
            started = time.perf_counter()
            conn = lease.conn
            for query in (sanitize, tl_reset.counters_query(lease.baseline).encode(), restore):
                conn.pgconn.send_query(query)
                conn.wait(generators.execute(conn.pgconn))
            _resets.append(time.perf_counter() - started)
            with self._cond:
                self._resetting -= 1
                self._ready.append(lease)
                self._cond.notify_all()

        pool.ClonePool._recycle = recycle_sql

_instrument()

@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    if len(_walls) == _WARM or nextitem is None:  # past the first tests: a process started then is warm
        _tree.append((len(_walls), _tree_cpu()))
    started, cpu = time.perf_counter(), time.thread_time()
    yield
    _cpus.append(time.thread_time() - cpu)
    _walls.append(time.perf_counter() - started)
    while _pending:  # BENCH_RESET_BETWEEN: the pool's reset, here, between two tests
        owner, lease = _pending.pop()
        owner._recycle(lease)

def _phase(name):
    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def timed(item):
        started = time.perf_counter()
        yield
        _phases[name].append(time.perf_counter() - started)

    return timed

pytest_runtest_setup, pytest_runtest_call, pytest_runtest_teardown = map(_phase, ("setup", "call", "teardown"))

def pytest_sessionfinish(session):
    def median(values):
        values = sorted(values[1:-1])  # the first and last tests pay session set-up/tear-down
        return values[len(values) // 2] if values else None

    waited = sum(p.stats.waited for p in _pools)
    (first, cpu_first), (last, cpu_last) = _tree
    out = {"wall": median(_walls), "cpu": median(_cpus), "waited": waited,
           "reset": statistics.median(_resets) if _resets else None,
           "tree_cpu": (cpu_last - cpu_first) / (last - first),
           **{name: median(values) for name, values in _phases.items()}}
    with open(os.environ["BENCH_OUT"], "w") as fh:
        json.dump(out, fh)
""".replace("{fake_connection}", FAKE_CONNECTION)


def write_project(root: Path, name: str, conn: str, n: int, isolation: str = "database") -> Path:
    project = root / name
    shutil.rmtree(project, ignore_errors=True)
    (project / "migrations").mkdir(parents=True)
    (project / "migrations" / "001.sql").write_text(MIGRATION)
    (project / "conftest.py").write_text(CONFTEST)
    (project / "pyproject.toml").write_text(inner_pyproject(name="bench", db=f'isolation = "{isolation}"'))
    header = SHARED_HEADER if conn == "shared_conn" else ""
    filename = "test_suite.py" if conn == "fake_conn" else "test_suite_it.py"
    (project / filename).write_text(header + "".join(TEST.format(i=i, conn=conn) for i in range(n)))
    return project


def run(project: Path, src: Path, env_extra: dict[str, str]) -> dict[str, float | None]:
    """One pytest process on ``project`` with testlane from ``src``; the conftest's figures."""
    out = project / f"timing-{time.monotonic_ns()}.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TESTLANE_", "PYTEST_"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # the bytecode cache, as a user has it
    env.update({"BENCH_OUT": str(out), "PYTHONPATH": str(src), **env_extra})
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    log = project / f"pytest-{time.monotonic_ns()}.log"
    with open(log, "w") as output:
        proc = subprocess.Popen(argv, cwd=project, env=env, stdout=output, stderr=subprocess.STDOUT)
        try:
            code = proc.wait()
        except BaseException:
            stop_pytest(proc)  # type: ignore[arg-type]
            raise
    if code != 0:
        raise SystemExit(f"benchmark suite failed in {project}:\n{log.read_text()[-6000:]}")
    return json.loads(out.read_text())  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tests", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--before", help="src directory of the code to compare against")
    parser.add_argument("--only", help="comma-separated variants to run (the anchor always runs)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="testlane-bench-ptc-", dir="/dev/shm"))
    it = {"TESTLANE_IT": "1"}
    before = Path(args.before).resolve() if args.before else None
    try:
        projects = {
            "nodb": write_project(root, "nodb", "fake_conn", args.tests),
            "shared": write_project(root, "shared", "shared_conn", args.tests),
            "database": write_project(root, "database", "pg_conn", args.tests),
            "transaction": write_project(root, "transaction", "pg_conn", args.tests, "transaction"),
        }
        cases: list[tuple[str, Path, Path, dict[str, str]]] = [
            ("nodb", projects["nodb"], SRC, {}),
            ("shared", projects["shared"], SRC, it),
            ("database", projects["database"], SRC, it),
            ("transaction", projects["transaction"], SRC, it),
            ("database_reset_between", projects["database"], SRC, {**it, "BENCH_RESET_BETWEEN": "1"}),
            ("database_reset_process", projects["database"], SRC, {**it, "BENCH_RESET_PROCESS": str(BENCH)}),
            ("database_reset_sql_only", projects["database"], SRC, {**it, "BENCH_RESET_SQL_ONLY": "1"}),
            ("database_no_reset", projects["database"], SRC, {**it, "BENCH_RESET_NONE": "1"}),
        ]
        if before is not None:
            cases.insert(3, ("database_before", projects["database"], before, it))
            cases.append(("transaction_before", projects["transaction"], before, it))
        if args.only:
            wanted = {"nodb", *args.only.split(",")}
            cases = [case for case in cases if case[0] in wanted]
        for project in {case[1] for case in cases[1:] if case[1] != projects["shared"]}:
            run(project, SRC, it)  # the template and its snapshot, once
        results: dict[str, list[dict[str, float | None]]] = {key: [] for key, *_ in cases}
        for index in range(args.runs):
            shift = index % len(cases)
            for key, project, src, env in cases[shift:] + cases[:shift]:  # the order rotates from run to run
                results[key].append(run(project, src, env))
    finally:
        kill_leftovers(root)
        shutil.rmtree(root, ignore_errors=True)

    def med(key: str, field: str) -> float:
        values = [float(r[field]) for r in results[key] if r[field] is not None]  # type: ignore[arg-type]
        return statistics.median(values) if values else float("nan")

    summary: dict[str, object] = {"tests": args.tests, "runs": args.runs}
    for key, *_ in cases[1:]:
        summary[f"{key}_in_test_ms"] = round((med(key, "wall") - med("nodb", "wall")) * 1000, 3)
        summary[f"{key}_cpu_ms"] = round((med(key, "cpu") - med("nodb", "cpu")) * 1000, 3)
        summary[f"{key}_all_cpu_ms"] = round((med(key, "tree_cpu") - med("nodb", "tree_cpu")) * 1000, 3)
        for phase in ("setup", "call", "teardown"):
            summary[f"{key}_{phase}_ms"] = round((med(key, phase) - med("nodb", phase)) * 1000, 3)
        if key.startswith("transaction"):
            summary[f"{key}_end_ms"] = round(med(key, "end") * 1000, 3)
        if key.startswith("database"):
            summary[f"{key}_waited"] = med(key, "waited")
            summary[f"{key}_reset_ms"] = round(med(key, "reset") * 1000, 3)
    summary["nodb_wall_ms"] = round(med("nodb", "wall") * 1000, 3)
    for key, *_ in cases:  # each run's in-test median (not minus the anchor), in run order: for paired readings
        summary[f"{key}_runs_ms"] = [round(float(r["wall"] or "nan") * 1000, 3) for r in results[key]]
    if args.json:
        print(json.dumps(summary))
        return
    print(f"{args.tests} tests, 1 table, medians of {args.runs} runs; anchor {summary['nodb_wall_ms']} ms a test")
    print("| variant | in-test | CPU of pytest's thread | CPU, all processes | tests that waited | background reset |")
    print("|---|---|---|---|---|---|")
    for key, *_ in cases[1:]:
        waited = f"{summary[f'{key}_waited']:.0f}" if f"{key}_waited" in summary else "-"
        reset = f"{summary[f'{key}_reset_ms']:.2f} ms" if f"{key}_reset_ms" in summary else "-"
        in_test, cpu, tree = summary[f"{key}_in_test_ms"], summary[f"{key}_cpu_ms"], summary[f"{key}_all_cpu_ms"]
        print(f"| {key} | {in_test:.2f} ms | {cpu:.2f} ms | {tree:.2f} ms | {waited} | {reset} |")
    print()
    print("| variant | set-up | call | tear-down | of which end_test |")
    print("|---|---|---|---|---|")
    for key, *_ in cases[1:]:
        phases = [f"{summary[f'{key}_{phase}_ms']:.2f} ms" for phase in ("setup", "call", "teardown")]
        end = f"{summary[f'{key}_end_ms']:.2f} ms" if f"{key}_end_ms" in summary else "-"
        print(f"| {key} | {' | '.join(phases)} | {end} |")


if __name__ == "__main__":
    main()
