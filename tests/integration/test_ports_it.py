"""Port reservations: lock files are deleted on release, and deleting them never lets two processes
hold the same port."""

from __future__ import annotations

import multiprocessing
import os
import socket
from pathlib import Path

from testlane.core.config import load_settings
from testlane.core.errors import PortUnavailableError
from testlane.core.runtime import RunContext
from testlane.services.ports import reserve_port
from testlane.services.stack import ServiceStack, reap


def test_a_run_leaves_no_port_lock_files(data_dir: Path) -> None:
    settings = load_settings(environ={}, overrides={"data_dir": str(data_dir)})
    context = RunContext.from_settings(settings, owner=os.getpid())
    with ServiceStack(settings, context) as stack:
        stack.start(["valkey"])
        assert stack.servers["valkey"].port > 0
    assert list(context.ports_dir.glob("*.lock")) == []


def test_reap_removes_lock_files_nobody_holds_and_keeps_held_ones(data_dir: Path) -> None:
    from testlane.services.ports import sweep_port_locks

    settings = load_settings(environ={}, overrides={"data_dir": str(data_dir)})
    context = RunContext.from_settings(settings, owner=os.getpid())
    context.ensure_dirs()
    for port in (40001, 40002, 40003):  # left by processes killed while they held them
        (context.ports_dir / f"{port}.lock").touch()
    with reserve_port(context.ports_dir) as held:
        reap(context)
        assert [p.name for p in context.ports_dir.glob("*.lock")] == [f"{held.port}.lock"]
    assert list(context.ports_dir.glob("*.lock")) == []
    assert sweep_port_locks(context.ports_dir) == 0


def _contend(ports_dir: str, port: int, rounds: int, result: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """Reserve ``port`` over and over; while holding it, own a marker no other holder may own."""
    marker = Path(ports_dir) / f"holder-{port}"
    held = overlaps = 0
    for _ in range(rounds):
        try:
            reservation = reserve_port(Path(ports_dir), fixed=port)
        except PortUnavailableError:
            continue
        held += 1
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            overlaps += 1
        else:
            os.close(fd)
            os.unlink(marker)
        reservation.release()
    result.put((held, overlaps))


def test_two_processes_never_hold_the_same_port_while_lock_files_are_deleted(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ctx = multiprocessing.get_context("fork")
    result: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [ctx.Process(target=_contend, args=(str(tmp_path), port, 3000, result)) for _ in range(4)]
    for proc in procs:
        proc.start()
    outcomes = [result.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    assert sum(held for held, _ in outcomes) > 100  # they did contend
    assert sum(overlaps for _, overlaps in outcomes) == 0, "two processes held the same port at once"
    assert list(tmp_path.glob("*.lock")) == []
