"""The NATS fixtures through the pytest plugin, on generated projects run in subprocesses: the session
server, a JetStream account per test with the project's env mapping pointed at it, and two xdist workers
whose tests never see each other's messages."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("nats")

from tests.helpers import inner_pyproject, run_inner, server_processes

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("inner_env")]

ENV = """
[tool.testlane.env]
APP_NATS_URL = "{nats.url}"
APP_SUBJECTS = "{nats.subject_prefix}"
APP_STREAMS = "{nats.stream_prefix}"
APP_NATS_PORT = "{nats.port}"
"""

TESTS = """
import asyncio, os
import pytest

def test_session_server_and_env(nats):
    assert os.environ["APP_NATS_URL"] == nats.url
    assert os.environ["APP_NATS_PORT"] == str(nats.port)
    assert os.environ["APP_SUBJECTS"] == ""

def test_jetstream_is_its_own_account(jetstream, nats):
    assert jetstream.account.startswith("T")
    assert jetstream.subject_prefix == ""
    assert os.environ["APP_NATS_URL"] == jetstream.url != nats.url

    async def main():
        mine = await jetstream.connect()
        app = await nats.connect()
        try:
            heard = []
            async def on_message(msg):
                if not msg.subject.startswith(("$JS.", "_INBOX.")):  # its own JetStream calls
                    heard.append(msg.subject)
            await app.subscribe(">", cb=on_message)
            await app.flush()
            js = mine.jetstream()
            await js.add_stream(name="ORDERS", subjects=["orders.>"])
            await js.publish("orders.1", b"one")
            await mine.publish("events.x", b"x")
            await mine.flush()
            # the app's account has no stream ORDERS, and its `>` subscriber heard nothing
            info = await app.jetstream().account_info()
            assert info.streams == 0
            await app.flush()
            assert heard == []
        finally:
            await mine.close()
            await app.close()
    asyncio.run(main())

def test_env_restored_after(nats):
    assert os.environ["APP_NATS_URL"] == nats.url
"""


def test_fixtures_and_env_mapping(pytester: pytest.Pytester, data_dir: Path) -> None:
    pytester.makefile(".toml", pyproject=inner_pyproject(services='["nats"]', testlane=ENV))
    pytester.makepyfile(test_js_it=TESTS)
    result = run_inner(pytester, "--it", "-p", "no:randomly", "-q")
    result.assert_outcomes(passed=3)
    assert server_processes(data_dir) == []


def test_jetstream_refuses_the_unit_lane(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TESTLANE_IT")
    pytester.makefile(".toml", pyproject=inner_pyproject(services='["nats"]'))
    pytester.makepyfile(test_unit="def test_x(jetstream):\n    pass\n")
    result = run_inner(pytester, "-q")
    assert result.ret == 1
    text = " ".join(result.stdout.str().split())
    assert "test_unit.py::test_x is in the unit lane but uses testlane's service fixture 'jetstream'" in text


XDIST = """
import asyncio, os, time
import pytest

@pytest.mark.parametrize("n", range(6))
def test_worker_hears_only_itself(jetstream, n, worker_id):
    async def main():
        client = await jetstream.connect()
        try:
            heard = []
            async def on_message(msg):
                if msg.subject.startswith("jobs."):
                    heard.append(msg.data.decode())
            await client.subscribe(">", cb=on_message)
            js = client.jetstream()
            await js.add_stream(name="JOBS", subjects=["jobs.>"])
            sub = await js.pull_subscribe("jobs.>", durable="worker")
            mine = [f"{worker_id}-{n}-{i}" for i in range(5)]
            for body in mine:
                await js.publish("jobs.new", body.encode())
            got = []
            while len(got) < len(mine):
                for msg in await sub.fetch(5, timeout=5):
                    got.append(msg.data.decode())
                    await msg.ack()
            await client.flush()
            await asyncio.sleep(0.05)  # let stray messages from elsewhere arrive, if any could
            assert sorted(got) == sorted(mine)
            assert set(heard) <= set(mine), heard
        finally:
            await client.close()
    asyncio.run(main())
"""


def test_two_workers_never_see_each_others_messages(pytester: pytest.Pytester, data_dir: Path) -> None:
    pytest.importorskip("xdist")
    pytester.makefile(
        ".toml", pyproject=inner_pyproject(services='["nats"]', testlane="[tool.testlane.nats]\naccounts = 2\n")
    )
    pytester.makepyfile(test_xdist_it=XDIST)
    result = run_inner(pytester, "--it", "-n", "2", "-q")
    result.assert_outcomes(passed=6)
    assert server_processes(data_dir) == []


RUN_SUITE = """
import asyncio, os
import nats

def test_the_run_exports_nats(jetstream):
    url = os.environ["TESTLANE_NATS_URL"]
    assert url.startswith("nats://app:") and os.environ["TESTLANE_NATS_PORT"] in url
    assert os.environ["APP_NATS_URL"] == jetstream.url != url

    async def main():
        client = await nats.connect(os.environ["APP_NATS_URL"], allow_reconnect=False)
        try:
            await client.jetstream().add_stream(name="ORDERS", subjects=["orders.>"])
        finally:
            await client.close()
    asyncio.run(main())
"""


def test_testlane_run_starts_nats_and_leaves_nothing(pytester: pytest.Pytester, data_dir: Path) -> None:
    from tests.helpers import clean_env, run_cli

    pytester.makefile(".toml", pyproject=inner_pyproject(services='["nats"]', testlane=ENV))
    pytester.makepyfile(test_run_it=RUN_SUITE)
    result = run_cli(["run", "--", "-q"], cwd=pytester.path, env=clean_env({"TESTLANE_DATA_DIR": str(data_dir)}))
    assert result.returncode == 0, result.stdout + result.stderr
    assert server_processes(data_dir) == []
    assert [p for p in data_dir.iterdir() if p.is_dir() and len(p.name) == 8] == []
