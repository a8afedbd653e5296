"""NATS per-test isolation, measured: server start-up by number of lease accounts, and per-test cost of an
account lease (lease + clean + give back) against a stream+subject prefix on a shared account.

    .venv/bin/python bench/nats_isolation.py [--backend embedded|local] [--repeat 15]

Prints medians in milliseconds (docs/isolation.md and docs/services.md quote them).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from testlane.core.config import load_settings
from testlane.core.runtime import RunContext
from testlane.services.nats import NatsEngine, run_sync
from testlane.services.nats_isolation import lease_jetstream
from testlane.services.registry import Registry


def _ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:.1f}"


def start_up(backend: str, accounts: int, repeat: int, data_dir: str) -> list[float]:
    out = []
    for _ in range(repeat):
        settings = load_settings(
            environ={}, overrides={"data_dir": data_dir, "nats.backend": backend, "nats.accounts": accounts}
        )
        ctx = RunContext.from_settings(settings, owner=os.getpid())
        ctx.ensure_dirs()
        engine = NatsEngine(settings, ctx, Registry(ctx))
        engine.binary()  # found (and copied, as root) once: not start-up
        began = time.perf_counter()
        server = engine.start()
        out.append(time.perf_counter() - began)
        server.stop()
    return out


async def _use(url: str, stream: str, subject: str) -> None:
    from testlane.services.nats import connect_url

    client = await connect_url(url)
    try:
        js = client.jetstream()
        await js.add_stream(name=stream, subjects=[subject + ".>"])
        await js.publish(subject + ".x", b"x")
    finally:
        await client.close()


def per_test(backend: str, repeat: int, data_dir: str, *, shared: bool, use: bool) -> list[float]:
    settings = load_settings(environ={}, overrides={"data_dir": data_dir, "nats.backend": backend, "nats.accounts": 8})
    ctx = RunContext.from_settings(settings, owner=os.getpid())
    ctx.ensure_dirs()
    out = []
    with NatsEngine(settings, ctx, Registry(ctx)).start() as server:
        if shared:
            server.instance.extra["accounts"] = 0  # what an existing server gets: prefixes
        for _ in range(repeat):
            lease = lease_jetstream(server, ctx.run_dir / "leases")
            if use:
                run_sync(lambda lease=lease: _use(lease.url, lease.stream("S"), lease.subject("s")))
            began = time.perf_counter()
            lease.release()
            released = time.perf_counter() - began
            began = time.perf_counter()
            again = lease_jetstream(server, ctx.run_dir / "leases")
            leased = time.perf_counter() - began
            again.release()
            out.append(released + leased)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", default="embedded")
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tl-nats-bench-", dir="/dev/shm") as data_dir:
        for accounts in (1, 16, 64, 256, 1024):
            print(
                f"start-up, {accounts:5d} accounts: {_ms(start_up(args.backend, accounts, args.repeat, data_dir))} ms"
            )
        for shared in (False, True):
            for use in (False, True):
                what = ("prefix" if shared else "account") + (", one stream used" if use else ", untouched")
                samples = per_test(args.backend, args.repeat, data_dir, shared=shared, use=use)
                print(f"per test, {what}: {_ms(samples)} ms (lease + clean + give back)")


if __name__ == "__main__":
    main()
