"""Issue 18's "done when": a project using NATS, RabbitMQ, MQTT and S3 and the queue seams passes under
``testlane run`` (the embedded default where there is one, local binaries otherwise), its ``-n 2`` workers
never see each other's messages, and a killed run leaves no broker process or directory behind."""

from __future__ import annotations

import signal
import textwrap
from pathlib import Path

import pytest

from tests.helpers import (
    clean_env,
    leftovers,
    run_cli,
    server_processes,
    start_cli,
    wait_for_file,
    wait_gone,
)

pytest.importorskip("nats")
pytest.importorskip("pika")
pytest.importorskip("paho.mqtt")
pytest.importorskip("moto")
pytestmark = pytest.mark.timeout(400)

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_block(language: str, containing: str) -> str:
    """The README's ``language`` code block that contains ``containing``, exactly as written."""
    blocks = [b.split("```", 1)[0] for b in README.read_text().split(f"```{language}\n")[1:]]
    [block] = [b for b in blocks if containing in b]
    return block


# The README's brokers example is the project's configuration and one of its test files, as written.
PYPROJECT = readme_block("toml", 'services = ["nats", "rabbitmq", "mqtt", "s3"]')
README_TESTS = readme_block("python", "def test_upload_lands_in_the_tests_bucket")

# Every test uses the same names (queue `shared`, stream `SHARED`, topic `shared`, key `marker`): only the
# per-test isolation keeps eight of them, on two workers at once, from seeing each other's messages.
ISOLATION_TESTS = textwrap.dedent(
    """
    import asyncio
    import os
    import queue
    import threading

    import pika
    import pytest

    MARKERS = [f"m{n}" for n in range(8)]


    @pytest.mark.parametrize("marker", MARKERS)
    def test_rabbitmq_vhost(rabbitmq_vhost, marker):
        # the mapping names the test's vhost meanwhile (in Celery's scheme)
        assert os.environ["BROKER_URL"].split("://")[1] == rabbitmq_vhost.url.split("://")[1]
        with pika.BlockingConnection(pika.URLParameters(rabbitmq_vhost.url)) as conn:
            channel = conn.channel()
            assert channel.queue_declare("shared").method.message_count == 0
            channel.basic_publish("", "shared", marker.encode())
            seen = []
            while True:
                method, _, body = channel.basic_get("shared", auto_ack=True)
                if method is None:
                    break
                seen.append(body.decode())
        assert seen == [marker]


    @pytest.mark.parametrize("marker", MARKERS)
    def test_jetstream_account(jetstream, marker):
        async def main():
            client = await jetstream.connect()
            try:
                js = client.jetstream()
                await js.add_stream(name="SHARED", subjects=["shared.>"])  # the same name in every test
                heard = []

                async def hear(msg):
                    heard.append(msg.data.decode())

                sub = await client.subscribe(">", cb=hear)
                await js.publish("shared.new", marker.encode())
                info = await js.stream_info("SHARED")
                await client.flush()
                await sub.unsubscribe()
                return info.state.messages, heard
            finally:
                await client.close()

        stored, heard = asyncio.run(main())
        assert stored == 1
        assert [m for m in heard if m.startswith("m")] == [marker]


    @pytest.mark.parametrize("marker", MARKERS)
    def test_mqtt_namespace(mqtt_namespace, marker):
        got = queue.Queue()
        subscribed = threading.Event()
        client = mqtt_namespace.client()
        client.on_message = lambda c, u, msg: got.put(msg.payload.decode())
        client.on_subscribe = lambda *args: subscribed.set()
        client.loop_start()
        try:
            client.subscribe("#", qos=1)
            assert subscribed.wait(10)
            client.publish(mqtt_namespace.topic("shared"), marker, qos=1).wait_for_publish(10)
            assert got.get(timeout=10) == marker
            client.publish(mqtt_namespace.topic("done"), "end", qos=1).wait_for_publish(10)
            rest = []
            while (item := got.get(timeout=10)) != "end":
                rest.append(item)
            assert rest == []  # nothing of another test's between our two messages
        finally:
            client.loop_stop()
            client.disconnect()


    @pytest.mark.parametrize("marker", MARKERS)
    def test_s3_bucket(s3_bucket, marker):
        assert os.environ["UPLOADS_BUCKET"] == s3_bucket.name
        s3 = s3_bucket.client()
        assert s3.list_objects_v2(Bucket=s3_bucket.name).get("KeyCount") == 0
        s3.put_object(Bucket=s3_bucket.name, Key="marker", Body=marker.encode())
        assert s3.get_object(Bucket=s3_bucket.name, Key="marker")["Body"].read() == marker.encode()
    """
)

SEAM_TESTS = textwrap.dedent(
    """
    import asyncio

    from testlane.seams import assert_delivered_once
    from testlane.seams import jetstream as js_seams
    from testlane.seams import rabbitmq as rabbit_seams


    def test_rabbitmq_competing_consumers_get_each_job_once(rabbitmq_vhost):
        deliveries = rabbit_seams.assert_exactly_once(rabbitmq_vhost, messages=6)
        assert_delivered_once(deliveries, [f"job-{n}" for n in range(1, 7)])


    def test_rabbitmq_job_of_a_dead_consumer_is_redelivered_once(rabbitmq_vhost):
        rabbit_seams.assert_redelivered_after_death(rabbitmq_vhost, body="job-1")


    def test_jetstream_competing_consumers_and_a_death(jetstream):
        async def main():
            queue = await js_seams.work_queue(jetstream.connect, ack_wait=0.5)
            try:
                await js_seams.assert_exactly_once(queue, [f"job-{n}" for n in range(6)])
                await js_seams.assert_redelivered_after_death(queue, "job-late")
            finally:
                await queue.close()

        asyncio.run(main())
    """
)


def _project(root: Path) -> None:
    (root / "pyproject.toml").write_text(
        f'[project]\nname = "brokers"\nversion = "0"\n\n{PYPROJECT}\n'
        '[tool.pytest.ini_options]\nasyncio_default_fixture_loop_scope = "function"\n'
    )
    tests = root / "tests"
    tests.mkdir()
    (tests / "test_isolation_it.py").write_text(ISOLATION_TESTS)
    (tests / "test_seams_it.py").write_text(SEAM_TESTS)
    (tests / "test_jobs_it.py").write_text(README_TESTS)


def test_all_four_services_and_the_queue_seams_pass_on_two_workers(tmp_path: Path, data_dir: Path) -> None:
    _project(tmp_path)
    env = clean_env({"TESTLANE_DATA_DIR": str(data_dir)})
    result = run_cli(["run", "--", "-n", "2", "-p", "no:cacheprovider", "-q"], cwd=tmp_path, env=env, timeout=360)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "38 passed" in out, out
    assert server_processes(data_dir) == []
    assert leftovers(data_dir) == []


HOLD_TEST = textwrap.dedent(
    """
    import os, pathlib
    from testlane.core.waiting import wait_until

    def test_hold(nats, rabbitmq, mqtt, s3):
        pathlib.Path(os.environ["HOLD_READY"]).write_text("ready")
        wait_until(lambda: False, timeout=600, what="the run to be killed")
    """
)


def test_a_killed_run_leaves_no_broker_process_or_directory(tmp_path: Path, data_dir: Path) -> None:
    _project(tmp_path)
    (tmp_path / "tests" / "test_hold_it.py").write_text(HOLD_TEST)
    ready = tmp_path / "ready"
    env = clean_env({"TESTLANE_DATA_DIR": str(data_dir), "HOLD_READY": str(ready)})
    proc = start_cli(["run", "--", "-q", "-p", "no:cacheprovider", "tests/test_hold_it.py"], cwd=tmp_path, env=env)
    try:
        wait_for_file(ready, timeout=180)
        servers = server_processes(data_dir)
        names = " ".join(" ".join(p.cmdline()) for p in servers)
        for binary in ("nats-server", "beam.smp", "epmd", "mosquitto", "s3_moto"):
            assert binary in names, names
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        assert wait_gone(servers, timeout=30) == []
    finally:
        if proc.poll() is None:
            proc.kill()
    assert run_cli(["reap"], cwd=tmp_path, env=env).returncode == 0
    assert server_processes(data_dir) == []
    assert leftovers(data_dir) == []
