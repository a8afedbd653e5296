"""The ``mqtt`` service kind (issue 18): a real Mosquitto broker from this machine's binaries, per-test
namespaces (a dynamic-security user per test), the fixtures, the CLI. Real processes, no mocks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from click.testing import CliRunner

from testlane.cli import doctor
from testlane.cli.main import cli
from testlane.core.errors import BinaryNotFoundError, ConfigError
from testlane.core.waiting import wait_until
from testlane.services.env_mapping import render_mapping
from testlane.services.mqtt import (
    DYNSEC_FILE,
    PASSWORD_FILE,
    MqttServer,
    close_client,
    connect_client,
    control,
    find_mosquitto,
)
from testlane.services.mqtt_isolation import MqttLeases
from testlane.services.registry import Registry
from testlane.services.stack import ServiceStack, reap
from tests.helpers import server_processes
from tests.integration.test_credentials_it import _context, needs_root, no_password_on_command_lines, run_as
from tests.integration.test_isolation_it import make_project, run

ROOT = Path(__file__).resolve().parents[2]


def _has_mosquitto() -> bool:
    try:
        find_mosquitto()
    except BinaryNotFoundError:
        return False
    return True


# Every test but the container backend's needs the local broker.
needs_mosquitto = pytest.mark.skipif(not _has_mosquitto(), reason="no local mosquitto")


@pytest.fixture
def broker(settings_for) -> Iterator[MqttServer]:  # type: ignore[no-untyped-def]
    settings = settings_for()
    with ServiceStack(settings, _context(settings)) as stack:
        server = stack.start(["mqtt"])["mqtt"]
        assert isinstance(server, MqttServer)
        yield server


class Listener:
    """A client that records what it receives."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.got: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        client.on_message = self._on_message

    def _on_message(self, _c: Any, _u: Any, message: Any) -> None:
        with self._lock:
            self.got.append((message.topic, bytes(message.payload), bool(message.retain)))

    def subscribe(self, topic: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *_a: done.set()
        self.client.subscribe(topic, qos=1)
        assert done.wait(5)

    def topics(self) -> list[str]:
        with self._lock:
            return [t for t, _p, _r in self.got]


def _publish(client: Any, topic: str, payload: bytes, *, retain: bool = False) -> None:
    client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)


@needs_mosquitto
def test_the_broker_starts_answers_with_the_runs_credentials_and_stops(settings_for) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for()
    context = _context(settings)
    started = time.perf_counter()
    with ServiceStack(settings, context) as stack:
        server = stack.start(["mosquitto"])["mqtt"]  # the alias
        took = time.perf_counter() - started
        assert isinstance(server, MqttServer)
        assert server.instance.backend == "local" and server.version.startswith("2.")
        assert server.url == f"mqtt://testlane:{server.password}@127.0.0.1:{server.port}"
        assert stack.env()["TESTLANE_MQTT_URL"] == server.url
        assert stack.env()["TESTLANE_MQTT_PORT"] == str(server.port)
        assert took < 10, took
        # a round trip with the run's credentials
        listener = Listener(server.client())
        listener.subscribe("a/b")
        _publish(listener.client, "a/b", b"hello")
        wait_until(lambda: listener.topics() == ["a/b"], timeout=5, what="the message")
        close_client(listener.client)
        # the account's hash only, in a 0600 file; no password on any command line
        instance_dir = Path(server.instance.instance_dir or "")
        security = instance_dir / DYNSEC_FILE
        assert stat.S_IMODE(security.stat().st_mode) == 0o600
        assert server.password and server.password not in security.read_text()
        no_password_on_command_lines(server.password)
        (recorded,) = [i for i in Registry(context).instances(context.run_id) if i.engine == "mqtt"]
        assert recorded.pid == server.pid
        status = CliRunner().invoke(cli, ["services", "status"], env={"TESTLANE_DATA_DIR": settings.data_dir})
        assert status.exit_code == 0, status.output
        assert "mqtt" in status.output and (server.password or "") not in status.output
        pid = server.pid
    assert pid is not None
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not instance_dir.exists()


@needs_mosquitto
def test_without_the_plugin_a_password_file_and_a_topic_prefix(settings_for, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # mosquitto alone in a folder: no mosquitto_dynamic_security.so next to it
    alone = tmp_path / "broker" / "sbin"
    alone.mkdir(parents=True)
    shutil.copy2(find_mosquitto().path, alone / "mosquitto")
    settings = settings_for(mqtt__binary=str(alone / "mosquitto"), services=["mqtt"])  # doctor judges used kinds
    with ServiceStack(settings, _context(settings)) as stack:
        server = stack.start(["mqtt"])["mqtt"]
        assert isinstance(server, MqttServer) and server.isolation == "prefix"
        password_file = Path(server.instance.instance_dir or "") / PASSWORD_FILE
        line = password_file.read_text()
        assert line.startswith("testlane:$7$101$") and (server.password or "") not in line
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
        close_client(server.client())  # the hash computed by testlane is accepted
        with pytest.raises(ConnectionError, match="Not authorized"):
            connect_client(server.host, server.port, user="testlane", password="wrong")
        topics = {c.topic: c for c in doctor._kinds(settings)}
        assert topics["mqtt (isolation)"].status == "warn"


@needs_mosquitto
def test_a_wrong_or_missing_password_is_refused(broker: MqttServer) -> None:
    for user, password in ((None, None), ("testlane", "not-the-password"), ("admin", "admin")):
        with pytest.raises(ConnectionError, match="Not authorized"):
            connect_client(broker.host, broker.port, user=user, password=password)


@needs_mosquitto
@needs_root
def test_another_local_user_cannot_enter_the_broker(broker: MqttServer, hostile_user: str) -> None:
    security = Path(broker.instance.instance_dir or "") / DYNSEC_FILE
    for args in ([], ["-u", "testlane", "-P", "guess"]):
        proc = run_as(
            hostile_user,
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-t", "#", "-C", "1", "-W", "3", *args],
        )
        assert proc.returncode != 0 and "not authori" in (proc.stdout + proc.stderr).lower(), proc
    read = run_as(hostile_user, ["cat", str(security)])
    assert read.returncode != 0 and "Permission denied" in read.stderr
    assert psutil.Process(broker.pid or 0).username() != "root"
    assert broker.ready()


@needs_mosquitto
def test_per_test_users_confine_hash_subscribers_and_retained_messages(broker: MqttServer) -> None:
    assert broker.isolation == "acl"
    leases = MqttLeases(broker)
    try:
        a, b = leases.lease(), leases.lease()
        assert a.topic_prefix != b.topic_prefix and a.user != b.user and a.url != b.url
        la, lb = Listener(a.client()), Listener(b.client())
        la.subscribe("#")
        lb.subscribe("#")
        _publish(lb.client, b.topic("x"), b"1")
        _publish(lb.client, b.topic("kept"), b"retained", retain=True)
        _publish(lb.client, a.topic("intrusion"), b"denied")  # outside its subtree: dropped by the broker
        wait_until(lambda: len(lb.topics()) == 2, timeout=5, what="b's own messages")
        # a's `#` subscriber received nothing of b's; b's publish into a's subtree never arrived
        _publish(la.client, a.topic("mine"), b"2")
        wait_until(lambda: la.topics() == [a.topic("mine")], timeout=5, what="a's own message only")
        assert sorted(lb.topics()) == sorted([b.topic("x"), b.topic("kept")])
        # the next test does not get b's retained message, and after release nobody does
        leases.release(b)
        c = leases.lease()
        lc = Listener(c.client())
        lc.subscribe("#")
        account = Listener(broker.client())
        account.subscribe(f"tl/{broker.instance.run_id}/#")
        _publish(account.client, c.topic("probe"), b"3")
        wait_until(lambda: c.topic("probe") in account.topics(), timeout=5, what="the probe")
        assert [t for t, _p, retained in account.got if retained] == []
        wait_until(lambda: c.topic("probe") in lc.topics(), timeout=5, what="the probe, at c")
        assert lc.topics() == [c.topic("probe")]  # and no retained message before it
        # release disconnected b's clients and removed its user
        with pytest.raises(ConnectionError):
            connect_client(broker.host, broker.port, user=b.user, password=b.password)
        close_client(account.client)
        leases.release(a)
        leases.release(c)
    finally:
        leases.close()


@needs_mosquitto
def test_a_namespace_costs_about_a_millisecond(broker: MqttServer) -> None:
    leases = MqttLeases(broker)
    try:
        leases.release(leases.lease())  # the account's connection
        made, removed = [], []
        for _ in range(30):
            t0 = time.perf_counter()
            ns = leases.lease()
            t1 = time.perf_counter()
            leases.release(ns)
            made.append(t1 - t0)
            removed.append(time.perf_counter() - t1)
        made.sort()
        removed.sort()
        print(f"mqtt namespace: make {made[15] * 1000:.2f} ms, remove {removed[15] * 1000:.2f} ms (medians)")
        assert made[15] < 0.02 and removed[15] < 0.02  # no pool ahead needed (0.6/0.7 ms measured)
    finally:
        leases.close()


@needs_mosquitto
def test_the_env_mapping_gives_the_application_the_runs_own_prefix(broker: MqttServer) -> None:
    mapping = {
        "MQTT_URL": "{mqtt.url}",
        "MQTT_ADDR": "{mosquitto.host}:{mqtt.port}",
        "MQTT_USER": "{mqtt.user}",
        "MQTT_PASSWORD": "{mqtt.password}",
        "MQTT_PREFIX": "{mqtt.topic_prefix}",
    }
    env = render_mapping(mapping, {"mqtt": broker})
    assert env["MQTT_URL"] == broker.url and env["MQTT_ADDR"] == f"127.0.0.1:{broker.port}"
    assert env["MQTT_USER"] == "testlane" and env["MQTT_PASSWORD"] == broker.password
    assert env["MQTT_PREFIX"] == f"tl/{broker.instance.run_id}/app/"


@needs_mosquitto
def test_the_broker_is_reaped_after_its_owner_is_killed(settings_for, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for()
    child = textwrap.dedent(
        f"""
        import os, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from testlane.core.config import load_settings
        from testlane.core.runtime import RunContext
        from testlane.services.stack import ServiceStack
        settings = load_settings(environ={{}}, overrides={{"data_dir": {settings.data_dir!r}}})
        stack = ServiceStack(settings, RunContext.from_settings(settings, owner=os.getpid()), die_with_parent=False)
        server = stack.start(["mqtt"])["mqtt"]
        print(server.pid, server.instance.instance_dir, flush=True)
        time.sleep(600)
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert owner.stdout is not None
        pid_text, instance_dir = owner.stdout.readline().split()
        pid = int(pid_text)
        assert psutil.pid_exists(pid) and Path(instance_dir).is_dir()
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    report = reap(_context(settings))
    assert [i.engine for i in report.stopped] == ["mqtt"]
    wait_until(lambda: not psutil.pid_exists(pid), timeout=10, what="the orphaned broker to be stopped")
    assert not Path(instance_dir).exists()
    assert not [p for p in server_processes(Path(settings.data_dir)) if "mosquitto" in p.name()]


@needs_mosquitto
def test_mqtt_binary_that_is_not_mosquitto_names_the_key(settings_for) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(mqtt__binary="/bin/true", mqtt__backend="local", services=["mqtt"])
    with ServiceStack(settings, _context(settings)) as stack, pytest.raises(BinaryNotFoundError) as info:
        stack.start(["mqtt"])
    assert "mqtt.binary" in info.value.message and "Mosquitto" in info.value.message
    topics = {c.topic: c for c in doctor._kinds(settings)}
    assert topics["mqtt (local)"].status == "fail" and "mqtt.binary" in topics["mqtt (local)"].detail


@needs_mosquitto
def test_configuration_errors_name_the_key(settings_for) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=r"mqtt\.backend"):
        settings = settings_for(mqtt__backend="embedded")
        ServiceStack(settings, _context(settings)).engine("mqtt")
    settings = settings_for(mqtt__backend="url")
    with pytest.raises(ConfigError, match=r"mqtt\.url"):
        ServiceStack(settings, _context(settings)).engine("mqtt")


@needs_mosquitto
def test_doctor_checks_the_broker_and_its_plugin(settings_for) -> None:  # type: ignore[no-untyped-def]
    topics = {c.topic: c for c in doctor._kinds(settings_for())}
    assert topics["mqtt (local)"].status == "ok" and "Mosquitto 2." in topics["mqtt (local)"].detail
    assert topics["mqtt (isolation)"].status == "ok"


@needs_mosquitto
def test_the_url_backend_uses_a_prefix_and_clears_its_retained_messages(broker: MqttServer, settings_for) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(mqtt__backend="url", mqtt__url=broker.url)
    with ServiceStack(settings, _context(settings)) as stack:
        existing = stack.start(["mqtt"])["mqtt"]
        assert isinstance(existing, MqttServer)
        assert existing.instance.backend == "url" and existing.isolation == "prefix"
        leases = MqttLeases(existing)
        try:
            ns = leases.lease()
            assert ns.user == "testlane" and ns.topic_prefix.startswith(f"tl/{existing.instance.run_id}/t")
            client = ns.client()
            _publish(client, ns.topic("state"), b"on", retain=True)
            leases.release(ns)
            account = Listener(broker.client())
            account.subscribe(f"{ns.topic_prefix}#")
            _publish(account.client, ns.topic("probe"), b"x")
            wait_until(lambda: ns.topic("probe") in account.topics(), timeout=5, what="the probe")
            assert [t for t, _p, retained in account.got if retained] == []  # its retained message is gone
            close_client(account.client)
        finally:
            leases.close()
    assert broker.ready()  # an existing broker is never stopped


INNER_SUITE = """
import json, os, time, threading

ME = os.environ.get("PYTEST_XDIST_WORKER", "solo")


def test_hash_subscriber_hears_only_its_own_test(mqtt_namespace, mqtt):
    assert os.environ["APP_MQTT_URL"] == mqtt_namespace.url != mqtt.url
    assert os.environ["APP_MQTT_PREFIX"] == mqtt_namespace.topic_prefix + "events"
    got, lock = [], threading.Lock()
    client = mqtt_namespace.client()
    def on_message(c, u, m):
        with lock:
            got.append(m.topic)
    client.on_message = on_message
    done = threading.Event()
    client.on_subscribe = lambda *a: done.set()
    client.subscribe("#", qos=1)
    assert done.wait(5)
    # Meet the other worker: each sees the other's namespace in a file, then both publish for a while.
    with open(f"tmp-{ME}.json", "w") as out:
        json.dump({"prefix": mqtt_namespace.topic_prefix, "app": os.environ["APP_MQTT_PREFIX"]}, out)
    os.replace(f"tmp-{ME}.json", f"ns-{ME}.json")  # whole, for the other worker
    deadline = time.monotonic() + 60
    while len([p for p in os.listdir(".") if p.startswith("ns-gw")]) < 2:
        assert time.monotonic() < deadline, "the other worker never showed up"
        time.sleep(0.01)
    other = [json.load(open(p))["prefix"] for p in os.listdir(".") if p.startswith("ns-gw") and ME not in p][0]
    for i in range(100):
        client.publish(mqtt_namespace.topic(f"m/{i}"), b"x", qos=1).wait_for_publish(5)
        client.publish(other + f"m/{i}", b"intrusion", qos=1).wait_for_publish(5)  # dropped by the broker
    client.publish(mqtt_namespace.topic("kept"), b"retained", qos=1, retain=True).wait_for_publish(5)
    client.publish(mqtt_namespace.topic("last"), b"x", qos=1).wait_for_publish(5)
    deadline = time.monotonic() + 30
    while mqtt_namespace.topic("last") not in got:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.2)  # anything of the other's still on its way
    with lock:
        foreign = [t for t in got if not t.startswith(mqtt_namespace.topic_prefix)]
        mine = [t for t in got if t.startswith(mqtt_namespace.topic_prefix)]
    with open(f"heard-{ME}.json", "w") as out:
        json.dump({"foreign": foreign, "mine": len(mine)}, out)
    assert foreign == []
    assert len(mine) == 102


def test_the_next_test_gets_no_retained_message(mqtt_namespace, mqtt):
    got = []
    client = mqtt_namespace.client()
    client.on_message = lambda c, u, m: got.append((m.topic, m.retain))
    done = threading.Event()
    client.on_subscribe = lambda *a: done.set()
    client.subscribe("#", qos=1)
    assert done.wait(5)
    client.publish(mqtt_namespace.topic("probe"), b"x", qos=1).wait_for_publish(5)
    deadline = time.monotonic() + 10
    while not got:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert got == [(mqtt_namespace.topic("probe"), False)]


def test_z_without_a_namespace_the_application_has_the_runs_prefix(mqtt):
    assert os.environ["APP_MQTT_PREFIX"] == mqtt.topic_prefix + "events"
    assert mqtt.topic_prefix == f"tl/{mqtt.instance.run_id}/app/"
    assert os.environ["APP_MQTT_URL"] == mqtt.url and mqtt.url.startswith("mqtt://testlane:")
"""


@needs_mosquitto
def test_two_workers_never_see_each_others_messages(pytester: pytest.Pytester, inner_env: Path) -> None:
    project = make_project(pytester, services='["mqtt"]')
    with (project / "pyproject.toml").open("a") as pyproject:
        pyproject.write(
            '\n[tool.testlane.env]\nAPP_MQTT_URL = "{mqtt.url}"\nAPP_MQTT_PREFIX = "{mqtt.topic_prefix}events"\n'
        )
    pytester.makepyfile(test_mqtt_it=INNER_SUITE)
    result = run(pytester, "-n", "2", "--dist", "each")
    result.assert_outcomes(passed=6)
    heard = {p.name: json.loads(p.read_text()) for p in sorted(project.glob("heard-gw*.json"))}
    assert sorted(heard) == ["heard-gw0.json", "heard-gw1.json"]
    assert all(seen == {"foreign": [], "mine": 102} for seen in heard.values()), heard
    seen = [json.loads(p.read_text()) for p in sorted(project.glob("ns-gw*.json"))]
    assert seen[0]["prefix"] != seen[1]["prefix"]
    # During a test the application's mapped variables carry the test's namespace.
    assert all(s["app"] == s["prefix"] + "events" for s in seen)
    # The run left nothing behind.
    assert not [p for p in server_processes(inner_env) if "mosquitto" in p.name()]


@needs_mosquitto
def test_the_container_script_makes_an_account_that_works_once_granted(tmp_path: Path) -> None:
    """The image is not on this machine: its script runs here with the image's paths replaced by local ones
    (``mosquitto_ctrl dynsec init`` reading the password on standard input, then the broker), and the
    handle's first readiness check grants the account every topic."""
    from testlane.services.instance import Instance
    from testlane.services.kinds.mqtt import MOSQUITTO_SCRIPT

    found = find_mosquitto()
    if found.plugin is None:
        pytest.skip("no dynamic-security plugin")
    root = Path("/dev/shm") / f"tl-mqtt-script-{tmp_path.name}"
    root.mkdir(mode=0o777)
    os.chmod(root, 0o777)
    try:
        port = _free_port()
        script = (
            MOSQUITTO_SCRIPT.replace("/mosquitto/data", str(root))
            .replace("/mosquitto/config", str(root))
            .replace("/usr/lib/mosquitto_dynamic_security.so", str(found.plugin))
            .replace("listener 1883", f"listener {port} 127.0.0.1")
            .replace("chown -R mosquitto:mosquitto $d", "true")
            .replace("exec mosquitto", f"exec {found.path}")
        )
        password = "p" + "x" * 20
        env = {"PATH": os.environ["PATH"], "TESTLANE_MQTT_PASSWORD": password}
        log = open(root / "log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            ["sh", "-c", script], env=env, stdout=log, stderr=subprocess.STDOUT, user="nobody", cwd=root
        )
        try:
            instance = Instance(
                run_id="script",
                name="mqtt",
                engine="mqtt",
                backend="container",
                host="127.0.0.1",
                port=port,
                user="testlane",
                password=password,
            )
            server = MqttServer(instance, owned=False)
            wait_until(server.ready, timeout=10, what="the scripted broker")
            assert instance.extra.get("granted") is True
            security = json.loads((root / "dynamic-security.json").read_text())
            assert password not in json.dumps(security)
            assert security["defaultACLAccess"]["publishClientReceive"] is False
            listener = Listener(server.client())
            listener.subscribe("any/#")
            _publish(listener.client, "any/topic", b"x")
            wait_until(lambda: listener.topics() == ["any/topic"], timeout=5, what="the account's own message")
            close_client(listener.client)
            leases = MqttLeases(server)
            try:
                ns = leases.lease()
                assert ns.isolation == "acl"
                own = Listener(ns.client())
                own.subscribe("#")
                other = server.client()
                _publish(other, "any/else", b"x")
                close_client(other)
                _publish(own.client, ns.topic("mine"), b"y")
                wait_until(lambda: ns.topic("mine") in own.topics(), timeout=5, what="the test's own message")
                assert own.topics() == [ns.topic("mine")]  # nothing else
                leases.release(ns)
            finally:
                leases.close()
        finally:
            proc.terminate()
            proc.wait(10)
            log.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


MQTT_TEST_IMAGE = os.environ.get("TESTLANE_MQTT_TEST_IMAGE", "localhost/testlane-mosquitto:2")


def _mqtt_image() -> str | None:
    if shutil.which("podman") is None:
        return None
    found = subprocess.run(["podman", "image", "exists", MQTT_TEST_IMAGE], capture_output=True, check=False)
    return MQTT_TEST_IMAGE if found.returncode == 0 else None


def _labelled_containers(run_id: str) -> list[str]:
    """This run's mqtt containers (the run id may be the outer suite's, whose other worker runs other kinds'
    containers at the same time)."""
    proc = subprocess.run(
        ["podman", "ps", "-a", "--filter", f"label=testlane.run={run_id}", "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return [name for name in proc.stdout.split() if name.startswith("testlane-mqtt-")]


def _container_round(server: MqttServer) -> None:
    """What the container's broker must do: the run's credentials work, others are refused, two namespaces
    are isolated, the password is on no command line."""
    assert server.instance.backend == "container" and server.isolation == "acl"
    assert server.password
    listener = Listener(server.client())
    listener.subscribe("a/b")
    _publish(listener.client, "a/b", b"hello")
    wait_until(lambda: listener.topics() == ["a/b"], timeout=5, what="the message")
    close_client(listener.client)
    for user, password in ((None, None), ("testlane", "not-the-password")):
        with pytest.raises(ConnectionError, match="Not authorized"):
            connect_client(server.host, server.port, user=user, password=password)
    leases = MqttLeases(server)
    try:
        a, b = leases.lease(), leases.lease()
        assert a.isolation == b.isolation == "acl" and a.user != b.user
        la, lb = Listener(a.client()), Listener(b.client())
        la.subscribe("#")
        lb.subscribe("#")
        _publish(lb.client, b.topic("x"), b"1")
        _publish(lb.client, a.topic("intrusion"), b"denied")
        wait_until(lambda: lb.topics() == [b.topic("x")], timeout=5, what="b's own message")
        _publish(la.client, a.topic("mine"), b"2")
        wait_until(lambda: la.topics() == [a.topic("mine")], timeout=5, what="a's own message only")
        assert lb.topics() == [b.topic("x")]
        leases.release(a)
        leases.release(b)
    finally:
        leases.close()
    no_password_on_command_lines(server.password)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert server.password not in ps


def test_mqtt_in_a_container_isolates_namespaces_and_leaves_nothing(settings_for) -> None:  # type: ignore[no-untyped-def]
    image = _mqtt_image()
    if image is None:
        pytest.skip(f"no podman, or no {MQTT_TEST_IMAGE} image (scripts/build-local-images.sh mosquitto)")
    settings = settings_for(mqtt__backend="container", mqtt__image=image)
    context = _context(settings)
    with ServiceStack(settings, context) as stack:
        started = time.perf_counter()
        server = stack.start(["mqtt"])["mqtt"]
        took = time.perf_counter() - started
        assert isinstance(server, MqttServer)
        assert server.instance.extra.get("granted") is True and took < 10, took
        # the broker's log reaches `podman logs` at once (its stdout is block-buffered: empty for a while)
        logs = subprocess.run(["podman", "logs", server.instance.container or ""], capture_output=True, text=True)
        assert "mosquitto version" in logs.stdout + logs.stderr
        # Granting changes the account's own role: the plugin disconnects the account before answering, and the
        # grant is answered on a second connection at once (it used to wait for the readiness check's timeout).
        account = server.client(reconnect_on_failure=False)
        revoke = {"command": "removeRoleACL", "rolename": "admin", "acltype": "publishClientSend", "topic": "#"}
        with pytest.raises(ConnectionError, match="closed the connection"):
            control(account, [revoke])  # revoking is a change of the account's role too
        close_client(account)
        started = time.perf_counter()
        server._grant_admin(timeout=10)
        assert time.perf_counter() - started < 5
        _container_round(server)
        assert _labelled_containers(context.run_id) == [server.instance.container]
        instance_dir = context.instance_dir(server.instance.name)
    assert _labelled_containers(context.run_id) == []
    assert not instance_dir.exists()
    assert Registry(context).instances(context.run_id) == []


def test_mqtt_container_is_reaped_after_its_owner_is_killed(settings_for, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    image = _mqtt_image()
    if image is None:
        pytest.skip(f"no podman, or no {MQTT_TEST_IMAGE} image (scripts/build-local-images.sh mosquitto)")
    settings = settings_for(mqtt__backend="container", mqtt__image=image)
    child = textwrap.dedent(
        f"""
        import os, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from testlane.core.config import load_settings
        from testlane.core.runtime import RunContext
        from testlane.services.stack import ServiceStack
        overrides = {{"data_dir": {settings.data_dir!r}, "mqtt.backend": "container", "mqtt.image": {image!r}}}
        settings = load_settings(environ={{}}, overrides=overrides)
        context = RunContext.from_settings(settings, owner=os.getpid())
        stack = ServiceStack(settings, context, die_with_parent=False)
        server = stack.start(["mqtt"])["mqtt"]
        print(context.run_id, server.instance.container, context.instance_dir(server.instance.name), flush=True)
        time.sleep(600)
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert owner.stdout is not None
        line = owner.stdout.readline().split()
        assert len(line) == 3, "the owner did not start the container"
        run_id, container, instance_dir = line
        assert _labelled_containers(run_id) == [container]
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    report = reap(_context(settings))
    assert [i.engine for i in report.stopped] == ["mqtt"]
    assert _labelled_containers(run_id) == []
    assert not Path(instance_dir).exists()
