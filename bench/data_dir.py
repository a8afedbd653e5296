"""Where the data goes: cloning a 100-table template with the data directory on tmpfs and on disk.

Usage: python bench/data_dir.py [--runs 31] [--tables 100] [--disk /var/tmp] [--json]

For each place (``/dev/shm``, tmpfs; ``--disk``, a directory on a disk filesystem) one Postgres server
is started by testlane with its data directory there, a template database with ``--tables`` tables
(an id, three columns, a primary key and one index each, 20 rows) is built once, and then
``CREATE DATABASE ... TEMPLATE ... STRATEGY FILE_COPY`` (what testlane's database pool runs per test)
plus ``DROP DATABASE`` is timed ``--runs`` times. The places alternate round by round, so that load
drifting on a shared machine falls on both alike. Printed: the median clone and drop per place, and the
ratio disk / tmpfs. Also the start-up cost of keying the cluster by content: ``content_digest`` of
the ``postgres`` executable cold (hashing it) and remembered (the index), median of ``--runs``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from psycopg import sql

from testlane.core.config import load_settings
from testlane.core.runtime import RunContext, filesystem_type, is_root
from testlane.services.binaries import embedded_postgres
from testlane.services.cache import content_digest
from testlane.services.postgres import PostgresEngine, PostgresServer
from testlane.services.registry import Registry


def _server(base: Path, cache: Path) -> tuple[PostgresServer, Path]:
    data = Path(tempfile.mkdtemp(prefix="testlane-bench-data-", dir=base))
    if is_root():
        os.chmod(data, 0o755)
    settings = load_settings(environ={}, overrides={"data_dir": str(data / "root"), "cache_dir": str(cache)})
    context = RunContext.from_settings(settings, owner=os.getpid())
    context.ensure_dirs()
    server = PostgresEngine(settings, context, Registry(context)).start(f"bench-{base.name}")
    assert isinstance(server, PostgresServer)
    return server, data


def _template(server: PostgresServer, tables: int) -> None:
    with server.connect() as admin:
        admin.execute("CREATE DATABASE tpl")
    with server.connect("tpl") as conn:
        for n in range(tables):
            conn.execute(
                f"CREATE TABLE t{n} (id serial PRIMARY KEY, name text, amount numeric, at timestamptz DEFAULT now())"
            )
            conn.execute(f"CREATE INDEX ON t{n} (name)")
            conn.execute(f"INSERT INTO t{n} (name, amount) SELECT 'n' || g, g FROM generate_series(1, 20) g")
    with server.connect() as admin:
        admin.execute("ALTER DATABASE tpl WITH IS_TEMPLATE true ALLOW_CONNECTIONS false")


def _clone_ms(server: PostgresServer, n: int) -> float:
    name = sql.Identifier(f"clone_{n}")
    with server.connect() as admin:
        started = time.perf_counter()
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE tpl STRATEGY FILE_COPY").format(name))
        admin.execute(sql.SQL("DROP DATABASE {}").format(name))
        return (time.perf_counter() - started) * 1000


def _digest_ms(runs: int) -> tuple[float, float]:
    bins = embedded_postgres()
    assert bins is not None
    exe = bins.exe("postgres")
    cold, warm = [], []
    for _ in range(runs):
        index = Path(tempfile.mkdtemp(prefix="testlane-bench-digest-", dir="/dev/shm"))
        started = time.perf_counter()
        content_digest(exe, index)
        cold.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        content_digest(exe, index)
        warm.append((time.perf_counter() - started) * 1000)
        shutil.rmtree(index, ignore_errors=True)
    return statistics.median(cold), statistics.median(warm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=31)
    parser.add_argument("--tables", type=int, default=100)
    parser.add_argument("--disk", default="/var/tmp", help="a directory on a disk filesystem")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    places = {"tmpfs": Path("/dev/shm"), "disk": Path(args.disk)}
    if filesystem_type(places["disk"]) in ("tmpfs", "ramfs"):
        parser.error(f"{args.disk} is on tmpfs; give --disk a directory on a disk filesystem")
    cache = Path(tempfile.mkdtemp(prefix="testlane-bench-cache-", dir="/dev/shm"))
    if is_root():
        os.chmod(cache, 0o755)
    servers: dict[str, tuple[PostgresServer, Path]] = {}
    times: dict[str, list[float]] = {name: [] for name in places}
    try:
        for name, base in places.items():
            servers[name] = _server(base, cache)
            _template(servers[name][0], args.tables)
        for n in range(args.runs):
            order = list(places) if n % 2 == 0 else list(reversed(places))
            for name in order:
                times[name].append(_clone_ms(servers[name][0], n))
    finally:
        for server, data in servers.values():
            server.stop()
            shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    digest_cold, digest_warm = _digest_ms(args.runs)
    result = {
        "runs": args.runs,
        "tables": args.tables,
        "disk": f"{args.disk} ({filesystem_type(places['disk'])})",
        "clone_tmpfs_ms": round(medians["tmpfs"], 2),
        "clone_disk_ms": round(medians["disk"], 2),
        "ratio_disk_over_tmpfs": round(medians["disk"] / medians["tmpfs"], 2),
        "digest_cold_ms": round(digest_cold, 2),
        "digest_indexed_ms": round(digest_warm, 3),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"clone + drop of a {args.tables}-table template, median of {args.runs}:")
    print(f"  tmpfs (/dev/shm):        {result['clone_tmpfs_ms']:8.2f} ms")
    print(f"  disk ({result['disk']}): {result['clone_disk_ms']:8.2f} ms")
    print(f"  ratio disk / tmpfs:      {result['ratio_disk_over_tmpfs']:8.2f}")
    print(f"content_digest(postgres): {digest_cold:.2f} ms hashing, {digest_warm:.3f} ms from the index")


if __name__ == "__main__":
    main()
