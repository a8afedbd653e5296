"""What per-run credentials cost Valkey and MariaDB: this tree next to a baseline checkout, one run.

Usage: python bench/credentials.py --baseline /path/to/a/checkout/of/main [--rounds N] [--json]

Measured in child processes of this interpreter, one with ``PYTHONPATH=<tree>/src`` per tree, the
two trees taking turns round after round (so drift on a shared machine hits both alike):

* ``valkey_start``: ``ValkeyEngine.start()`` to a ``PING`` answered (warm: binaries found once);
* ``redis_test``: what the ``redis_db`` + ``redis_client`` fixtures cost one test — lease a logical
  database, a new client on it (a new connection: with a password, an ``AUTH`` too), one ``SET`` and
  ``GET``, close, release (flush and give back);
* ``mariadb_start``: ``MariaDbEngine.start()`` to ``SELECT 1`` answered, from the cached data
  directory (skipped when there is no local MariaDB).

Prints the medians of every sample and the ratio this tree / baseline (the target: at most 1.10).
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
from pathlib import Path

CHILD = r"""
import json, os, sys, time
from testlane.core.config import load_settings
from testlane.core.runtime import RunContext
from testlane.services.registry import Registry
from testlane.services.valkey import ValkeyEngine
from testlane.databases.redis_isolation import lease_database

data_dir, cache_dir = sys.argv[1], sys.argv[2]
samples, tests, with_mariadb = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
settings = load_settings(environ={}, overrides={"data_dir": data_dir, "cache_dir": cache_dir})
ctx = RunContext.from_settings(settings, owner=os.getpid())
ctx.ensure_dirs()
registry = Registry(ctx)
out = {"valkey_start": [], "redis_test": [], "mariadb_start": []}

valkey = ValkeyEngine(settings, ctx, registry)
valkey.binary()
for i in range(samples):
    t = time.perf_counter()
    server = valkey.start(f"valkey{i}")
    out["valkey_start"].append(time.perf_counter() - t)
    if i < samples - 1:
        server.stop()

import redis
coordinator = redis.Redis(host=server.host, port=server.port, password=server.instance.password, db=0)
for i in range(tests + 5):
    t = time.perf_counter()
    lease = lease_database(coordinator, server.host, server.port, password=server.instance.password, owner=f"t{i}")
    client = lease.client()
    client.set("k", "v")
    assert client.get("k") == b"v"
    client.close()
    lease.release()
    if i >= 5:  # the first few warm up connections and caches
        out["redis_test"].append(time.perf_counter() - t)
coordinator.close()
server.stop()

if with_mariadb:
    from testlane.services.mariadb import MariaDbEngine

    mariadb = MariaDbEngine(settings, ctx, registry)
    mariadb.base_datadir()
    for i in range(max(1, samples // 2)):
        t = time.perf_counter()
        server = mariadb.start(f"mariadb{i}")
        out["mariadb_start"].append(time.perf_counter() - t)
        server.stop()
print(json.dumps(out))
"""

METRICS = {
    "valkey_start": "Valkey start-up to PING answered",
    "redis_test": "per-test redis_db + redis_client cost",
    "mariadb_start": "MariaDB start-up to SELECT 1 answered",
}


def has_mariadb() -> bool:
    return bool(shutil.which("mariadbd") or shutil.which("mysqld") or Path("/usr/sbin/mariadbd").exists())


def measure(tree: Path, samples: int, tests: int, with_mariadb: bool) -> dict[str, list[float]]:
    data_dir = Path(tempfile.mkdtemp(prefix="testlane-bench-cred-", dir="/dev/shm"))
    cache_dir = Path(tempfile.mkdtemp(prefix="testlane-bench-cred-cache-", dir="/dev/shm"))
    os.chmod(cache_dir, 0o755)
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                CHILD,
                str(data_dir),
                str(cache_dir),
                str(samples),
                str(tests),
                str(int(with_mariadb)),
            ],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            cwd="/",
        )
        if proc.returncode != 0:
            raise SystemExit(f"measuring {tree} failed:\n{proc.stderr[-3000:]}")
        return dict(json.loads(proc.stdout.strip().splitlines()[-1]))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(cache_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, required=True, help="a checkout to compare with (its src/)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; each tree is measured once per round")
    parser.add_argument("--samples", type=int, default=8, help="server starts per round and tree")
    parser.add_argument("--tests", type=int, default=200, help="per-test fixture cycles per round and tree")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    here = Path(__file__).resolve().parent.parent
    trees = {"baseline": args.baseline.resolve(), "this tree": here}
    with_mariadb = has_mariadb()
    samples: dict[str, dict[str, list[float]]] = {name: {m: [] for m in METRICS} for name in trees}
    for _ in range(args.rounds):
        for name, tree in trees.items():
            for metric, values in measure(tree, args.samples, args.tests, with_mariadb).items():
                samples[name][metric].extend(values)
    summary: dict[str, object] = {"rounds": args.rounds}
    lines = []
    for metric, label in METRICS.items():
        if not samples["baseline"][metric]:
            continue
        before = statistics.median(samples["baseline"][metric])
        after = statistics.median(samples["this tree"][metric])
        ratio = after / before
        summary[metric] = {
            "baseline_ms": round(before * 1000, 3),
            "after_ms": round(after * 1000, 3),
            "ratio": round(ratio, 3),
        }
        lines.append(f"  {label:<40} {before * 1000:9.3f} ms {after * 1000:9.3f} ms   {ratio:5.2f}x")
    if args.json:
        print(json.dumps(summary))
        return
    print(f"medians over {args.rounds} rounds; baseline {trees['baseline']}, this tree {here}")
    print(f"  {'':<40} {'baseline':>12} {'this tree':>12}   ratio")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
