"""Adding a service kind is one module plus its registration (issue 17): a kind defined only in the tests
(:mod:`tests.integration.httpd_kind`, Python's HTTP server) gets what the built-in kinds get through the
registry of kinds. Real processes, no mocks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from testlane.cli import doctor
from testlane.cli.main import cli
from testlane.core.envmap import validate_mapping
from testlane.core.runtime import RunContext
from testlane.core.waiting import wait_until
from testlane.services import kinds
from testlane.services.env_mapping import render_mapping
from testlane.services.registry import Registry
from testlane.services.stack import ServiceStack, reap
from tests.integration.httpd_kind import NAME, HttpServer, register_httpd

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def httpd_kind() -> Iterator[None]:
    register_httpd()
    try:
        yield
    finally:
        kinds.unregister(NAME)


def _context(settings) -> RunContext:  # type: ignore[no-untyped-def]
    ctx = RunContext.from_settings(settings, run_id=None, owner=os.getpid())
    ctx.ensure_dirs()
    return ctx


def test_a_kind_unknown_until_registered(settings_for) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(Exception, match="unknown service"):
        ServiceStack.validate([NAME])
    register_httpd()
    try:
        assert ServiceStack.validate(["webserver"]) == [NAME], "its alias too"
    finally:
        kinds.unregister(NAME)
    with pytest.raises(Exception, match="unknown service"):
        ServiceStack.validate([NAME])


def test_the_stack_starts_records_describes_and_stops_a_registered_kind(httpd_kind, settings_for) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for()
    context = _context(settings)
    with ServiceStack(settings, context) as stack:
        servers = stack.start([NAME])
        server = servers[NAME]
        assert isinstance(server, HttpServer)
        assert server.instance.backend == "local"
        with urllib.request.urlopen(server.url, timeout=5) as answer:
            assert answer.status == 200
        # recorded in the registry, like every server of a run
        (recorded,) = [i for i in Registry(context).instances(context.run_id) if i.engine == NAME]
        assert recorded.pid == server.pid and psutil.pid_exists(server.pid or 0)
        # its variables, and its [tool.testlane.env] parts
        env = stack.env()
        assert env["TESTLANE_HTTPD_URL"] == server.url and env["TESTLANE_HTTPD_PORT"] == str(server.port)
        assert server.url.startswith(f"http://127.0.0.1:{server.port}")
        mapping = {"APP_URL": "{httpd.url}", "APP_ADDR": "{httpd.host}:{httpd.port}"}
        validate_mapping(mapping)
        rendered = render_mapping(mapping, stack.servers)
        assert rendered == {"APP_URL": server.url, "APP_ADDR": f"127.0.0.1:{server.port}"}
        # testlane services (in this process: the kind is registered here)
        status = CliRunner().invoke(cli, ["services", "status"], env={"TESTLANE_DATA_DIR": settings.data_dir})
        assert status.exit_code == 0, status.output
        assert NAME in status.output
        pid = server.pid
    assert (pid is not None and not psutil.pid_exists(pid)) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not [i for i in Registry(context).instances(context.run_id) if i.engine == NAME]


def test_doctor_lists_a_registered_kind(httpd_kind, settings_for) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for()
    topics = {c.topic: c for c in doctor._kinds(settings) + doctor._backends(settings)}
    assert topics[f"{NAME} (local)"].status == "ok"
    assert topics[f"{NAME} backend"].detail.startswith("local")


def test_a_registered_kind_is_reaped_when_its_owner_dies(httpd_kind, settings_for, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for()
    child = textwrap.dedent(
        f"""
        import os, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from testlane.core.config import load_settings
        from testlane.core.runtime import RunContext
        from testlane.services.stack import ServiceStack
        from tests.integration.httpd_kind import register_httpd
        register_httpd()
        settings = load_settings(environ={{}}, overrides={{"data_dir": {settings.data_dir!r}}})
        stack = ServiceStack(settings, RunContext.from_settings(settings, owner=os.getpid()), die_with_parent=False)
        server = stack.start(["httpd"])["httpd"]
        print(server.pid, flush=True)
        time.sleep(600)
        """
    )
    owner = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert owner.stdout is not None
        pid = int(owner.stdout.readline())
        assert psutil.pid_exists(pid)
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    context = _context(settings)
    report = reap(context)
    assert [i.engine for i in report.stopped] == [NAME]
    wait_until(lambda: not psutil.pid_exists(pid), timeout=10, what="the orphaned HTTP server to be stopped")
