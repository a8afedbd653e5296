"""The broker images of scripts/build-local-images.sh follow their official images' conventions, checked with
Podman directly (the flags this host needs, as the container backend detects them) and each broker's own client:

* ``localhost/testlane-nats:2`` (like ``nats:2.10-alpine``): a command starting with ``-`` goes to
  nats-server, any other command runs as is; nats-py connects with the user and password of a configuration
  file the container wrote from an environment variable.
* ``localhost/testlane-rabbitmq:3-management`` (like ``rabbitmq:3-management``): RABBITMQ_DEFAULT_USER/PASS and
  RABBITMQ_ERLANG_COOKIE honoured, rabbitmq-server as user rabbitmq; pika connects, the management API answers.
* ``localhost/testlane-mosquitto:2`` (like ``eclipse-mosquitto:2``): paho-mqtt connects with a password file
  made inside the container by mosquitto_passwd.

The password never appears on a command line: ``-e NAME`` names the variable, the CLI takes its value from its
own environment (as the container backend does). Each test skips, saying why, without podman, the image, or
the client library.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest

from testlane.core.config import load_settings
from testlane.core.waiting import wait_until
from testlane.services.container import ContainerRuntime, detect_runtime
from testlane.services.credentials import new_password

NATS_IMAGE = "localhost/testlane-nats:2"
RABBITMQ_IMAGE = "localhost/testlane-rabbitmq:3-management"
MOSQUITTO_IMAGE = "localhost/testlane-mosquitto:2"

T = TypeVar("T")


def _runtime(image: str) -> ContainerRuntime:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (apt-get install -y podman runc)")
    if subprocess.run(["podman", "image", "exists", image], capture_output=True, check=False).returncode != 0:
        name = image.split("/")[-1].split(":")[0].removeprefix("testlane-")
        pytest.skip(f"the image {image} is not built (scripts/build-local-images.sh {name})")
    return detect_runtime(load_settings(environ={"TESTLANE_CONTAINER_CLI": "podman"}))


@contextmanager
def container(
    runtime: ContainerRuntime,
    image: str,
    *command: str,
    options: tuple[str, ...],
    ports: tuple[int, ...],
    secrets: dict[str, str],
) -> Iterator[tuple[str, dict[int, int]]]:
    """``run -d OPTIONS IMAGE COMMAND`` with each port published on a free loopback port and each of
    ``secrets`` passed as ``-e NAME`` (its value only in the CLI's environment); yields the name and
    {container port: host port}; removes the container."""
    name = f"testlane-imagecheck-{uuid.uuid4().hex[:10]}"
    published = [arg for port in ports for arg in ("-p", f"127.0.0.1::{port}")]
    named = [arg for key in secrets for arg in ("-e", key)]
    argv = runtime.command(
        "run", "-d", "--name", name, *published, *named, *options, *runtime.run_args, image, *command
    )
    assert not any(value in arg for value in secrets.values() for arg in argv)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env={**os.environ, **secrets})
        assert proc.returncode == 0, proc.stderr
        mapping = {}
        for port in ports:
            out = runtime.run("port", name, f"{port}/tcp", timeout=30).stdout.strip().splitlines()[0]
            mapping[port] = int(out.rsplit(":", 1)[1])
        yield name, mapping
    finally:
        runtime.run("rm", "-f", "-t", "0", name, timeout=120)


def _logs(runtime: ContainerRuntime, name: str) -> str:
    proc = runtime.run("logs", "--tail", "20", name, timeout=30)
    return (proc.stdout + proc.stderr).strip()


def _exec(runtime: ContainerRuntime, name: str, *argv: str) -> str:
    proc = runtime.run("exec", name, *argv, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _uid_of_pid1(runtime: ContainerRuntime, name: str) -> str:
    status = _exec(runtime, name, "cat", "/proc/1/status")
    return next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))


# The configuration a NATS kind writes inside the container: from $NATS_PASSWORD, never an argument.
NATS_COMMAND = (
    "sh",
    "-c",
    "umask 077 && printf 'port: 4222\\njetstream { store_dir: /data }\\n"
    'authorization { user: testlane, password: "%s" }\\n\' "$NATS_PASSWORD" > /data/nats.conf'
    " && exec nats-server -c /data/nats.conf",
)


def test_nats_image_entrypoint_and_a_password_from_a_config_the_container_wrote() -> None:
    nats = pytest.importorskip("nats")
    runtime = _runtime(NATS_IMAGE)
    # A first argument starting with `-` goes to nats-server (the official alpine entrypoint's rule).
    proc = runtime.run("run", "--rm", *runtime.run_args, NATS_IMAGE, "--version", timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("nats-server: v2."), proc.stdout + proc.stderr
    proc = runtime.run("run", "--rm", *runtime.run_args, NATS_IMAGE, "sh", "-c", "command -v nats-server", timeout=120)
    assert proc.stdout.strip() == "/usr/local/bin/nats-server", proc.stderr
    inspect = runtime.run("image", "inspect", NATS_IMAGE, "--format", "{{json .Config}}", timeout=60)
    config = json.loads(inspect.stdout)
    assert config["Entrypoint"] == ["/usr/local/bin/docker-entrypoint.sh"]
    assert "4222/tcp" in config["ExposedPorts"]

    password = new_password()
    with container(
        runtime,
        NATS_IMAGE,
        *NATS_COMMAND,
        options=("--tmpfs", "/data"),
        ports=(4222,),
        secrets={"NATS_PASSWORD": password},
    ) as (name, ports):
        url = f"nats://127.0.0.1:{ports[4222]}"

        async def exchange() -> None:
            async def connect(secret: str) -> Any:
                return await nats.connect(
                    url, user="testlane", password=secret, connect_timeout=2, allow_reconnect=False
                )

            nc = await wait_until_async(lambda: connect(password), what=f"nats-server in {name}")
            js = nc.jetstream()
            await js.add_stream(name="CHECK", subjects=["check.>"])
            ack = await js.publish("check.one", b"hello")
            assert ack.seq == 1
            await nc.close()
            with pytest.raises(Exception, match="Authorization Violation"):
                await connect("not-the-password")

        asyncio.run(exchange())


async def wait_until_async(connect: Callable[[], Awaitable[T]], *, what: str, timeout: float = 60) -> T:
    """Retry an async connect until it succeeds, within ``timeout`` (a deadline, no fixed sleep)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.05
    while True:
        try:
            return await connect()
        except Exception as exc:  # "not yet" until the deadline
            if "Authorization" in str(exc) or loop.time() + delay > deadline:
                raise AssertionError(f"{what}: {exc!r}") from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)


def test_rabbitmq_image_default_user_and_password_from_the_environment_and_the_management_api() -> None:
    pika = pytest.importorskip("pika")
    runtime = _runtime(RABBITMQ_IMAGE)
    password, cookie = new_password(), new_password()
    with container(
        runtime,
        RABBITMQ_IMAGE,
        options=("--tmpfs", "/var/lib/rabbitmq", "-e", "RABBITMQ_DEFAULT_USER=testlane"),
        ports=(5672, 15672),
        secrets={"RABBITMQ_DEFAULT_PASS": password, "RABBITMQ_ERLANG_COOKIE": cookie},
    ) as (name, ports):

        def overview(user: str, secret: str) -> dict[str, object]:
            request = urllib.request.Request(f"http://127.0.0.1:{ports[15672]}/api/overview")
            token = base64.b64encode(f"{user}:{secret}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
            with urllib.request.urlopen(request, timeout=5) as response:
                return dict(json.load(response))

        found = wait_until(
            lambda: overview("testlane", password),
            timeout=120,
            what=f"the management API of {name} to answer",
            transient=(OSError,),
            max_interval=0.5,
        )
        assert str(found["rabbitmq_version"]).startswith("3."), found
        with pytest.raises(urllib.error.HTTPError, match="401"):
            overview("guest", "guest")  # the default user replaced the guest user

        params = pika.ConnectionParameters(
            host="127.0.0.1",
            port=ports[5672],
            credentials=pika.PlainCredentials("testlane", password),
            connection_attempts=1,
            socket_timeout=5,
        )
        connection = wait_until(
            lambda: pika.BlockingConnection(params),
            timeout=60,
            what=f"AMQP on {name}",
            transient=(pika.exceptions.AMQPConnectionError,),
        )
        try:
            channel = connection.channel()
            channel.queue_declare("check", auto_delete=True)
            channel.basic_publish("", "check", b"hello")
            body = wait_until(lambda: channel.basic_get("check", auto_ack=True)[2], timeout=10, what="the message")
            assert body == b"hello"
        finally:
            connection.close()
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            pika.BlockingConnection(
                pika.ConnectionParameters(
                    host="127.0.0.1",
                    port=ports[5672],
                    credentials=pika.PlainCredentials("testlane", "not-the-password"),
                    connection_attempts=1,
                )
            )

        # The server runs as rabbitmq; the cookie file holds RABBITMQ_ERLANG_COOKIE (0400/0600, rabbitmq's), so
        # the CLI tools in the container reach the node.
        assert _uid_of_pid1(runtime, name) == _exec(runtime, name, "id", "-u", "rabbitmq").strip()
        assert _exec(runtime, name, "cat", "/var/lib/rabbitmq/.erlang.cookie") == cookie
        assert "testlane" in _exec(runtime, name, "rabbitmqctl", "-q", "list_users")


# What an MQTT kind runs: the password file made inside the container (mosquitto_passwd -U hashes a
# `user:password` file in place), a listener on all interfaces, anonymous clients refused.
MOSQUITTO_COMMAND = (
    "sh",
    "-c",
    "umask 077 && printf 'testlane:%s\\n' \"$MQTT_PASSWORD\" > /mosquitto/data/passwd"
    " && mosquitto_passwd -U /mosquitto/data/passwd"
    " && printf 'listener 1883\\nallow_anonymous false\\npassword_file /mosquitto/data/passwd\\n"
    "persistence false\\n' > /mosquitto/data/mosquitto.conf"
    " && chown -R mosquitto:mosquitto /mosquitto/data"
    " && exec /usr/sbin/mosquitto -c /mosquitto/data/mosquitto.conf",
)


def test_mosquitto_image_with_a_password_file_made_inside_the_container() -> None:
    pytest.importorskip("paho.mqtt.client")
    import paho.mqtt.client as mqtt

    runtime = _runtime(MOSQUITTO_IMAGE)
    inspect = runtime.run("image", "inspect", MOSQUITTO_IMAGE, "--format", "{{json .Config}}", timeout=60)
    config = json.loads(inspect.stdout)
    assert config["Entrypoint"] == ["/docker-entrypoint.sh"]
    assert config["Cmd"] == ["/usr/sbin/mosquitto", "-c", "/mosquitto/config/mosquitto.conf"]

    password = new_password()
    with container(
        runtime,
        MOSQUITTO_IMAGE,
        *MOSQUITTO_COMMAND,
        options=("--tmpfs", "/mosquitto/data"),
        ports=(1883,),
        secrets={"MQTT_PASSWORD": password},
    ) as (name, ports):

        def connect(secret: str) -> mqtt.ReasonCode | int:
            connected = threading.Event()
            result: list[mqtt.ReasonCode | int] = []
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"check-{uuid.uuid4().hex[:6]}")
            client.username_pw_set("testlane", secret)
            client.on_connect = lambda _c, _u, _f, reason, _p: (result.append(reason), connected.set())
            client.connect("127.0.0.1", ports[1883], keepalive=10)
            client.loop_start()
            try:
                assert connected.wait(10), f"no CONNACK from {name}: {_logs(runtime, name)}"
                return result[0]
            finally:
                client.disconnect()
                client.loop_stop()

        reason = wait_until(lambda: connect(password), timeout=60, what=f"mosquitto in {name}", transient=(OSError,))
        assert not reason.is_failure if isinstance(reason, mqtt.ReasonCode) else reason == 0, reason
        refused = connect("not-the-password")
        assert refused.is_failure if isinstance(refused, mqtt.ReasonCode) else refused != 0
        # mosquitto dropped root for its own user (the official image's uid, 1883).
        assert _uid_of_pid1(runtime, name) == "1883"
        # What a kind may use instead of a password file: the dynamic security plugin where upstream has it.
        tools = (
            "command -v mosquitto_passwd && command -v mosquitto_ctrl && test -e /usr/lib/mosquitto_dynamic_security.so"
        )
        assert "mosquitto_ctrl" in _exec(runtime, name, "sh", "-c", tools)
