"""Runtime discipline: timeouts, background errors, leaks, environment — on generated projects."""

from __future__ import annotations

import pytest

from tests.helpers import plain_project, run_inner

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("plain_env")]


def test_a_hanging_test_times_out_with_every_thread_s_stack_and_the_run_continues(pytester: pytest.Pytester) -> None:
    plain_project(pytester, "[tool.testlane.discipline]\ntimeout_unit = 1")
    pytester.makepyfile(
        test_hang="""
        import threading, time

        def test_hangs():
            threading.Thread(target=time.sleep, args=(30,), name="helper-thread", daemon=True).start()
            time.sleep(30)

        def test_after():
            pass
        """
    )
    result = run_inner(pytester)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*Timeout (>1.0s)*", "*Stack of helper-thread*"])


def test_a_timeout_that_falls_in_the_reporting_of_a_phase_fails_the_test_not_the_run(
    pytester: pytest.Pytester,
) -> None:
    # Seen in CI under load: the alarm came while pytest-xdist sent the call's report, and pytest.fail() raised
    # there was an INTERNALERROR that ended the whole run. A reporting hook slower than the timeout stands in.
    plain_project(pytester, "[tool.testlane.discipline]\ntimeout_unit = 1")
    pytester.makeconftest(
        """
        import time
        import pytest

        @pytest.hookimpl(tryfirst=True)
        def pytest_runtest_logreport(report):
            if report.when == "call" and report.nodeid.endswith(("test_slow_report", "test_slow_teardown")):
                time.sleep(1.5)  # the test's 1 s runs out here, between its call and its teardown

        @pytest.fixture
        def slow_down():
            yield
            time.sleep(5)
        """
    )
    pytester.makepyfile(
        """
        def test_slow_report():
            pass

        def test_slow_teardown(slow_down):
            pass

        def test_after():
            pass
        """
    )
    result = run_inner(pytester)
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    # Raised again 50 ms later, in the next phase still running: test_slow_report's teardown had ended (its own
    # code never ran out of time: it passed), test_slow_teardown's had not (it fails there); the run went on.
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_slow_teardown*", "*Timeout (>1.0s) from pytest-timeout*"])


def test_an_explicit_timeout_marker_wins(pytester: pytest.Pytester) -> None:
    plain_project(pytester, "[tool.testlane.discipline]\ntimeout_unit = 1")
    pytester.makepyfile(
        test_slow="import time, pytest\n\n@pytest.mark.timeout(10)\ndef test_slow():\n    time.sleep(1.5)\n"
    )
    run_inner(pytester).assert_outcomes(passed=1)


def test_the_unit_lane_s_timeout_is_pytest_timeout_s_default_and_the_integration_lane_keeps_its_own(
    pytester: pytest.Pytester,
) -> None:
    """The unit lane's timeout is given to pytest-timeout as its default (its header says it), not as a marker on
    every test; an integration test still gets its lane's (longer) one, and a user's marker still wins."""
    plain_project(pytester, "[tool.testlane.discipline]\ntimeout_unit = 1\ntimeout_it = 5")
    pytester.makepyfile(
        test_lanes="""
        import time, pytest

        def test_unit_hangs():
            time.sleep(3)

        @pytest.mark.integration
        def test_integration_is_slower():
            time.sleep(1.5)

        @pytest.mark.timeout(0)
        def test_marker_turns_it_off():
            time.sleep(1.5)
        """
    )
    result = run_inner(pytester, "--it")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["timeout: 1.0s", "timeout method: signal", "*test_unit_hangs*Timeout (>1.0s)*"])


def test_a_timeout_of_testlane_s_names_the_setting_that_changes_it(pytester: pytest.Pytester) -> None:
    """A test stopped by its lane's timeout says which setting that is and how to change it (pytest's header
    alone said ``timeout: 1.0s``); a timeout of the project's own (a marker) is left as pytest-timeout says it."""
    plain_project(pytester, "[tool.testlane.discipline]\ntimeout_unit = 1\ntimeout_it = 2")
    pytester.makepyfile(
        test_lanes="""
        import time, pytest

        def test_unit_hangs():
            time.sleep(5)

        @pytest.mark.integration
        def test_integration_hangs():
            time.sleep(5)

        @pytest.mark.timeout(1)
        def test_own_marker_hangs():
            time.sleep(5)
        """
    )
    result = run_inner(pytester, "--it")
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(
        [
            "*_ test_unit_hangs _*",
            "E * Failed: Timeout (>1.0s) from pytest-timeout. It is testlane's unit-lane timeout, "
            "discipline.timeout_unit: change it in pyproject.toml ([[]tool.testlane.discipline[]] timeout_unit = "
            "<seconds>, 0 for none), for one run (`testlane run --set discipline.timeout_unit=<seconds>`, "
            "`pytest --testlane-set discipline.timeout_unit=<seconds>`), or for one test "
            "(@pytest.mark.timeout(<seconds>)).",
            "*_ test_integration_hangs _*",
            "E * Failed: Timeout (>2.0s) from pytest-timeout. It is testlane's integration-lane timeout, "
            "discipline.timeout_it: change it in pyproject.toml ([[]tool.testlane.discipline[]] timeout_it = *",
            "*_ test_own_marker_hangs _*",
            "E * Failed: Timeout (>1.0s) from pytest-timeout.",
        ]
    )


def test_each_test_s_timeout_counts_from_its_own_start_with_one_watchdog_for_the_session(
    pytester: pytest.Pytester,
) -> None:
    """testlane's timeouts come from one watchdog thread, not a timer per test: a test with a short timeout after
    one with a long timeout still stops at its own; a test that left the alarm signal's handler replaced does not
    stop the next test's timeout; a single-threaded test's timeout shows no thread stacks (the watchdog's is not
    one of them); the watchdog is no thread the test left running."""
    plain_project(pytester, '[tool.testlane.discipline]\ntimeout_unit = 1\ntimeout_it = 30\nleaks = "fail"')
    pytester.makepyfile(
        test_w="""
        import signal, time, pytest

        @pytest.mark.integration
        def test_long_timeout_passes():
            pass

        def test_short_timeout_hangs():
            time.sleep(20)

        def test_replaces_the_alarm_handler():
            signal.signal(signal.SIGALRM, signal.SIG_IGN)

        def test_hangs_after_it():
            time.sleep(20)

        def test_after():
            pass
        """
    )
    result = run_inner(pytester, "--it")
    result.assert_outcomes(passed=3, failed=2)
    result.stdout.fnmatch_lines(
        ["*_ test_short_timeout_hangs _*", "E * Failed: Timeout (>1.0s)*", "*_ test_hangs_after_it _*", "E * Timeout*"]
    )
    result.stdout.no_fnmatch_line("*Stack of*")
    assert result.duration < 15, result.duration


def test_the_watchdog_is_no_thread_the_project_s_tests_count(pytester: pytest.Pytester) -> None:
    """The timeouts' watchdog runs from the first test on, but is not a ``threading.Thread``: a project's own test
    that counts the threads alive (its own leak check) sees only its own, as without testlane."""
    plain_project(pytester, "[tool.testlane.discipline]\ntimeout_unit = 30")
    pytester.makepyfile(
        test_t="""
        import threading

        def test_first():
            pass

        def test_counts_the_threads():
            assert [t.name for t in threading.enumerate()] == ["MainThread"]
            assert threading.active_count() == 1
        """
    )
    run_inner(pytester).assert_outcomes(passed=2)


def test_a_timeout_of_the_user_s_own_keeps_the_markers(pytester: pytest.Pytester) -> None:
    """A ``--timeout-method`` of the user's own: testlane sets no default; each test gets its lane's timeout as
    before (a marker, with the signal method: the run carries on)."""
    plain_project(pytester, "[tool.testlane.discipline]\ntimeout_unit = 1")
    pytester.makepyfile(test_m="import time\n\ndef test_hangs():\n    time.sleep(3)\n\ndef test_after():\n    pass\n")
    result = run_inner(pytester, "--timeout-method=thread")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*Timeout (>1.0s)*"])
    result.stdout.no_fnmatch_line("timeout: 1.0s")


BACKGROUND = """
import asyncio, gc, threading
import pytest

def test_thread_raises():
    t = threading.Thread(target=lambda: 1 / 0, name="boom")
    t.start()
    t.join()

def test_innocent_after_thread():
    pass

class Broken:
    def __del__(self):
        raise RuntimeError("in __del__")

def test_unraisable():
    Broken()
    gc.collect()

def test_innocent_after_unraisable():
    pass

def test_task_exception_never_retrieved():
    async def fails():
        raise ValueError("lost")

    async def main():
        task = asyncio.get_running_loop().create_task(fails())
        await asyncio.sleep(0.01)
        del task

    asyncio.run(main())

def test_innocent_after_task():
    pass
"""


def test_background_errors_fail_the_test_that_caused_them(pytester: pytest.Pytester) -> None:
    plain_project(pytester)
    pytester.makepyfile(test_bg=BACKGROUND)
    result = run_inner(pytester, "-rf")
    result.assert_outcomes(passed=3, failed=3)
    result.stdout.fnmatch_lines(
        [
            "FAILED test_bg.py::test_thread_raises*",
            "FAILED test_bg.py::test_unraisable*",
            "FAILED test_bg.py::test_task_exception_never_retrieved*",
        ]
    )
    assert "ValueError('lost')" in result.stdout.str()


def test_background_errors_can_be_warnings(pytester: pytest.Pytester) -> None:
    plain_project(pytester, '[tool.testlane.discipline]\nbackground_errors = "warn"')
    pytester.makepyfile(test_bg=BACKGROUND)
    result = run_inner(pytester)
    result.assert_outcomes(passed=6, warnings=2)  # pytest's own two; the asyncio one is testlane's finding
    findings = result.stdout.str().split("testlane findings")[1]
    assert "test_bg.py::test_task_exception_never_retrieved asyncio: Task exception was never retrieved" in findings


LEAKS = """
import socket, subprocess, sys, threading, time

def test_leaks_a_thread():
    threading.Thread(target=time.sleep, args=(30,), name="forgotten", daemon=True).start()

def test_leaks_a_server_socket():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    test_leaks_a_server_socket.keep = server

def test_leaks_a_process():
    test_leaks_a_process.keep = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])

def test_changes_the_environment():
    import os
    os.environ["LEFT_BEHIND"] = "1"

def test_environment_was_restored():
    import os
    assert "LEFT_BEHIND" not in os.environ

def test_clean():
    t = threading.Thread(target=lambda: None)
    t.start()
    t.join()
"""


def test_leaks_and_environment_changes_are_named_with_the_test(pytester: pytest.Pytester) -> None:
    plain_project(pytester)
    pytester.makepyfile(test_leaks=LEAKS)
    result = run_inner(pytester)
    result.assert_outcomes(passed=6)  # findings, not Python warnings
    out = result.stdout.str().split("testlane findings")[1]
    assert "test_leaks.py::test_leaks_a_thread left running: thread 'forgotten' (daemon), target=sleep" in out
    assert "test_leaks.py::test_leaks_a_server_socket left running: listening socket 127.0.0.1:" in out
    assert "test_leaks.py::test_leaks_a_process left running: process " in out
    assert "test_leaks.py::test_changes_the_environment changed environment variables (restored): LEFT_BEHIND" in out
    assert "test_clean" not in out
    assert "testlane: 4 findings; they do not fail the run" in out


SWAPS = """
import os, socket, threading

release = threading.Event()
kept = {}

def test_leaves_a_thread():
    kept["first"] = threading.Thread(target=release.wait, name="first", daemon=True)
    kept["first"].start()

def test_ends_that_thread_and_leaves_another():
    # as many threads as before the test: one ended, one started
    release.set()
    kept["first"].join()
    threading.Thread(target=threading.Event().wait, name="second", daemon=True).start()

def test_opens_a_file():
    kept["file"] = open(os.devnull)

def test_closes_that_file_and_leaves_a_server_socket_in_its_place():
    # as many descriptors as before the test, likely the same number reused
    kept.pop("file").close()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    kept["server"] = server
"""


def test_a_leak_is_reported_when_the_counts_did_not_change(pytester: pytest.Pytester) -> None:
    """A thread that ended and another that started, a file closed and a listening socket opened: the counts
    are the same as before the test, the leak is still the test's."""
    plain_project(pytester)
    pytester.makepyfile(test_swaps=SWAPS)
    result = run_inner(pytester)
    result.assert_outcomes(passed=4)
    out = result.stdout.str().split("testlane findings")[1]
    assert "test_swaps.py::test_leaves_a_thread left running: thread 'first'" in out
    assert "test_swaps.py::test_ends_that_thread_and_leaves_another left running: thread 'second'" in out
    assert "test_closes_that_file_and_leaves_a_server_socket_in_its_place left running: listening socket" in out
    assert "test_opens_a_file left" not in out


def test_leaks_can_fail_the_test(pytester: pytest.Pytester) -> None:
    plain_project(pytester, '[tool.testlane.discipline]\nleaks = "fail"\nenv_changes = "fail"')
    pytester.makepyfile(test_leaks=LEAKS)
    result = run_inner(pytester)
    result.assert_outcomes(passed=6, errors=4)


def test_a_session_scoped_fixture_s_thread_is_not_a_leak(pytester: pytest.Pytester) -> None:
    plain_project(pytester)
    pytester.makeconftest(
        """
        import threading, time, pytest

        @pytest.fixture(scope="session")
        def background():
            t = threading.Thread(target=time.sleep, args=(30,), name="session-worker", daemon=True)
            t.start()
            return t
        """
    )
    pytester.makepyfile(test_s="def test_a(background):\n    pass\n\ndef test_b(background):\n    pass\n")
    result = run_inner(pytester)
    result.assert_outcomes(passed=2)
    assert "left running" not in result.stdout.str()


WIDE_ENV_CONFTEST = """
import os, pytest

@pytest.fixture(scope="session")
def worker():
    os.environ["WORKER_LOG_LEVEL"] = "INFO"
    yield
    del os.environ["WORKER_LOG_LEVEL"]

@pytest.fixture(scope="module")
def module_env():
    os.environ["MODULE_MODE"] = "on"
    return "on"

@pytest.fixture
def function_env():
    os.environ["FUNCTION_MODE"] = "on"
"""

WIDE_ENV_TESTS = """
import os

def test_first(worker, module_env):
    assert os.environ.get("WORKER_LOG_LEVEL") == "INFO"

def test_second(worker, module_env):
    assert os.environ.get("WORKER_LOG_LEVEL") == "INFO"
    assert os.environ.get("MODULE_MODE") == "on"

def test_function_fixture_s_change_is_the_test_s(worker, function_env):
    pass

def test_function_fixture_s_change_was_restored(worker):
    assert "FUNCTION_MODE" not in os.environ
    assert os.environ.get("WORKER_LOG_LEVEL") == "INFO"
"""


def test_a_wider_scoped_fixture_s_environment_is_the_baseline_not_the_test_s_change(
    pytester: pytest.Pytester,
) -> None:
    """Celery's suite: a session fixture's variables were undone after the first test that used it,
    and that test was blamed; its own teardown (removing them) was blamed on the last test."""
    plain_project(pytester)
    pytester.makeconftest(WIDE_ENV_CONFTEST)
    pytester.makepyfile(test_wide=WIDE_ENV_TESTS)
    result = run_inner(pytester)
    result.assert_outcomes(passed=4)
    out = result.stdout.str()
    assert "test_function_fixture_s_change_is_the_test_s changed environment variables (restored): FUNCTION_MODE" in out
    assert "WORKER_LOG_LEVEL" not in out and "MODULE_MODE" not in out, out
    assert "testlane: 1 finding" in out


def test_env_changes_off_neither_reports_nor_restores(pytester: pytest.Pytester) -> None:
    plain_project(pytester, '[tool.testlane.discipline]\nenv_changes = "off"')
    pytester.makepyfile(
        test_off="""
        import os

        def test_sets():
            os.environ["KEPT_ON"] = "1"

        def test_still_set():
            assert os.environ.get("KEPT_ON") == "1"
        """
    )
    result = run_inner(pytester)
    result.assert_outcomes(passed=2)
    assert "changed environment" not in result.stdout.str()
