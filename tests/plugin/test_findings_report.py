"""What the reports say about what happened away from the test's own stack — on generated projects.

Exceptions in threads, ``__del__`` and asyncio tasks are described as themselves; a timeout in an
async test points at the ``await`` it hangs on; discipline findings and the requests a strict
``http_mock`` did not match are attached to the test that caused them, in the digest, the JSON
report and pytest's own output.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.helpers import plain_project, run_inner

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("plain_env")]

BACKGROUND = """
import asyncio, gc, threading

def compute():
    return 1 / 0

def test_thread_raises():
    t = threading.Thread(target=compute, name="worker-1")
    t.start()
    t.join()

class Leaky:
    def __del__(self):
        raise ValueError("lost in __del__")

def test_unraisable():
    Leaky()
    gc.collect()

async def fetch():
    raise KeyError("user 7")

def test_task_exception_never_retrieved():
    async def main():
        asyncio.get_running_loop().create_task(fetch())
        await asyncio.sleep(0.01)
    asyncio.run(main())
    gc.collect()
"""


def digest_and_json(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, str, dict[str, Any]]:
    result = run_inner(pytester, "--digest", "--report-json", "report.json", *args)
    doc = json.loads((pytester.path / "report.json").read_text())
    return result, result.stdout.str(), doc


def group(doc: dict[str, Any], nodeid: str) -> dict[str, Any]:
    return next(g for g in doc["groups"] if nodeid in g["nodeids"])


def test_background_exceptions_are_reported_as_themselves_at_their_line(pytester: pytest.Pytester) -> None:
    plain_project(pytester)
    pytester.makepyfile(test_bg=BACKGROUND)
    result, text, doc = digest_and_json(pytester)
    assert result.ret == 1
    assert "[1] FAILED — ZeroDivisionError: division by zero" in text
    assert "at test_bg.py:4 in compute: return 1 / 0" in text
    assert "Exception in thread worker-1" in text
    assert "[2] FAILED — ValueError: lost in __del__" in text
    # a `raise` statement says no more than the message: the digest leaves it out
    assert "    at test_bg.py:13 in __del__\n" in text
    assert "[3] FAILED — KeyError: 'user 7'" in text
    assert "    at test_bg.py:20 in fetch\n" in text
    assert "tracemalloc" not in text and "Warning" not in text  # pytest's wrappers and their boilerplate
    assert text.rstrip().splitlines()[-1].startswith("testlane: FAILED — 3 failed in ")
    thread = group(doc, "test_bg.py::test_thread_raises")
    assert (thread["exception"], thread["location"]) == ("ZeroDivisionError", "test_bg.py:4")
    task = group(doc, "test_bg.py::test_task_exception_never_retrieved")
    assert (task["exception"], task["location"]) == ("KeyError", "test_bg.py:20")
    # pytest's own output names the task's exception and its line too
    terminal = run_inner(pytester, "-q").stdout.str()
    assert "asyncio: Task exception was never retrieved: KeyError: 'user 7' at test_bg.py:20 in fetch" in terminal
    assert "'user 7'\n\nThe above exception" not in terminal  # no bare cause before it


HANGS = """
import asyncio
import pytest

async def wait_reply(queue):
    return await queue.get()

@pytest.mark.asyncio
async def test_async_hangs():
    queue = asyncio.Queue()
    await wait_reply(queue)

def test_sync_runs_a_loop_that_hangs():
    async def main():
        await asyncio.Event().wait()
    asyncio.run(main())
"""


def test_a_timeout_in_async_code_points_at_the_await_it_hangs_on(pytester: pytest.Pytester) -> None:
    plain_project(pytester, "[tool.testlane.discipline]\ntimeout_unit = 1")
    pytester.makepyfile(test_hangs=HANGS)
    result, text, doc = digest_and_json(pytester)
    assert result.ret == 1
    assert "[1] TIMEOUT — Timeout >1.0s" in text
    assert "at test_hangs.py:5 in wait_reply: return await queue.get()" in text
    assert "[2] TIMEOUT — Timeout >1.0s" in text
    assert "at test_hangs.py:14 in main: await asyncio.Event().wait()" in text
    assert group(doc, "test_hangs.py::test_async_hangs")["location"] == "test_hangs.py:5"
    assert text.rstrip().splitlines()[-1].startswith("testlane: FAILED — 2 failed in ")
    terminal = run_inner(pytester, "-q").stdout.str()
    assert "suspended at test_hangs.py:5 in wait_reply: return await queue.get()" in terminal


LEAKS = """
import os, subprocess, sys, threading

def compute():
    return 1 / 0

def test_spawns():
    test_spawns.keep = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(20)"])

def test_changes_the_environment():
    os.environ["LEFT_BEHIND"] = "1"

def test_thread_raises():
    t = threading.Thread(target=compute, name="worker-1")
    t.start()
    t.join()

def test_clean():
    pass
"""


def test_warn_findings_are_in_the_digest_and_json_with_their_test_and_the_run_passes(
    pytester: pytest.Pytester,
) -> None:
    plain_project(pytester, '[tool.testlane.discipline]\nbackground_errors = "warn"')
    pytester.makepyfile(test_leaks=LEAKS)
    result, text, doc = digest_and_json(pytester)
    assert result.ret == 0
    lines = text.rstrip().splitlines()
    assert lines[-1].startswith("testlane: PASSED — 4 passed")
    assert "warnings: 3 findings (they do not fail the run):" in lines
    assert any(line.startswith("  test_leaks.py::test_spawns left running: process ") for line in lines)
    environment = "  test_leaks.py::test_changes_the_environment changed environment variables (restored): LEFT_BEHIND"
    assert environment in lines
    assert (
        "  test_leaks.py::test_thread_raises exception in thread worker-1: ZeroDivisionError: division by zero "
        "at test_leaks.py:4 in compute" in lines
    )
    assert "test_clean" not in text
    tests = {t["nodeid"]: t for t in doc["tests"]}
    assert doc["outcome"] == "passed" and len(doc["findings"]) == 3
    (spawned,) = tests["test_leaks.py::test_spawns"]["findings"]
    assert spawned["kind"] == "leak" and spawned["location"] == "test_leaks.py:6"
    assert spawned["message"].startswith("left running: process ")
    assert tests["test_leaks.py::test_thread_raises"]["findings"][0]["kind"] == "thread"
    assert tests["test_leaks.py::test_clean"]["findings"] == []
    assert "warnings: 3 findings" in doc["digest"]


def test_fail_findings_fail_the_test_that_caused_them(pytester: pytest.Pytester) -> None:
    plain_project(pytester, '[tool.testlane.discipline]\nleaks = "fail"')
    pytester.makepyfile(test_leaks=LEAKS)
    result, text, doc = digest_and_json(pytester, "-k", "spawns or clean")
    assert result.ret == 1
    head = "[1] ERROR in teardown — Failed: test_leaks.py::test_spawns left running: process"
    assert head in text
    assert "warnings:" not in text
    assert text.rstrip().splitlines()[-1].startswith("testlane: FAILED — 1 error, 1 passed, 2 deselected in ")
    assert doc["outcome"] == "failed" and group(doc, "test_leaks.py::test_spawns")["phase"] == "teardown"


APP = """
import httpx
from fastapi import FastAPI

def make_app():
    app = FastAPI()

    @app.get("/rate")
    async def rate():
        async with httpx.AsyncClient() as client:
            upstream = await client.get("https://rates.example.com/v2/eur?day=1")
        return upstream.json()

    return app

def test_rate(live_server, http_mock):
    server = live_server(make_app())
    response = httpx.get(f"{server.url}/rate")
    assert response.status_code == 200, response.text

def test_rate_mocked(live_server, http_mock):
    http_mock.get("https://rates.example.com/v2/eur").respond(200, json={"usd": 1.1})
    server = live_server(make_app())
    assert httpx.get(f"{server.url}/rate").json() == {"usd": 1.1}

def test_raised_in_the_test(http_mock):
    httpx.get("https://rates.example.com/v3/usd")
"""

HINT = (
    "unmatched outbound request GET https://rates.example.com/v2/eur?day=1 — mock it: "
    "http_mock.get('https://rates.example.com/v2/eur').respond(200, json=...)"
)


def test_an_unmatched_request_behind_a_500_is_in_the_failing_test_s_report(pytester: pytest.Pytester) -> None:
    plain_project(pytester)
    pytester.makepyfile(test_app_it=APP)
    result, text, doc = digest_and_json(pytester, "--it")
    assert result.ret == 1
    assert "[1] FAILED — AssertionError: Internal Server Error" in text
    assert f"\n    {HINT}\n" in text
    # Once per failing test: the test's own error already says it. The server thread's log of the 500 may
    # land in the test's captured log or not (it is written after the response): not counted.
    said = re.sub(r"\n    captured log \(last lines\):\n(?:      .*\n)*", "\n", text)
    assert said.count("mock it:") == 2
    assert "http_mock.get('https://rates.example.com/v3/usd')" in text
    assert text.rstrip().splitlines()[-1].startswith("testlane: FAILED — 2 failed, 1 passed in ")
    assert group(doc, "test_app_it.py::test_rate")["failures"][0]["hints"] == [HINT]
    terminal = run_inner(pytester, "--it", "-q").stdout.str()
    assert "- testlane -" in terminal and HINT in terminal


LINELESS_TESTS = """
import sys, types

def _lineless(exc):
    # what CPython 3.11+ builds when an exception (a timeout's SIGALRM) interrupts an instruction that maps to
    # no source line (exception clean-up code): a traceback entry whose tb_lineno is None
    frame = sys._getframe(1)
    lasti = next(2 * i for i, (line, *_) in enumerate(frame.f_code.co_positions()) if line is None)
    return exc.with_traceback(types.TracebackType(None, frame, lasti, -1))

def test_interrupted_where_no_line_is():
    try:
        raise RuntimeError("interrupted")
    except RuntimeError as exc:
        raise _lineless(exc)

def test_after_it_runs():
    pass
"""


@pytest.mark.parametrize("workers", [0, 2], ids=["serial", "xdist"])
def test_a_traceback_entry_without_a_line_fails_its_test_and_the_run_goes_on(
    pytester: pytest.Pytester, workers: int
) -> None:
    """Seen in testlane's own suite: a timeout's exception had an entry with no line number and pytest's failure
    report raised (INTERNALERROR): the xdist worker stopped and the rest of the run was lost."""
    plain_project(pytester)
    pytester.makepyfile(test_lineless=LINELESS_TESTS)
    result = run_inner(pytester, "-q", *(("-n", str(workers)) if workers else ()))
    output = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in output, output
    result.assert_outcomes(failed=1, passed=1)
    assert "RuntimeError: interrupted" in output


# In conftest.py, where most fixtures live: pytest cuts a setup error's traceback at the test's own module, so
# frames before a fixture of the test module are dropped anyway; before one of a conftest.py they are not.
BROKEN_FIXTURES = """
import pytest

@pytest.fixture
def broken_setup():
    raise RuntimeError("setup went wrong")

@pytest.fixture(scope="module")
def broken_module_setup():
    raise RuntimeError("module setup went wrong")

@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("teardown went wrong")
"""

USES_BROKEN_FIXTURES = """
def test_setup(broken_setup):
    pass

def test_module_setup(broken_module_setup):
    pass

def test_teardown(broken_teardown):
    pass
"""


def test_a_fixture_error_s_traceback_shows_no_frame_of_testlane_s_hooks(pytester: pytest.Pytester) -> None:
    """Found timing the suite: every error of a conftest.py fixture showed testlane's hook wrappers (runtest.py,
    discipline.py) in pytest's own traceback: noise to the reader, and each a file pytest parses to show it
    (a fixture error's report took twice as long)."""
    plain_project(pytester)
    pytester.makeconftest(BROKEN_FIXTURES)
    pytester.makepyfile(test_fixtures=USES_BROKEN_FIXTURES)
    result = run_inner(pytester, "-q")
    out = result.stdout.str()
    assert result.ret == 1
    for what in ("setup went wrong", "module setup went wrong", "teardown went wrong"):
        assert f"RuntimeError: {what}" in out
    assert "3 errors" in out
    assert "testlane/pytest_plugin" not in out, out
