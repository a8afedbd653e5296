"""``python -m dispatch.worker``: one stream worker in a process of its own.

The stalled-redelivery seam needs a worker that really dies while holding a job; a thread cannot
be killed, a process can. With ``--hold`` the handler marks the job started
(``SET <stream>:started:<id> <name>``) and then works "forever" — until the test kills the process.
The process exits by itself after ``--lifetime`` seconds, so it cannot outlive a broken test.

The Redis URL comes from ``REDIS_URL`` in the environment, not from the command line: it carries the
server's password, and every local user can read a process's command line (``ps``).
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import redis

from dispatch.broken import VARIANTS
from dispatch.stream import Delivery


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dispatch.worker")
    parser.add_argument("--stream", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--variant", default="real", choices=sorted(VARIANTS["worker_class"]))
    parser.add_argument("--hold", action="store_true", help="mark each job started, then never finish it")
    parser.add_argument("--lifetime", type=float, default=60.0)
    args = parser.parse_args(argv)

    url = os.environ.get("REDIS_URL")
    if not url:
        parser.error("REDIS_URL is not set (the worker reads its Redis URL from the environment)")
    client = redis.Redis.from_url(url)
    forever = threading.Event()

    def handle(delivery: Delivery) -> None:
        client.set(f"{args.stream}:started:{delivery.id}", args.name)
        if args.hold:
            forever.wait(args.lifetime)
        client.rpush(f"{args.stream}:completed", f"{args.name}:{delivery.id}")

    worker = VARIANTS["worker_class"][args.variant](client, args.stream, args.name, handle)
    worker.ensure_group()
    deadline = time.monotonic() + args.lifetime
    while time.monotonic() < deadline:
        worker.process_once(block_ms=100)


if __name__ == "__main__":
    main()
