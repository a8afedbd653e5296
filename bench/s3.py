"""What the ``s3`` kind costs: the server's start (alone, and next to Valkey and Postgres), and a bucket per test.

Usage: python bench/s3.py [--starts 5] [--tests 200] [--json]

* start: ``ServiceStack.start(["s3"])`` until a signed ``ListBuckets`` answers, ``--starts`` times; the first
  one is this process's first (cold: boto3's models loaded, the server's interpreter importing moto for the
  first time since boot when run first), the others warm;
* parallel: s3 + valkey + postgres started together, against the sum of each alone;
* per test: what the ``s3_bucket`` fixture costs the test itself (lease + release; the test writes one object),
  with the pool (``s3.pool_size`` 2: created ahead, deleted in the background) and without (created and
  emptied + deleted in line), medians and 90th percentiles in milliseconds.

Data goes to a private data directory on tmpfs, removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from testlane.core.config import load_settings
from testlane.core.runtime import RunContext
from testlane.databases.s3_isolation import BucketPool
from testlane.services.s3 import S3Server
from testlane.services.s3_buckets import create_bucket, delete_bucket
from testlane.services.stack import ServiceStack


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def _summary(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {"median": _ms(statistics.median(values)), "p90": _ms(values[int(len(values) * 0.9) - 1])}


def _start(settings: Any, names: list[str]) -> tuple[float, ServiceStack]:
    stack = ServiceStack(settings, RunContext.from_settings(settings))
    begin = time.perf_counter()
    stack.start(names)
    return time.perf_counter() - begin, stack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--tests", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="testlane-bench-s3-", dir="/dev/shm"))
    settings = load_settings(environ={}, overrides={"data_dir": str(data_dir)})
    out: dict[str, Any] = {}
    try:
        starts = []
        for _ in range(args.starts):
            took, stack = _start(settings, ["s3"])
            stack.stop()
            starts.append(took)
        out["start_cold_ms"] = _ms(starts[0])
        out["start_warm_ms"] = _summary(starts[1:] or starts)
        alone = {}
        for name in ("s3", "valkey", "postgres"):
            took, stack = _start(settings, [name])
            stack.stop()
            alone[name] = _ms(took)
        together, stack = _start(settings, ["s3", "valkey", "postgres"])
        stack.stop()
        out["alone_ms"] = alone
        out["together_ms"] = _ms(together)
        took, stack = _start(settings, ["s3"])
        server = stack.servers["s3"]
        assert isinstance(server, S3Server)
        try:
            client = server.client()
            pooled = []
            pool = BucketPool(server, size=2)
            for _ in range(args.tests):
                begin = time.perf_counter()
                bucket = pool.lease()
                leased = time.perf_counter()
                client.put_object(Bucket=bucket.name, Key="k", Body=b"v")  # the test's own work
                wrote = time.perf_counter()
                pool.release(bucket)
                pooled.append(time.perf_counter() - wrote + leased - begin)
                time.sleep(0.02)  # the test's own work, during which the pool catches up
            pool.close()
            inline, creates, deletes = [], [], []
            for n in range(args.tests):
                name = f"tl-{server.instance.run_id}-inline-{n}"
                begin = time.perf_counter()
                create_bucket(client, name, region=server.region)
                made = time.perf_counter()
                client.put_object(Bucket=name, Key="k", Body=b"v")
                wrote = time.perf_counter()
                delete_bucket(client, name)
                done = time.perf_counter()
                inline.append(done - wrote + made - begin)
                creates.append(made - begin)
                deletes.append(done - wrote)
            out["per_test_pooled_ms"] = _summary(pooled)
            out["per_test_inline_ms"] = _summary(inline)
            out["create_ms"] = _summary(creates)
            out["empty_and_delete_ms"] = _summary(deletes)
        finally:
            stack.stop()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for key, value in out.items():
            print(f"{key:22} {value}")


if __name__ == "__main__":
    main()
