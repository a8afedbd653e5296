"""RabbitMQ: testlane's private node, per-test virtual hosts, the fixtures and the queue seams.

One node per module for the direct tests (a cold start costs 5-12 s); inner projects start their own.
The system's RabbitMQ (127.0.0.1:5672) and epmd (4369) are never connected to; a test checks that
their processes and listening sockets are the same before and after.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from testlane.core.config import load_settings
from testlane.core.runtime import RunContext, default_data_root
from testlane.core.waiting import wait_until
from testlane.reports.context import READ_LINES, excerpt, read_log_since
from testlane.seams.rabbitmq import (
    assert_exactly_once,
    assert_redelivered_after_death,
    assert_slow_consumer_redelivered,
)
from testlane.services.rabbitmq import DEFAULT_BINARY, RabbitMqServer
from testlane.services.rabbitmq_vhosts import VhostPool, delete_vhost, ensure_vhost
from testlane.services.stack import ServiceStack, reap
from tests.helpers import clean_env, inner_pyproject, leftovers, run_inner, server_processes

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(not Path(DEFAULT_BINARY).is_file(), reason="no local rabbitmq-server"),
]
ROOT = Path(__file__).resolve().parents[2]


def _system_state() -> dict[str, object]:
    """The system node's and system epmd's processes and listening ports (read-only)."""
    state: dict[str, object] = {}
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == "LISTEN" and conn.laddr and conn.laddr.port in (4369, 5672, 25672, 15672):
            pid = conn.pid or 0
            created = psutil.Process(pid).create_time() if pid else 0
            state[f"{conn.laddr.ip}:{conn.laddr.port}"] = (pid, created)
    return state


@pytest.fixture(scope="module")
def system_before() -> dict[str, object]:
    return _system_state()


@pytest.fixture(scope="module")
def node(system_before: dict[str, object]) -> Iterator[RabbitMqServer]:
    data = default_data_root().parent / f"testlane-test-rmq-{uuid.uuid4().hex[:8]}"
    settings = load_settings(environ={}, overrides={"data_dir": str(data)})
    stack = ServiceStack(settings, RunContext.from_settings(settings, owner=os.getpid()))
    started = time.monotonic()
    try:
        server = stack.start(["rabbitmq"])["rabbitmq"]
        print(f"rabbitmq cold start: {(time.monotonic() - started) * 1000:.0f} ms")
        assert isinstance(server, RabbitMqServer)
        yield server
    finally:
        stack.stop()
        shutil.rmtree(data, ignore_errors=True)


class Vhost:
    def __init__(self, server: RabbitMqServer, name: str) -> None:
        self.server, self.name = server, name

    @property
    def url(self) -> str:
        return self.server.url_for_vhost(self.name)

    def connection_parameters(self) -> object:
        return self.server.connection_parameters(self.name)


@pytest.fixture
def vhost(node: RabbitMqServer) -> Iterator[Vhost]:
    name = f"tl_{node.instance.run_id}_t{uuid.uuid4().hex[:6]}"
    ensure_vhost(node, name)
    yield Vhost(node, name)
    delete_vhost(node, name)


# -- the node ---------------------------------------------------------------------------------------------
def test_private_node_is_loopback_only_with_its_own_epmd_and_credentials(node: RabbitMqServer) -> None:
    inst = node.instance
    beam = psutil.Process(node.pid)
    assert beam.name() == "beam.smp"  # RUNNING_UNDER_SYSTEMD: the recorded pid is the VM's
    group = [p for p in psutil.process_iter(["name"]) if _pgid(p.pid) == node.pid]
    epmd = [p for p in group if p.info["name"] == "epmd"]
    assert len(epmd) == 1 and f"-port {inst.extra['epmd_port']}" in " ".join(epmd[0].cmdline())
    ports = {c.laddr.port: c.laddr.ip for c in beam.net_connections(kind="tcp") if c.status == "LISTEN"}
    ports.update({c.laddr.port: c.laddr.ip for c in epmd[0].net_connections(kind="tcp") if c.status == "LISTEN"})
    assert set(ports.values()) <= {"127.0.0.1", "::1"}, ports  # epmd always adds ::1: loopback too
    assert {inst.port, inst.extra["management_port"], inst.extra["dist_port"], inst.extra["epmd_port"]} <= set(ports)
    assert not {4369, 5672, 25672} & set(ports)
    assert inst.password and inst.password not in " ".join(beam.cmdline())
    cookie = Path(inst.instance_dir or "") / "home" / ".erlang.cookie"
    assert oct(cookie.stat().st_mode & 0o777) == "0o400"
    import pika

    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(
            pika.ConnectionParameters(
                host="127.0.0.1", port=inst.port, credentials=pika.PlainCredentials("guest", "guest")
            )
        )
    assert node.version.startswith("3.")


def _pgid(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except OSError:
        return -1


def test_vhosts_are_made_in_milliseconds_and_isolate_queues(node: RabbitMqServer) -> None:
    pool = VhostPool(node, size=2)
    try:
        timings = []
        names = []
        for _ in range(5):
            started = time.perf_counter()
            names.append(pool.lease())
            timings.append((time.perf_counter() - started) * 1000)
        print(f"vhost lease ms: {sorted(timings)}")
        one, two = names[0], names[1]
        with node.connect(one) as conn:
            channel = conn.channel()
            channel.queue_declare("jobs")
            channel.basic_publish("", "jobs", b"for one")
        with node.connect(two) as conn:
            channel = conn.channel()
            assert channel.queue_declare("jobs").method.message_count == 0  # another vhost's queue
        started = time.perf_counter()
        ensure_vhost(node, f"tl_{node.instance.run_id}_timing")
        delete_vhost(node, f"tl_{node.instance.run_id}_timing")
        print(f"vhost create+delete (new client): {(time.perf_counter() - started) * 1000:.1f} ms")
        for name in names:
            pool.release(name)

        def remaining() -> set[str]:
            with node.management() as api:
                answer = api.get("/api/vhosts")
                answer.raise_for_status()  # a loaded node's management API can answer 5xx for a moment
                return {v["name"] for v in answer.json()} & set(names)

        wait_until(
            lambda: not remaining(),
            timeout=20,
            what="the released vhosts to be deleted",
            transient=(httpx.HTTPStatusError,),
        )
    finally:
        pool.close()


def test_only_tl_vhosts_are_ever_deleted(node: RabbitMqServer) -> None:
    with pytest.raises(ValueError, match="tl_"):
        delete_vhost(node, "/")


# -- the seams ---------------------------------------------------------------------------------------------
def test_competing_consumers_each_job_exactly_once(vhost: Vhost) -> None:
    deliveries = assert_exactly_once(vhost, messages=20)
    assert set(deliveries.consumers()) == {"a", "b"}


def test_competing_consumers_report_a_handler_that_crashed_mid_job(vhost: Vhost) -> None:
    crashed: list[str] = []

    def crashes_on_job_3(body: str) -> None:  # the handler gets text, as the docs and failures speak it
        if body == "job-3" and not crashed:
            crashed.append(body)
            raise RuntimeError("handler crashed")

    with pytest.raises(AssertionError) as failure:
        assert_exactly_once(vhost, messages=4, handler=crashes_on_job_3, timeout=5)
    message = str(failure.value)
    print(message)
    # at-least-once: the crashed consumer's job went to the other one, and the message says who got what
    assert message.startswith(
        "expected each of 4 messages to be delivered exactly once, but job-3 was delivered 2 times"
    )
    assert "job-3 (redelivered)" in message
    assert "consumer a received" in message and "consumer b received" in message


def test_the_handler_receives_each_body_as_text(vhost: Vhost) -> None:
    seen: list[object] = []
    assert_exactly_once(vhost, messages=4, handler=seen.append)
    assert sorted(seen) == ["job-1", "job-2", "job-3", "job-4"]  # str, like Deliveries and body=


def test_a_consumer_that_dies_holding_a_message_has_it_redelivered_once(vhost: Vhost) -> None:
    deliveries = assert_redelivered_after_death(vhost)
    print(f"redelivered {getattr(deliveries, 'redelivery_ms', -1):.1f} ms after the connection died")
    assert [(d.consumer, d.redelivered) for d in deliveries.all] == [("doomed", False), ("survivor", True)]


def test_a_killed_consumer_process_has_its_message_redelivered_once(vhost: Vhost) -> None:
    deliveries = assert_redelivered_after_death(vhost, process=True)
    print(f"redelivered {getattr(deliveries, 'redelivery_ms', -1):.1f} ms after SIGKILL")
    assert [(d.consumer, d.redelivered) for d in deliveries.all] == [("doomed", False), ("survivor", True)]


def test_a_consumer_that_acks_before_handling_loses_the_job_and_the_seam_says_so(vhost: Vhost) -> None:
    with pytest.raises(AssertionError) as failure:
        assert_redelivered_after_death(vhost, ack_before_handling=True, timeout=2)
    message = str(failure.value)
    print(message)
    assert message.startswith("expected job-1 to reach doomed, then to be redelivered 1 time(s) to survivor")
    assert "was delivered again 0 times, not 1" in message
    assert "consumer doomed received 1: job-1" in message
    assert "consumer survivor received 0: nothing" in message


def test_a_slow_consumer_past_consumer_timeout_loses_its_message(vhost: Vhost) -> None:
    started = time.monotonic()
    deliveries = assert_slow_consumer_redelivered(vhost, consumer_timeout_ms=2000)
    print(f"slow consumer seam: {time.monotonic() - started:.1f} s; closed by {deliveries.slow_closed_by!r}")  # type: ignore[attr-defined]
    assert [(d.consumer, d.redelivered) for d in deliveries.all] == [("slow", False), ("fast", True)]
    assert "PRECONDITION_FAILED" in repr(deliveries.slow_closed_by) or "406" in repr(deliveries.slow_closed_by)  # type: ignore[attr-defined]
    # the node's setting is back: a new channel keeps its message past the short deadline
    assert "consumer_timeout" not in vhost.server.rabbitmqctl("eval", "application:get_all_env(rabbit).")


def test_the_node_logs_plain_text_and_a_failing_test_sees_only_its_errors(node: RabbitMqServer, vhost: Vhost) -> None:
    import pika

    log = Path(str(node.instance.log_path))
    offset = log.stat().st_size
    with node.connect(vhost.name) as conn, pytest.raises(pika.exceptions.ChannelClosedByBroker):
        conn.channel().queue_declare("tl_no_such_queue", passive=True)
    wait_until(lambda: b"tl_no_such_queue" in log.read_bytes()[offset:], timeout=10, what="the node to log it")
    assert b"\x1b" not in log.read_bytes()  # log.console.use_colors = off, from the boot on
    shown = excerpt(read_log_since(log, offset, READ_LINES), 24)
    assert shown and all("[error]" in line for line in shown), shown
    assert any("no queue 'tl_no_such_queue'" in line for line in shown), shown


def test_the_system_node_and_epmd_are_untouched(node: RabbitMqServer, system_before: dict[str, object]) -> None:
    assert _system_state() == system_before


# -- owner killed, fixtures, xdist ---------------------------------------------------------------------
def test_a_sigkilled_owner_leaves_no_node_and_no_epmd(tmp_path: Path) -> None:
    data = default_data_root().parent / f"testlane-test-rmqkill-{uuid.uuid4().hex[:8]}"
    child = textwrap.dedent(
        f"""
        import os, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from testlane.core.config import load_settings
        from testlane.core.runtime import RunContext
        from testlane.services.stack import ServiceStack
        settings = load_settings(environ={{}}, overrides={{"data_dir": {str(data)!r}}})
        stack = ServiceStack(settings, RunContext.from_settings(settings, owner=os.getpid()))
        server = stack.start(["rabbitmq"])["rabbitmq"]
        print(server.pid, flush=True)
        time.sleep(600)
        """
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", child], stdout=subprocess.PIPE, text=True, cwd=tmp_path, env=clean_env()
    )
    try:
        assert owner.stdout is not None
        pid = int(owner.stdout.readline())
        procs = [p for p in psutil.process_iter() if _pgid(p.pid) == pid]
        assert {p.name() for p in procs} >= {"beam.smp", "epmd"}
        assert server_processes(data)
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    try:
        _, alive = psutil.wait_procs(procs, timeout=15)
        assert alive == []  # at once, through the parent-death signals: not only when the next run reaps
        assert server_processes(data) == []
        settings = load_settings(environ={}, overrides={"data_dir": str(data)})
        reap(RunContext.from_settings(settings, run_id="reaper"))
        assert leftovers(data) == []
    finally:
        shutil.rmtree(data, ignore_errors=True)


INNER_TESTS = """
import os
import pika

def test_vhost_and_mapping(rabbitmq, rabbitmq_vhost):
    assert rabbitmq_vhost.name.startswith("tl_")
    assert os.environ["BROKER_URL"] == rabbitmq_vhost.url_for("pyamqp")
    assert os.environ["AMQP_VHOST"] == rabbitmq_vhost.name
    with rabbitmq_vhost.connect() as conn:
        conn.channel().queue_declare("jobs")

def test_app_vhost_outside_a_lease(rabbitmq):
    assert os.environ["AMQP_VHOST"].endswith("_app")
    assert rabbitmq.env()["TESTLANE_RABBITMQ_URL"].startswith("amqp://")
    assert os.environ["BROKER_URL"].startswith("pyamqp://") and os.environ["BROKER_URL"].endswith("_app")
"""

XDIST_TESTS = """
import os, time, pika
import pytest

@pytest.mark.parametrize("n", range(6))
def test_messages_stay_in_their_vhost(rabbitmq_vhost, n):
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    mine = f"{worker}-{n}".encode()
    with rabbitmq_vhost.connect() as conn:
        channel = conn.channel()
        channel.queue_declare("shared-name")
        channel.confirm_delivery()
        channel.basic_publish("", "shared-name", mine)
        got = []
        for _ in range(50):
            method, _, body = channel.basic_get("shared-name", auto_ack=True)
            if method is None:
                break
            got.append(body)
    assert got == [mine]
"""


def _inner(pytester: pytest.Pytester, tests: str) -> None:
    testlane = '[tool.testlane.env]\nBROKER_URL = "{rabbitmq.url:pyamqp}"\nAMQP_VHOST = "{rabbitmq.vhost}"\n'
    pytester.makefile(".toml", pyproject=inner_pyproject(services='["rabbitmq"]', testlane=testlane))
    pytester.makepyfile(test_inner=tests)


@pytest.mark.usefixtures("inner_env")
def test_fixtures_lease_vhosts_and_map_the_env(pytester: pytest.Pytester, inner_env: Path) -> None:
    _inner(pytester, INNER_TESTS)
    result = run_inner(pytester, "-q", timeout=240)
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    assert server_processes(inner_env) == []


@pytest.mark.usefixtures("inner_env")
def test_two_xdist_workers_never_see_each_others_messages(pytester: pytest.Pytester, inner_env: Path) -> None:
    _inner(pytester, XDIST_TESTS)
    result = run_inner(pytester, "-q", "-n", "2", "-p", "xdist", timeout=240)
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    result.assert_outcomes(passed=6)
    wait_until(lambda: server_processes(inner_env) == [], timeout=15, what="the inner run's node to stop")


URL_TESTS = """
import os

def test_leases_on_an_existing_broker(rabbitmq, rabbitmq_vhost):
    assert rabbitmq.instance.backend == "url"
    assert rabbitmq_vhost.name.startswith("tl_")
    assert os.environ["BROKER_URL"] == rabbitmq_vhost.url_for("pyamqp")
    with rabbitmq_vhost.connect() as conn:
        conn.channel().queue_declare("jobs")
"""


@pytest.mark.usefixtures("inner_env")
def test_url_backend_makes_and_deletes_only_its_own_vhosts(
    pytester: pytest.Pytester, node: RabbitMqServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The existing broker here is this module's node (the system's has no management API, and is
    never touched): the inner run leases vhosts there and leaves none; a dead run's leftover (its
    owner's pid is gone) is reaped by name and owner; a vhost not testlane's stays."""
    with node.management() as api:
        before = {v["name"] for v in api.get("/api/vhosts").json()}
        api.put("/api/vhosts/someone_elses").raise_for_status()
        api.put("/api/vhosts/tl_deadrun_1", json={"description": f"testlane {os.uname().nodename}:{_dead_pid()}:1.0"})
    monkeypatch.setenv("TESTLANE_RABBITMQ_BACKEND", "url")
    monkeypatch.setenv("TESTLANE_RABBITMQ_SERVER_URL", node.url)
    monkeypatch.setenv("TESTLANE_RABBITMQ_SERVER_MANAGEMENT_URL", node.management_url)
    _inner(pytester, URL_TESTS)
    result = run_inner(pytester, "-q", timeout=240)
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    assert (node.instance.password or "") not in result.stdout.str() + result.stderr.str()
    with node.management() as api:
        after = {v["name"] for v in api.get("/api/vhosts").json()}
        api.delete("/api/vhosts/someone_elses")
    assert after == before | {"someone_elses"}  # its leases, its app vhost and the dead run's leftover: gone


def _dead_pid() -> int:
    from tests.helpers import dead_pid

    return dead_pid()


LOCAL_IMAGE = "localhost/testlane-rabbitmq:3-management"


def _has_image(image: str) -> bool:
    if shutil.which("podman") is None:
        return False
    return subprocess.run(["podman", "image", "exists", image], check=False).returncode == 0


@pytest.mark.skipif(not _has_image(LOCAL_IMAGE), reason=f"no {LOCAL_IMAGE} image")
def test_container_backend_follows_the_official_image(data_dir: Path) -> None:
    overrides = {"data_dir": str(data_dir), "rabbitmq.backend": "container", "rabbitmq.image": LOCAL_IMAGE}
    settings = load_settings(environ={}, overrides=overrides)
    with ServiceStack(
        settings, RunContext.from_settings(settings, owner=os.getpid(), run_id="c" + uuid.uuid4().hex[:7])
    ) as stack:
        server = stack.start(["rabbitmq"])["rabbitmq"]
        assert isinstance(server, RabbitMqServer) and server.instance.backend == "container"
        name = f"tl_{server.instance.run_id}_c1"
        ensure_vhost(server, name)
        deliveries = assert_redelivered_after_death(Vhost(server, name))
        assert [d.consumer for d in deliveries.all] == ["doomed", "survivor"]
        delete_vhost(server, name)
        container = server.instance.container
    gone = subprocess.run(["podman", "container", "exists", container or ""], check=False)
    assert gone.returncode != 0


def test_a_port_taken_before_the_node_binds_it_is_retried_on_new_ports(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen in the suite: another server bound the node's reserved AMQP port first, and the node's
    `could_not_start_listener` ended the start instead of a retry on new ports."""
    import socket

    from testlane.services import base, ports

    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    handed: list[int] = []

    def reserve(ports_dir: Path, **kwargs: object) -> ports.PortReservation:
        if not handed:  # the node's first AMQP port: someone else's by the time the node binds it
            handed.append(taken)
            return ports.PortReservation(taken, None)
        reservation = ports.reserve_port(ports_dir, **kwargs)  # type: ignore[arg-type]
        handed.append(reservation.port)
        return reservation

    monkeypatch.setattr(base, "reserve_port", reserve)
    settings = load_settings(environ={}, overrides={"data_dir": str(data_dir)})
    stack = ServiceStack(settings, RunContext.from_settings(settings, owner=os.getpid()))
    try:
        server = stack.start(["rabbitmq"])["rabbitmq"]
        assert handed[0] == taken and server.port not in (taken, 0)
        with server.connect():
            pass
        # The failed node exited without writing a crash dump first (seconds, in the retried node's directory).
        assert not (Path(server.instance.instance_dir or "") / "log" / "erl_crash.dump").exists()
    finally:
        stack.stop()
        squatter.close()
    assert server_processes(data_dir) == []


def test_a_ping_of_a_port_that_accepts_but_never_speaks_amqp_ends_within_its_timeout() -> None:
    """Seen in the suite: a node's AMQP port taken before it bound it (by something that accepts connections and
    says nothing) held each readiness check for pika's default stack timeout, 15 s, on top of its own."""
    import http.server
    import socket
    import threading

    from pika.adapters.utils.connection_workflow import AMQPConnectorStackTimeout

    from testlane.services.instance import Instance

    class Overview(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the management API answers: the ping goes on to the AMQP port
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    api = http.server.HTTPServer(("127.0.0.1", 0), Overview)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel completes the handshake; nothing ever reads or writes
        instance = Instance(
            run_id="abcd1234",
            name="rabbitmq",
            engine="rabbitmq",
            backend="local",
            host="127.0.0.1",
            port=silent.getsockname()[1],
            user="tl_u",
            password="p",
            database="/",
            extra={"management_port": api.server_address[1]},
        )
        start = time.monotonic()
        try:
            with pytest.raises(AMQPConnectorStackTimeout):
                RabbitMqServer(instance, owned=False).ping(timeout=1.0)
        finally:
            api.shutdown()
            api.server_close()
    assert time.monotonic() - start < 8  # ~1 s; pika's default stack timeout is 15 s
