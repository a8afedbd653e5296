"""Time to first test after editing the last of 60 Alembic migrations (issue 19), two checkouts A/B.

Usage: python bench/migration_edit.py [--a /tmp/before-ckpt] [--b <this checkout>] [--runs 5] [--migrations 60]
       [--sleep-ms 0] [--runner pytest|testlane]

Each side is a source tree (``<path>/src`` first on ``PYTHONPATH``) with its own copy of a generated
Alembic project (``--migrations`` revisions, each creating a table with an index and a row), its own
cache and data directories on tmpfs, its own bytecode cache (written even where ``PYTHONDONTWRITEBYTECODE``
is set, as an installed package has it), warmed once (the snapshot built). Per round and side, interleaved
(A then B, B then A on odd rounds), a ``pytest --it`` process (``--runner testlane``: a ``testlane run``
process, which starts the services and runs pytest in a child) runs one test that asks for ``pg_conn``:

* ``unchanged``: nothing edited (the snapshot is there);
* ``edited``: the last revision edited first (one more column, new each round): before checkpoints the
  whole template is rebuilt; with them only that revision replays.

* ``build``: afterwards, the same edit, and only ``SnapshotCache.ensure`` timed in a fresh process
  (imports done before the clock starts): the part checkpoints change, with less of the machine's noise;
* ``first_build``: then, env.py changed each round (no step shared: a build from scratch, which with
  checkpoints also makes and stores them), the build alone as for ``build``;
* ``first build``: once per side, after env.py changed (every step's key changes): a build from
  scratch, which with checkpoints also stores them (one sample, not interleaved).

Each figure is the time from starting the pytest process to the test's body running (wall clock,
``time.time()`` written by the test), median over the rounds; ``total``: until the process exited (a run that
builds the template on its own server stores the snapshot after its tests: that part shows here only).
``the edited migration alone``: that revision's own cost, ``alembic upgrade`` of it alone in this process on a
private server (median of 5): the floor the target adds to ``unchanged``.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ENV_PY = """
from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config
connectable = engine_from_config(config.get_section(config.config_ini_section), prefix="sqlalchemy.",
                                 poolclass=pool.NullPool)
with connectable.connect() as connection:
    context.configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
"""

REVISION = """
from alembic import op
import sqlalchemy as sa

revision = "{rev}"
down_revision = {down}


def upgrade():
    op.create_table(
        "t{n}",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("created", sa.DateTime, server_default=sa.func.now()),
    )
    op.create_index("ix_t{n}_name", "t{n}", ["name"])
    op.execute("INSERT INTO t{n} (name) VALUES ('row {n}')")
    op.execute("SELECT pg_sleep({sleep})")
    {extra}
"""

BUILD_SCRIPT = r"""
import os, sys, time
from pathlib import Path
from testlane.core.config import load_settings
from testlane.core.runtime import RunContext
from testlane.databases.snapshots import SnapshotCache
from testlane.databases.template import TemplateSpec
from testlane.services.postgres import PostgresEngine
from testlane.services.registry import Registry
project = Path(sys.argv[1])
settings = load_settings(start=project, environ={}, overrides={"cache_dir": sys.argv[2], "data_dir": sys.argv[3]})
context = RunContext.from_settings(settings, owner=os.getpid())
context.ensure_dirs()
engine = PostgresEngine(settings, context, Registry(context))
spec = TemplateSpec.from_settings(settings)
spec.fingerprint(engine.binaries().version)
import alembic.command, sqlalchemy  # imported before the clock starts, on both sides
started = time.perf_counter()
SnapshotCache(engine).ensure(spec)
print(time.perf_counter() - started)
"""

TEST = """
import os, time

def test_first(pg_conn):
    with open(os.environ["BENCH_FIRST_TEST"], "w") as out:
        out.write(repr(time.time()))
    assert pg_conn.execute("SELECT count(*) FROM t1").fetchone() == (1,)
"""


SLEEP_S = 0.0  # --sleep-ms: what each revision costs on top of its DDL (a data migration, a slow index)
RUNNER = "pytest"  # --runner: how each run is started, `pytest --it` or `testlane run`


def write_revision(versions: Path, n: int, extra: str = "pass") -> None:
    rev = f"{n:04d}"
    down = f'"{n - 1:04d}"' if n > 1 else "None"
    text = textwrap.dedent(REVISION).format(rev=rev, down=down, n=n, extra=extra, sleep=SLEEP_S)
    (versions / f"{rev}_t{n}.py").write_text(text)


def make_project(root: Path, migrations: int) -> Path:
    versions = root / "alembic" / "versions"
    versions.mkdir(parents=True)
    (root / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s/alembic\n")
    (root / "alembic" / "env.py").write_text(ENV_PY)
    for n in range(1, migrations + 1):
        write_revision(versions, n)
    (root / "pyproject.toml").write_text(
        '[project]\nname = "bench"\nversion = "0"\n\n[tool.testlane]\nservices = ["postgres"]\n\n'
        '[tool.testlane.db]\nmigrations = "alembic.ini"\n'
    )
    (root / "test_first.py").write_text(TEST)
    return root


def runner_argv(runner: str, pytest_args: list[str]) -> list[str]:
    """The command of one run: ``pytest --it ARGS`` or (``testlane``) ``testlane run -- ARGS``."""
    if runner == "testlane":
        return [sys.executable, "-m", "testlane", "run", "--", *pytest_args]
    return [sys.executable, "-m", "pytest", "--it", *pytest_args]


def reachable_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/dev/shm"))
    path.chmod(0o755)
    return path


class Side:
    def __init__(self, label: str, checkout: Path, migrations: int) -> None:
        self.label = label
        self.checkout = checkout
        self.migrations = migrations
        self.root = reachable_dir(f"bench-ckpt-{label}-")
        self.project = make_project(self.root / "project", migrations)
        self.cache = self.root / "cache"
        self.data = self.root / "data"
        for path in (self.cache, self.data):
            path.mkdir(mode=0o755)
            path.chmod(0o755)
        self.edits = 0
        self.paths: dict[str, int] = {}  # how the edited runs built their template (the line testlane printed)
        self.first: list[float] = []
        self.times: dict[str, list[float]] = {
            "unchanged": [],
            "edited": [],
            "unchanged_total": [],
            "edited_total": [],
            "build": [],
            "first_build": [],
        }

    def python_env(self) -> dict[str, str]:
        """The children's environment: this side's sources first, bytecode cached (per side, outside the source
        tree) as an installed package has it, even where ``PYTHONDONTWRITEBYTECODE`` is set around the script."""
        env = {**os.environ, "PYTHONPATH": str(self.checkout / "src"), "PYTHONPYCACHEPREFIX": str(self.root / "pyc")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        return env

    def edit_last(self) -> None:
        self.edits += 1
        column = f'op.add_column("t{self.migrations}", sa.Column("edit{self.edits}", sa.Integer))'
        write_revision(self.project / "alembic" / "versions", self.migrations, column)

    def run(self, label: str | None = None) -> float:
        """One pytest process; the time to its test's body (and, with ``label``, both figures recorded)."""
        marker = self.root / "first-test"
        marker.unlink(missing_ok=True)
        env = {
            **self.python_env(),
            "TESTLANE_CACHE_DIR": str(self.cache),
            "TESTLANE_DATA_DIR": str(self.data),
            "BENCH_FIRST_TEST": str(marker),
        }
        argv = runner_argv(RUNNER, ["-q", "-p", "no:cacheprovider", "test_first.py"])
        started = time.time()
        proc = subprocess.run(argv, cwd=self.project, env=env, capture_output=True, text=True, check=False)
        total = time.time() - started
        if proc.returncode != 0 or not marker.exists():
            raise SystemExit(f"{self.label}: pytest failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        first = float(marker.read_text()) - started
        if label is not None:
            self.times[label].append(first)
            self.times[f"{label}_total"].append(total)
        if label == "edited":
            said = " ".join((proc.stdout + proc.stderr).split())  # `testlane run` wraps its lines at 80 columns
            found = re.search(r"on this run's server, (from a checkpoint \((\d+) of|from its first step)", said)
            path = "builder first" if found is None else f"run's server, {found.group(2) or 0} steps unchanged"
            self.paths[path] = self.paths.get(path, 0) + 1
        return first

    def build(self) -> float:
        """The snapshot build alone, in a fresh process (imports excluded): less noise than a whole run."""
        env = self.python_env()
        argv = [sys.executable, "-c", BUILD_SCRIPT, str(self.project), str(self.cache), str(self.data)]
        proc = subprocess.run(argv, cwd=self.project, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"{self.label}: build failed:\n{proc.stderr[-3000:]}")
        return float(proc.stdout.strip().splitlines()[-1])

    def close(self) -> None:
        subprocess.run(["rm", "-rf", str(self.root)], check=False)


def one_migration_ms(migrations: int) -> float:
    """The last revision alone: ``alembic upgrade`` from the one before, on a private server (median of 5)."""
    from testlane.core.config import load_settings
    from testlane.core.runtime import RunContext
    from testlane.databases.migrations import AlembicMigrations, Target
    from testlane.services.stack import ServiceStack

    root = reachable_dir("bench-ckpt-one-")
    try:
        project = make_project(root / "project", migrations)
        data = root / "data"
        data.mkdir(mode=0o755)
        settings = load_settings(environ={}, overrides={"cache_dir": str(root / "cache"), "data_dir": str(data)})
        stack = ServiceStack(settings, RunContext.from_settings(settings, owner=os.getpid()))
        stack.start(["postgres"])
        try:
            server = stack.servers["postgres"]
            source = AlembicMigrations(project / "alembic.ini")
            source.step_keys()
            times = []
            with server.connect() as admin:  # type: ignore[attr-defined]
                admin.execute("CREATE DATABASE base")
                source.apply_steps(Target(server.dsn("base")), 0, migrations - 1)  # type: ignore[attr-defined]
                for n in range(5):
                    admin.execute(f"CREATE DATABASE one{n} TEMPLATE base")
                    target = Target(server.dsn(f"one{n}"))  # type: ignore[attr-defined]
                    started = time.perf_counter()
                    source.apply_steps(target, migrations - 1, migrations)
                    times.append(time.perf_counter() - started)
            return statistics.median(times) * 1000
        finally:
            stack.stop()
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", type=Path, default=Path("/tmp/before-ckpt"), help="the checkout before")
    parser.add_argument("--b", type=Path, default=Path(__file__).resolve().parents[1], help="the checkout after")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--migrations", type=int, default=60)
    parser.add_argument("--sleep-ms", type=float, default=0.0, help="pg_sleep in every revision (default 0)")
    parser.add_argument("--runner", choices=("pytest", "testlane"), default="pytest", help="how runs start")
    args = parser.parse_args()
    global SLEEP_S, RUNNER
    SLEEP_S = args.sleep_ms / 1000
    RUNNER = args.runner
    sides = [Side("A", args.a, args.migrations), Side("B", args.b, args.migrations)]
    try:
        for side in sides:
            side.run()  # the base cluster (and a first snapshot)
            (side.project / "alembic" / "env.py").write_text(ENV_PY + "\n# a new history: no step shared\n")
            side.first.append(side.run())  # a first build of this migration history (no snapshot shares a step)
        for round_ in range(args.runs):
            order = sides if round_ % 2 == 0 else sides[::-1]
            for side in order:
                side.run("unchanged")
            for side in order:
                side.edit_last()
                side.run("edited")
        for round_ in range(args.runs):
            for side in sides if round_ % 2 == 0 else sides[::-1]:
                side.edit_last()
                side.times["build"].append(side.build())
        for round_ in range(args.runs):
            for side in sides if round_ % 2 == 0 else sides[::-1]:
                (side.project / "alembic" / "env.py").write_text(ENV_PY + f"\n# history {round_}: no step shared\n")
                side.times["first_build"].append(side.build())
        one = one_migration_ms(args.migrations)
    finally:
        for side in sides:
            side.close()
    print(
        f"{args.migrations} Alembic migrations (+{args.sleep_ms:g} ms each), last one edited; "
        f"time to first test under {'testlane run' if RUNNER == 'testlane' else 'pytest --it'}, medians of {args.runs}"
    )
    print(f"the edited migration alone: {one:.0f} ms")
    print(
        f"{'side':<6}{'checkout':<34}{'unchanged s':>12}{'edited s':>10}{'edited - unchanged':>20}{'first build s':>15}"
        f"{'total: unchanged':>18}{'edited':>8}"
    )
    for side in sides:
        unchanged, edited, unchanged_total, edited_total = (
            statistics.median(side.times[k]) for k in ("unchanged", "edited", "unchanged_total", "edited_total")
        )
        print(
            f"{side.label:<6}{side.checkout!s:<34}{unchanged:>12.2f}{edited:>10.2f}{edited - unchanged:>20.2f}"
            f"{side.first[0]:>15.2f}{unchanged_total:>18.2f}{edited_total:>8.2f}"
        )
    a, b = sides
    ratio = statistics.median(b.times["edited"]) / statistics.median(a.times["edited"])
    print(f"edited B / A: {ratio:.2f}")
    builds = [statistics.median(side.times["build"]) for side in sides]
    print(
        f"the snapshot build alone after the edit (in-process, imports excluded): A {builds[0]:.2f} s, "
        f"B {builds[1]:.2f} s, B / A {builds[1] / builds[0]:.2f}"
    )
    for side in sides:
        print(f"{side.label} edited runs: " + ", ".join(f"{n} x {path}" for path, n in side.paths.items()))
    for side in sides:
        print(f"{side.label} raw: " + ", ".join(f"{k}={[round(t, 2) for t in v]}" for k, v in side.times.items()))


if __name__ == "__main__":
    main()
