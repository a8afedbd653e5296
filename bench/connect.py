"""What a new connection costs on one testlane server: TCP with SCRAM, TCP with trust, the socket.

Usage: python bench/connect.py [--connections 400] [--json]

One Postgres server, three ways in, interleaved connection by connection (the order flips every
round) so that load on a shared machine falls on all three alike; each connection runs ``SELECT 1``
and closes. Medians in milliseconds:

* ``scram_ms``: TCP with the run's password — what the URLs testlane hands out cost (after issue 13);
* ``trust_ms``: TCP without a password, for a role given ``trust`` on this server only for the
  measurement — what every TCP connection cost before issue 13;
* ``socket_ms``: the private Unix socket — what testlane's own connections cost (after issue 13).

JSON keys: ``connections``, ``scram_ms``, ``trust_ms``, ``socket_ms``, ``scram_vs_trust``,
``socket_vs_trust``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import psycopg

from testlane.core.config import load_settings
from testlane.core.runtime import RunContext
from testlane.core.waiting import wait_until
from testlane.services.postgres import PostgresServer
from testlane.services.stack import ServiceStack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=400)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    settings = load_settings(environ={})
    with ServiceStack(settings, RunContext.from_settings(settings, owner=os.getpid())) as stack:
        server = stack.start(["postgres"])["postgres"]
        assert isinstance(server, PostgresServer) and server.instance.password
        hba = Path(server.instance.instance_dir or "") / "pg_hba.conf"
        hba.write_text("host all bench_trust 127.0.0.1/32 trust\n" + hba.read_text())
        with server.connect() as admin:
            admin.execute("CREATE ROLE bench_trust SUPERUSER LOGIN")
            admin.execute("SELECT pg_reload_conf()")
        trust = {"host": "127.0.0.1", "port": server.port, "user": "bench_trust", "dbname": "postgres"}

        def trusted() -> bool:
            try:
                psycopg.connect(**trust).close()  # type: ignore[arg-type]
            except psycopg.OperationalError:
                return False
            return True

        wait_until(trusted, timeout=10, what="the reloaded pg_hba.conf")
        ways = {
            "scram": {"conninfo": server.url},
            "trust": trust,
            "socket": server.socket_conninfo(),
        }
        times: dict[str, list[float]] = {name: [] for name in ways}
        for i in range(args.connections):
            for name in list(ways) if i % 2 else reversed(list(ways)):
                started = time.perf_counter()
                with psycopg.connect(**ways[name], autocommit=True) as conn:  # type: ignore[arg-type]
                    conn.execute("SELECT 1").fetchone()
                times[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(values) * 1000 for name, values in times.items()}
    summary = {
        "connections": args.connections,
        **{f"{name}_ms": round(value, 3) for name, value in medians.items()},
        "scram_vs_trust": round(medians["scram"] / medians["trust"], 3),
        "socket_vs_trust": round(medians["socket"] / medians["trust"], 3),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for key, value in summary.items():
            print(f"{key:<16} {value}")


if __name__ == "__main__":
    main()
