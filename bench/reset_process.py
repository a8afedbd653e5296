"""Diagnostic for ``bench/per_test_cost.py`` (variant ``database_reset_process``): the pool's resets done by child
processes, so that their Python shares no interpreter lock with the tests.

Measured and not kept in testlane (docs/benchmarks.md, "Where a test's milliseconds go, 1 table"): on this
2-core machine the reset's cost to the next test is CPU, not the lock, and the extra process hops doubled the
reset's latency. Kept here so the experiment can be rerun.

:func:`install` replaces ``PostgresDatabaseEngine.reset`` (in the pytest process, from the bench's conftest):
each pool worker thread gets a child (``python bench/reset_process.py <parent pid>``, started on its first
reset, killed by SIGKILL if its parent thread or process dies, ended when its input closes); the worker
sanitizes the test's session (one round trip, its statistics flushed before it returns) and sends the
database's name, connection parameters, baseline and template facts over a pipe; the child waits until no
other session serves the database (``reset.settle``, excluding the test's session and every child's), reads
the counters, plans and restores on a connection of its own that it keeps per database
(``reset.restore``: the same code as testlane's in-process reset) and answers with the new baseline. Frames:
a 4-byte length and a pickle (the same code on both sides).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

_LENGTH = struct.Struct("!I")
CANCEL = b"\xff"  # written by the parent while a reset runs: give it up (no frame starts with it: < 4 GB)
STOP_WAIT = 2.0


def _write_frame(fd: int, message: object) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    data = _LENGTH.pack(len(payload)) + payload
    while data:
        data = data[os.write(fd, data) :]


def _read_exact(fd: int, size: int) -> bytes | None:
    chunks = []
    while size:
        chunk = os.read(fd, size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _read_frame(fd: int, first: bytes = b"") -> Any:
    """The next message (``first``: its first byte, already read), or None at end of input."""
    rest = _read_exact(fd, _LENGTH.size - len(first))
    if rest is None:
        return None
    payload = _read_exact(fd, _LENGTH.unpack(first + rest)[0])
    return None if payload is None else pickle.loads(payload)


class ResetProcess:
    """The child process doing the resets of one pool: one lane (a pipe each way, and a thread in the child)
    per pool worker thread, one request at a time on each; one connection per database in the child."""

    def __init__(self, lanes: int) -> None:
        from testlane.services.process import child_preexec

        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(path for path in sys.path if path)  # the same testlane and psycopg
        self.lanes: list[tuple[int, int]] = []  # (send, receive) here
        theirs: list[int] = []
        for _ in range(lanes):
            request_r, request_w = os.pipe()
            reply_r, reply_w = os.pipe()
            self.lanes.append((request_w, reply_r))
            theirs += [request_r, reply_w]
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), str(os.getpid()), *map(str, theirs)],
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # a Ctrl-C is pytest's; the closed pipes end the child
            preexec_fn=child_preexec(signal.SIGKILL),  # dies with the thread that started it, or this process
            pass_fds=theirs,
        )
        for fd in theirs:
            os.close(fd)
        self.free = list(range(lanes))
        self.lock = threading.Lock()
        self.templates: list[set[str]] = [set() for _ in range(lanes)]

    def reset(
        self, lane: int, request: tuple[Any, ...], template: str, facts: object, stopping: Any
    ) -> tuple[Any, ...]:
        send, receive = self.lanes[lane]
        if template not in self.templates[lane]:
            _write_frame(send, ("facts", template, facts))
            self.templates[lane].add(template)
        _write_frame(send, ("reset", *request))
        cancelled = False
        while not select.select([receive], [], [], 0.05)[0]:  # waiting on the pipe releases the lock
            if not cancelled and stopping():
                os.write(send, CANCEL)
                cancelled = True
        reply = _read_frame(receive)
        if reply is None:
            raise RuntimeError(f"the reset process exited (code {self.proc.poll()})")
        return tuple(reply)

    def close(self) -> None:
        for send, receive in self.lanes:
            for fd in (send, receive):
                with contextlib.suppress(OSError):
                    os.close(fd)
        try:
            self.proc.wait(STOP_WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def install() -> None:
    """Route the Postgres engine's resets through a child process (see module docstring)."""
    from testlane.databases import pool, postgres_engine
    from testlane.databases.pool import Lease
    from testlane.databases.reset import SANITIZE, Counters

    local = threading.local()
    children: dict[int, ResetProcess] = {}  # id(engine) -> its child
    lock = threading.Lock()

    def lane_of(engine: Any) -> tuple[ResetProcess, int]:
        with lock:
            child = children.get(id(engine))
            if child is None:
                child = children[id(engine)] = ResetProcess(engine.bench_lanes)
            lane = getattr(local, "lane", None)
            if lane is None or lane[0] is not child:
                local.lane = lane = (child, child.free.pop(0))
        return lane

    def reset(self: Any, lease: Any, *, stopping: Any) -> Any:
        conn, lease.conn = lease.conn, None
        if conn is None or conn.closed or conn.broken:
            postgres_engine._close(conn)
            return None
        child, lane = lane_of(self)
        try:
            facts = self._template_facts(lease)
            if conn.info.transaction_status != 0:
                conn.rollback()
            conn.autocommit = True
            # As reset.sanitize, and the session's sequence state (setval runs on the child's session).
            conn.execute(f"DISCARD SEQUENCES; {SANITIZE}")
            assert isinstance(lease.baseline, Counters)
            conninfo = self.server.socket_conninfo(lease.name)
            request = (lease.name, conninfo, lease.template, lease.baseline, {conn.info.backend_pid})
            kind, *rest = child.reset(
                lane, (*request, self.server.pid or 0, lease.released_at), lease.template, facts, stopping
            )
            if kind != "ok":
                postgres_engine._close(conn)
                return None
            baseline, truncated, changed = rest
            if truncated:
                postgres_engine._warm_caches(conn, list(truncated))
            conn.autocommit = False
        except Exception:
            postgres_engine._close(conn)
            return None
        return Lease(lease.name, lease.url, lease.template, conn, baseline, reused=True, truncated=changed)

    init, close = pool.ClonePool.__init__, pool.ClonePool.close

    def init_lanes(self: Any, engine: Any, *args: Any, **kwargs: Any) -> None:
        init(self, engine, *args, **kwargs)
        engine.bench_lanes = self.workers

    def close_child(self: Any) -> None:
        close(self)
        with lock:
            child = children.pop(id(self.engine), None)
        if child is not None:
            child.close()

    postgres_engine.PostgresDatabaseEngine.reset = reset  # type: ignore[method-assign]
    pool.ClonePool.__init__ = init_lanes  # type: ignore[method-assign]
    pool.ClonePool.close = close_child  # type: ignore[method-assign]


# -- the child ---------------------------------------------------------------------------------------------


def main(parent: int, fds: list[int]) -> None:
    import psycopg

    from testlane.databases.reset import restore, settle

    if os.getppid() != parent:
        return  # the parent died before the death signal was armed
    facts: dict[str, Any] = {}
    conns: dict[str, psycopg.Connection] = {}  # one per database, whichever lane resets it
    guard = threading.Lock()

    def forget(name: str) -> None:
        with guard:
            conn = conns.pop(name, None)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def serve(receive: int, send: int) -> None:
        cancelled = False

        def pause(seconds: float) -> bool:
            nonlocal cancelled
            if select.select([receive], [], [], seconds)[0]:  # the parent sends only a cancel before our reply
                os.read(receive, 1)
                cancelled = True
            return not cancelled

        def reset(name: str, conninfo: Any, template: str, baseline: Any, exclude: set[int], pm: int, at: float) -> Any:
            with guard:
                conn = conns.get(name)
            if conn is None or conn.closed or conn.broken:
                conn = psycopg.connect(**conninfo, autocommit=True, application_name="testlane reset")
                conn.prepare_threshold = None
                conn.execute("SET stats_fetch_consistency = none")
                with guard:
                    conns[name] = conn
            if not settle(pm, name, exclude | {conn.info.backend_pid}, released_at=at, pause=pause):
                forget(name)
                return ("drop",)
            done = restore(conn, facts[template], baseline)
            if done is None:
                forget(name)
                return ("drop",)
            counters, plan = done
            return ("ok", counters, plan.truncate, bool(plan))

        while True:
            first = CANCEL
            while first == CANCEL:  # a cancel that came after its reset was done
                first = _read_exact(receive, 1)  # type: ignore[assignment]
            message = None if first is None else _read_frame(receive, first)
            if message is None:
                return
            kind, *args = message
            if kind == "facts":
                facts[args[0]] = args[1]
                continue
            cancelled = False
            try:
                reply = reset(*args)
            except Exception as exc:
                forget(args[0])
                reply = ("error", f"{type(exc).__name__}: {exc}")
            _write_frame(send, reply)

    threads = [threading.Thread(target=serve, args=(fds[i], fds[i + 1])) for i in range(0, len(fds), 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name in list(conns):
        forget(name)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    main(int(sys.argv[1]), [int(fd) for fd in sys.argv[2:]])
