"""What a per-test Redis lease costs: ``lease_database`` + ``release``, end to end.

Usage: python bench/redis_lease.py [--runs 2000] [--databases 1024] [--busy 0] [--json]

Starts a private Valkey/Redis server (testlane's ``local`` backend, data on tmpfs) with
``--databases`` logical databases, puts one foreign key into ``--busy`` of them (databases a lease
must skip), and times ``--runs`` lease/write/release cycles through one coordinator client — what
the ``redis_db`` fixture does per test. Figures: median and 90th percentile, in milliseconds.

To compare with another version of testlane, run the same script with that version first on the
path (the function's signature is unchanged), e.g. ``PYTHONPATH=/path/to/other/src python
bench/redis_lease.py``. Never point it at a server holding data: it writes and flushes there.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import redis

import testlane
from testlane.core.config import load_settings
from testlane.core.runtime import RunContext
from testlane.databases.redis_isolation import lease_database
from testlane.services.stack import ServiceStack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--databases", type=int, default=1024)
    parser.add_argument("--busy", type=int, default=0, help="databases holding a foreign key (skipped by leases)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tl-bench-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as d:
        settings = load_settings(environ={}, overrides={"data_dir": d, "valkey.databases": str(args.databases)})
        with ServiceStack(settings, RunContext.from_settings(settings, owner=os.getpid())) as stack:
            stack.start(["valkey"])
            server = stack.servers["valkey"]
            password = server.instance.password
            for db in range(1, 1 + args.busy):
                with redis.Redis(host=server.host, port=server.port, password=password, db=db) as client:
                    client.set("someone", "data")
            coordinator = redis.Redis(host=server.host, port=server.port, password=password, db=0)
            samples = []
            for i in range(args.runs + 50):
                start = time.perf_counter()
                lease = lease_database(coordinator, server.host, server.port, password=password, owner="bench")
                lease_s = time.perf_counter() - start
                with lease.client() as client:
                    client.set("k", i)
                start = time.perf_counter()
                lease.release()
                if i >= 50:  # warm-up: connections opened, scripts cached
                    samples.append((lease_s, time.perf_counter() - start))
            coordinator.close()
    leases = sorted(s[0] * 1000 for s in samples)
    releases = sorted(s[1] * 1000 for s in samples)

    def figures(values: list[float]) -> dict[str, float]:
        return {"median_ms": round(statistics.median(values), 4), "p90_ms": round(values[int(len(values) * 0.9)], 4)}

    result = {
        "testlane": str(Path(testlane.__file__).parent),
        "runs": args.runs,
        "databases": args.databases,
        "busy": args.busy,
        "lease": figures(leases),
        "release": figures(releases),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"testlane from {result['testlane']}: {args.runs} leases, {args.databases} databases, {args.busy} busy")
    for what in ("lease", "release"):
        f = result[what]
        assert isinstance(f, dict)
        print(f"  {what:8s} median {f['median_ms']:.3f} ms   p90 {f['p90_ms']:.3f} ms")


if __name__ == "__main__":
    main()
