"""Shared fixtures for testlane's own suite."""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from testlane.cli.run import FORMAT_ENV
from testlane.core.config import ReportSettings, Settings, load_settings
from testlane.core.runtime import default_data_root
from testlane.reports import RERUN_ENV
from tests.helpers import OUTER_RUN_ENV, warm_bytecode

pytest_plugins = ["pytester"]

# Projects used as test data (run in subprocesses by the tests), not part of this suite.
collect_ignore_glob = ["fixtures/*"]

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # once: in xdist's controller (before its workers start), or the run
        with tempfile.TemporaryDirectory(dir=default_data_root().parent, prefix="testlane-test-bytecode-") as tmp:
            warm_bytecode(Path(tmp))


def _private_data_dir() -> Iterator[Path]:
    path = default_data_root().parent / f"testlane-test-{uuid.uuid4().hex[:8]}"
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A private data root (on tmpfs) so a test's reaping never sees other runs."""
    yield from _private_data_dir()


@pytest.fixture(scope="module")
def module_data_dir() -> Iterator[Path]:
    """``data_dir`` for a module's shared services (a module-scoped fixture's)."""
    yield from _private_data_dir()


def _reachable_dir(kind: str) -> Iterator[Path]:
    """A new directory on tmpfs that the service user can reach (as root: 0755), removed afterwards."""
    path = default_data_root().parent / f"testlane-test-{kind}-{uuid.uuid4().hex[:8]}"
    path.mkdir(mode=0o755)
    path.chmod(0o755)  # past the umask
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


@pytest.fixture
def cache_dir() -> Iterator[Path]:
    """A private cache on tmpfs (reachable by the service user as root), so a cold start really builds."""
    yield from _reachable_dir("cache")


@pytest.fixture
def bin_dir() -> Iterator[Path]:
    """A directory the service user can reach (as root), for fake server binaries."""
    yield from _reachable_dir("bin")


@pytest.fixture
def plain_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inner runs (pytester's, in this process's environment) are plain runs: no outer run's variables,
    the integration lane off."""
    for key in OUTER_RUN_ENV:
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def inner_env(plain_env: None, monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> Path:
    """Inner runs are runs of their own: integration lane on, a private data dir (returned)."""
    monkeypatch.setenv("TESTLANE_IT", "1")
    monkeypatch.setenv("TESTLANE_DATA_DIR", str(data_dir))
    return data_dir


@pytest.fixture
def hostile_user() -> Iterator[str]:
    """A real, unprivileged second local user (``useradd``), removed afterwards. Needs root."""
    name = f"tl_hostile_{secrets.token_hex(3)}"
    subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", name], check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)


def empty_project(path: Path) -> Path:
    """``path`` as an empty project: a pyproject.toml (and nothing else)."""
    (path / "pyproject.toml").write_text(
        '[project]\nname = "demo"\nversion = "0"\n\n'
        '[tool.pytest.ini_options]\nasyncio_default_fixture_loop_scope = "function"\n'
    )
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """An empty project directory with a pyproject.toml."""
    return empty_project(tmp_path)


@pytest.fixture
def settings_for(data_dir: Path) -> object:
    """Build settings for a private data dir: ``settings_for(**overrides)``."""

    def build(**overrides: object) -> Settings:
        values = {"data_dir": str(data_dir), **{k.replace("__", "."): v for k, v in overrides.items()}}
        return load_settings(start=data_dir.parent, environ={}, overrides=values)

    return build


# What makes `testlane run` print a digest instead of pytest's output (an agent, CI, an outer run):
# the runs these tests start must print what the tests expect, whoever runs the suite.
AGENT_ENV = (*ReportSettings().agent_variables, FORMAT_ENV, RERUN_ENV)


@pytest.fixture(autouse=True)
def _no_agent_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in AGENT_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port something else listens on (127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]
