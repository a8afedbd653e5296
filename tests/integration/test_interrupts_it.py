"""Interruptions (issue 16): SIGINT to the whole process group — what Ctrl-C does, here without a terminal —
in each phase of a run. Each prints one line saying what was interrupted and that everything was cleaned up,
no traceback, and leaves no process, run directory or data behind.

Exit codes: `testlane run` exits 130 (128 + SIGINT); plain `pytest` exits 2, pytest's "interrupted".
Readiness is a marker: a file the set-up command or the test writes before it blocks, or the line
testlane prints when it starts initializing a cluster (a fresh cache makes that step take seconds).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from testlane.core.waiting import wait_until
from tests.helpers import TESTLANE, clean_env, leftovers, server_processes, wait_for_file, wait_gone

pytestmark = pytest.mark.timeout(240)

# The set-up command builds the template; with BLOCK_IN=template it writes the marker and blocks instead.
SETUP = """
import os, pathlib, time
if os.environ.get("BLOCK_IN") == "template":
    pathlib.Path(os.environ["MARKER"]).write_text("building")
    time.sleep(600)
"""

TEST = """
import os, pathlib, time

def test_blocks(pg_conn):
    if os.environ.get("BLOCK_IN") == "test":
        pathlib.Path(os.environ["MARKER"]).write_text("testing")
        time.sleep(600)
"""


@pytest.fixture
def interruptible(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    (project / "tests").mkdir(parents=True)
    (project / "pyproject.toml").write_text(
        '[tool.testlane]\nservices = ["postgres", "valkey"]\nsetup = ["python setup_db.py"]\n\n'
        '[tool.pytest.ini_options]\nasyncio_default_fixture_loop_scope = "function"\n'
    )
    # A name of its own in the file: a new template (a build) in every test, not last run's snapshot.
    (project / "setup_db.py").write_text(f"# {uuid.uuid4().hex}\n{SETUP}")
    (project / "tests" / "test_block_it.py").write_text(TEST)
    return project


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def start(
    procs: list[subprocess.Popen[str]], argv: list[str], project: Path, env: dict[str, str]
) -> subprocess.Popen[str]:
    """In a new session: its own process group, and no terminal (CI, an agent's shell)."""
    proc = subprocess.Popen(
        argv,
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    procs.append(proc)
    return proc


def interrupt_group(proc: subprocess.Popen[str], *, to_group: bool = True) -> list[str]:
    """SIGINT to the whole group (or to the process alone); the output's lines once it has exited."""
    if to_group:
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    return output.splitlines()


def environment(data_dir: Path, tmp_path: Path, block_in: str, **extra: str) -> dict[str, str]:
    return clean_env(
        {
            "TESTLANE_DATA_DIR": str(data_dir),
            "TESTLANE_REPORTS_FORMAT": "terminal",
            "BLOCK_IN": block_in,
            "MARKER": str(tmp_path / "marker"),
            **extra,
        }
    )


def ours(tmp_path: Path) -> list[psutil.Process]:
    """Processes still running with this test's paths: servers, the set-up command, pytest."""
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd", "environ"]):
        try:
            where = " ".join(proc.info.get("cmdline") or []) + " " + (proc.info.get("cwd") or "")
            marker = (proc.info.get("environ") or {}).get("MARKER", "")
        except psutil.Error:
            continue
        if str(tmp_path) in where or marker.startswith(str(tmp_path)):
            found.append(proc)
    return [p for p in found if p.pid != os.getpid()]


def assert_clean(data_dir: Path, tmp_path: Path) -> None:
    assert wait_gone(ours(tmp_path)) == []
    assert server_processes(data_dir) == [] and leftovers(data_dir) == []


def interrupted(phase: str) -> str:
    return (
        f"testlane: interrupted (SIGINT) while {phase}; cleaned up: the run's servers are stopped and its data "
        "and databases removed"
    )


def test_testlane_run_interrupted_while_the_tests_run(
    interruptible: Path, data_dir: Path, tmp_path: Path, started: list[subprocess.Popen[str]]
) -> None:
    # pytest gets the group's SIGINT and the copy testlane run forwards: one KeyboardInterrupt, no traceback.
    env = environment(data_dir, tmp_path, "test")
    proc = start(started, [TESTLANE, "run", "--", "-q", "-p", "no:cacheprovider"], interruptible, env)
    wait_for_file(tmp_path / "marker", timeout=180)
    lines = interrupt_group(proc)
    text = "\n".join(lines)
    assert proc.returncode == 130, text
    assert "Traceback" not in text and text.count("KeyboardInterrupt !!!") == 1
    assert lines[-1] == interrupted("pytest was running")
    assert len(lines) <= 9, text  # build, ready, pytest's 4-line interruption summary, ours
    assert_clean(data_dir, tmp_path)


STUBBORN = """
import os, pathlib, signal, time

def test_stubborn(pg_conn):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a test (or a library) that swallows both
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pathlib.Path(os.environ["MARKER"]).write_text("testing")
    time.sleep(600)
"""


@pytest.mark.timeout(90)
def test_testlane_run_asked_again_terminates_pytest_at_once(
    interruptible: Path, data_dir: Path, tmp_path: Path, started: list[subprocess.Popen[str]]
) -> None:
    # Before: the second signal, seconds after the first, waited out all of stop_grace as the first did.
    (interruptible / "tests" / "test_block_it.py").write_text(STUBBORN)
    env = environment(data_dir, tmp_path, "none")
    argv = [TESTLANE, "run", "--set", "stop_grace=60", "--", "-q", "-p", "no:cacheprovider"]
    proc = start(started, argv, interruptible, env)
    wait_for_file(tmp_path / "marker", timeout=180)
    proc.send_signal(signal.SIGINT)
    with pytest.raises(subprocess.TimeoutExpired):  # the first: pytest is given its grace period
        proc.wait(timeout=1.5)
    proc.send_signal(signal.SIGINT)  # past the 1 s within which a second delivery is the same one
    output, _ = proc.communicate(timeout=30)  # terminated at once; SIGKILL 5 s later (it ignores SIGTERM)
    lines = output.splitlines()
    assert proc.returncode == 130, output
    assert "testlane: asked again; terminating it" in lines, output
    assert "Traceback" not in output
    assert lines[-1] == interrupted("pytest was running"), output
    assert_clean(data_dir, tmp_path)


# A test that leaves a non-daemon thread behind: pytest reports, then Python waits for the thread at exit
# (tortoise-orm's suite does this with aiosqlite's connection threads; plain pytest hangs there too).
HANGS_AT_EXIT = """
import os, pathlib, threading

def test_leaves_a_thread(pg_conn):
    threading.Thread(target=threading.Event().wait, daemon=False).start()
    pathlib.Path(os.environ["MARKER"]).write_text("testing")
"""


@pytest.mark.timeout(60)  # bounds the wait for the notice (before the fix it never came)
def test_testlane_run_says_when_pytest_reported_but_does_not_exit(
    interruptible: Path, data_dir: Path, tmp_path: Path, started: list[subprocess.Popen[str]]
) -> None:
    # Before: no word while the servers kept running, and the interruption said "while pytest was running".
    (interruptible / "tests" / "test_block_it.py").write_text(HANGS_AT_EXIT)
    env = environment(data_dir, tmp_path, "none")
    proc = start(started, [TESTLANE, "run", "--", "-q", "-p", "no:cacheprovider"], interruptible, env)
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:  # the test's timeout bounds this loop
        seen.append(line.rstrip("\n"))
        if "has not exited" in line:
            break
    assert "pytest reported 5s ago but has not exited: something the tests started is still running" in seen[-1]
    lines = seen + interrupt_group(proc)
    text = "\n".join(lines)
    assert proc.returncode == 130, text
    assert "Traceback" not in text and "threading" not in text  # the wait for the thread ended quietly
    assert "1 passed" in text
    assert lines[-1] == interrupted("pytest had reported but not exited"), text
    assert_clean(data_dir, tmp_path)


@pytest.mark.parametrize("to_group", [True, False], ids=["to-the-group", "to-testlane-alone"])
def test_testlane_run_interrupted_while_the_template_is_built(
    interruptible: Path, data_dir: Path, tmp_path: Path, started: list[subprocess.Popen[str]], to_group: bool
) -> None:
    # Sent to testlane alone, the set-up command never sees the signal: testlane ends it (and its children).
    env = environment(data_dir, tmp_path, "template")
    proc = start(started, [TESTLANE, "run", "--", "-q", "-p", "no:cacheprovider"], interruptible, env)
    wait_for_file(tmp_path / "marker", timeout=180)
    lines = interrupt_group(proc, to_group=to_group)
    assert proc.returncode == 130, lines
    assert lines[-1] == interrupted("building the migrated template")
    assert len(lines) == 2 and lines[0].startswith("testlane: building the migrated template"), lines
    assert_clean(data_dir, tmp_path)


def test_testlane_run_interrupted_while_the_services_start(
    interruptible: Path, data_dir: Path, cache_dir: Path, tmp_path: Path, started: list[subprocess.Popen[str]]
) -> None:
    env = environment(data_dir, tmp_path, "", TESTLANE_CACHE_DIR=str(cache_dir))
    proc = start(started, [TESTLANE, "run", "--", "-q", "-p", "no:cacheprovider"], interruptible, env)
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:  # the readiness signal: the line that starts a cold cluster's initdb
        seen.append(line.rstrip("\n"))
        if "initializing a PostgreSQL" in line:
            break
    lines = seen + interrupt_group(proc)
    assert proc.returncode == 130, lines
    assert "Traceback" not in "\n".join(lines)
    assert lines[-1] == interrupted("starting the services"), lines
    assert len(lines) <= 4, lines  # the build and initdb announcements, ours
    assert_clean(data_dir, tmp_path)


@pytest.mark.parametrize(
    ("block_in", "phase"), [("test", "running the tests"), ("template", "building the migrated template")]
)
def test_plain_pytest_interrupted(
    interruptible: Path,
    data_dir: Path,
    tmp_path: Path,
    started: list[subprocess.Popen[str]],
    block_in: str,
    phase: str,
) -> None:
    env = environment(data_dir, tmp_path, block_in)
    argv = [sys.executable, "-m", "pytest", "--it", "-q", "-p", "no:cacheprovider"]
    proc = start(started, argv, interruptible, env)
    wait_for_file(tmp_path / "marker", timeout=180)
    lines = interrupt_group(proc)
    text = "\n".join(lines)
    assert proc.returncode == 2, text  # pytest's own code for an interrupted session
    assert "Traceback" not in text and text.count("KeyboardInterrupt !!!") == 1
    assert lines[-1] == interrupted(phase), text
    assert len(lines) <= 7, text
    assert_clean(data_dir, tmp_path)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_under_testlane_run_the_digest_states_the_code_the_process_exits_with(
    interruptible: Path, data_dir: Path, tmp_path: Path, started: list[subprocess.Popen[str]], signum: int
) -> None:
    # testlane run exits 128+N for signal N (the shell's convention); the digest's verdict and the JSON
    # document, written by its pytest, say that code, not pytest's 2.
    report = tmp_path / "report.json"
    env = environment(data_dir, tmp_path, "test", TESTLANE_REPORTS_FORMAT="digest")
    argv = [TESTLANE, "run", "--", "-p", "no:cacheprovider", "--report-json", str(report)]
    proc = start(started, argv, interruptible, env)
    wait_for_file(tmp_path / "marker", timeout=180)
    os.killpg(proc.pid, signum)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, output
    verdicts = [line for line in output.splitlines() if line.startswith("testlane: INTERRUPTED")]
    assert len(verdicts) == 1 and verdicts[0].endswith(f"(exit {128 + signum})"), output
    document = json.loads(report.read_text())
    assert document["exit_code"] == 128 + signum and document["pytest_exit_code"] == 2
    assert_clean(data_dir, tmp_path)


# After two SQL files; with BLOCK_IN=store its second execution blocks: the first is the template's build on the
# run's own server (after an edit), the second the snapshot's builder, once the tests are done.
SETUP_COUNTED = """
import os, pathlib, time
count = pathlib.Path(os.environ["MARKER"] + ".count")
done = int(count.read_text()) if count.exists() else 0
count.write_text(str(done + 1))
if os.environ.get("BLOCK_IN") == "store" and done == 1:
    pathlib.Path(os.environ["MARKER"]).write_text("storing")
    time.sleep(600)
"""


@pytest.mark.parametrize("runner", ["testlane-run", "pytest"])
def test_interrupted_while_the_snapshot_is_stored_after_the_tests(
    data_dir: Path, cache_dir: Path, tmp_path: Path, started: list[subprocess.Popen[str]], runner: str
) -> None:
    """Nothing half stored: the next run builds the template again and stores the snapshot."""
    project = tmp_path / "project"
    (project / "migrations").mkdir(parents=True)
    (project / "pyproject.toml").write_text(
        '[tool.testlane]\nservices = ["postgres"]\nsetup = ["python setup_db.py"]\n\n'
        '[tool.testlane.db]\nmigrations = "migrations"\n\n'
        '[tool.pytest.ini_options]\nasyncio_default_fixture_loop_scope = "function"\n'
    )
    for n in (1, 2):
        (project / "migrations" / f"{n}.sql").write_text(f"CREATE TABLE t{n} (id int);\n")
    (project / "setup_db.py").write_text(SETUP_COUNTED)
    (project / "tests").mkdir()
    (project / "tests" / "test_block_it.py").write_text(TEST)
    argv = {
        "testlane-run": [TESTLANE, "run", "--", "-q", "-p", "no:cacheprovider"],
        "pytest": [sys.executable, "-m", "pytest", "--it", "-q", "-p", "no:cacheprovider"],
    }[runner]
    env = environment(data_dir, tmp_path, "", TESTLANE_CACHE_DIR=str(cache_dir))
    snapshots = cache_dir / "snapshots"

    def stored() -> list[str]:
        return sorted(p.name for p in snapshots.iterdir() if p.is_dir())

    first = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True, timeout=180)
    assert first.returncode == 0, first.stdout + first.stderr
    assert len(stored()) == 1

    (project / "setup_db.py").write_text(SETUP_COUNTED + "# edited\n")  # the last step: replayed on the run's server
    (tmp_path / "marker.count").unlink()
    env["BLOCK_IN"] = "store"
    proc = start(started, argv, project, env)
    wait_for_file(tmp_path / "marker", timeout=180)
    lines = interrupt_group(proc)
    text = "\n".join(lines)
    assert "on this run's server" in text and "1 passed" in text, text
    assert proc.returncode == (130 if runner == "testlane-run" else 0), text  # plain pytest: its tests' verdict
    assert "Traceback" not in text
    assert lines[-1] == interrupted("building the migrated template"), text
    assert_clean(data_dir, tmp_path)
    assert len(stored()) == 1, "no snapshot stored, not even a staging directory"

    env["BLOCK_IN"] = ""
    again = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True, timeout=180)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "on this run's server" in again.stdout + again.stderr
    assert len(stored()) == 2
    assert_clean(data_dir, tmp_path)


# -- initdb's own backends ---------------------------------------------------------------------------------------

# What a backend maps for dynamic shared memory: /dev/shm/PostgreSQL.<n> (posix, the default initdb picks) or
# <data dir>/pg_dynshmem/mmap.<n> (mmap, which goes with the directory).
DSM_MAPPINGS = ("/dev/shm/PostgreSQL.", "/pg_dynshmem/mmap.")


def initdb_backends(cache_dir: Path) -> list[psutil.Process]:
    """initdb's bootstrap and single-user backends initializing a cluster under ``cache_dir``."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if proc.info.get("name") != "postgres" or not {"--boot", "--single"} & set(cmdline):
            continue
        with contextlib.suppress(psutil.Error):
            if proc.cwd().startswith(str(cache_dir)):  # a backend works in the data directory it initializes
                found.append(proc)
    return found


def initdb_dsm_mappings(cache_dir: Path) -> set[str]:
    """The dynamic shared memory that initdb's backends on ``cache_dir`` have mapped now."""
    found: set[str] = set()
    for proc in initdb_backends(cache_dir):
        with contextlib.suppress(psutil.Error):
            found |= {m.path for m in proc.memory_maps() if any(mark in m.path for mark in DSM_MAPPINGS)}
    return found


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "sigkill"])
def test_testlane_run_interrupted_during_initdb_leaves_no_shared_memory(
    interruptible: Path,
    data_dir: Path,
    cache_dir: Path,
    tmp_path: Path,
    started: list[subprocess.Popen[str]],
    signum: signal.Signals,
) -> None:
    # initdb's --boot and --single backends, killed (a SIGKILL to the group; subprocess.run SIGKILLs an interrupted
    # initdb), cannot remove POSIX segments: /dev/shm/PostgreSQL.<n> stays, the service user's, until a reboot.
    # Mapped in the data directory instead (mmap), they go with the staging directory.
    env = environment(data_dir, tmp_path, "", TESTLANE_CACHE_DIR=str(cache_dir))
    proc = start(started, [TESTLANE, "run", "--", "-q", "-p", "no:cacheprovider"], interruptible, env)
    mapped = wait_until(
        lambda: initdb_dsm_mappings(cache_dir) or None,
        timeout=120,
        what="initdb's backend and its shared memory",
        interval=0.002,
        max_interval=0.002,
    )
    os.killpg(proc.pid, signum)
    proc.communicate(timeout=120)
    assert wait_gone(ours(tmp_path) + initdb_backends(cache_dir)) == []
    assert [path for path in mapped if path.startswith(DSM_MAPPINGS[0]) and os.path.exists(path)] == []
    if signum == signal.SIGINT:  # testlane cleans up: the staging directory and the segments in it are gone
        assert [path for path in mapped if os.path.exists(path)] == []
        assert_clean(data_dir, tmp_path)
