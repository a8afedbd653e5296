"""The digest, JSON and JSON Lines reports on generated suites — the ones bench/digest.py measures."""

from __future__ import annotations

import importlib.util
import json
import shlex
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers import ROOTED_PYPROJECT, clean_env, plain_project, run_cli, run_inner

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("plain_env")]

REPO = Path(__file__).resolve().parents[2]


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_digest", REPO / "bench" / "digest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_digest", module)
    spec.loader.exec_module(module)
    return module


bench = _bench()


def suite(pytester: pytest.Pytester, name: str) -> Path:
    return bench.write_suite(name, pytester.path)  # type: ignore[no-any-return]


def test_fixture_suite_is_one_group_with_its_place_log_and_rerun(pytester: pytest.Pytester) -> None:
    suite(pytester, "fixture")
    digest = run_inner(pytester, "--digest")
    assert digest.ret == 1
    text = digest.stdout.str()
    assert text.count("\n[") == 0 and text.startswith("[1] ")  # one group
    assert (
        "[1] ERROR in setup of 200 tests — RuntimeError: accounts database is not migrated: schema version 41, "
        "expected 42" in text
    )
    # the fixture is named; its `raise` statement is not (the message is what it raised)
    assert "    at tests/conftest.py:12 in accounts_db\n" in text
    assert "tests: tests/test_accounts_0.py::test_account_0[0]," in text and "… and 197 more" in text
    assert "WARNING  app.db:conftest.py:11 accounts database: schema version 41, expected 42" in text
    # -p no:cacheprovider is this run's own option (run() gives it): the re-run repeats it
    rerun = "rerun: pytest --digest -p no:cacheprovider " + " ".join(f"tests/test_accounts_{i}.py" for i in range(4))
    assert rerun in text
    assert text.rstrip().splitlines()[-1].startswith("testlane: FAILED — 200 errors, 10 passed in ")
    assert "Traceback" not in text and "_____" not in text  # pytest's own report is muted
    quiet = run_inner(pytester, "-q")
    assert len(text) * 50 <= len(quiet.stdout.str())  # the target, measured in bench/digest.py too


def test_six_unrelated_failures_are_six_groups_with_their_diffs(pytester: pytest.Pytester) -> None:
    suite(pytester, "six")
    text = run_inner(pytester, "--digest").stdout.str()
    heads = [line for line in text.splitlines() if line.startswith("[")]
    assert len(heads) == 6
    for where, diff in [
        # a rewritten assert is explained by pytest's message: its statement is not repeated
        ("tests/test_a.py:6\n", "+  where 7 = total([1, 2, 3])"),
        ("tests/test_a.py:10\n", "At index 2 diff: 'cy' != 'cyd'"),
        ("tests/test_a.py:15\n", "{'port': 5432} != {'port': 5433}"),
        ("tests/test_b.py:9\n", "- hello-world"),
        # the test's own function is in the node id; other statements are shown
        ('tests/test_b.py:13: assert int("42 ") == 42 and int("x") == 0', ""),
        ("tests/test_b.py:17: with pytest.raises(KeyError):", ""),
    ]:
        assert f"at {where}" in text
        assert diff in text
    assert "ValueError: invalid literal for int() with base 10: 'x'" in text
    assert "Failed: DID NOT RAISE KeyError" in text
    assert "rerun: pytest --digest -p no:cacheprovider tests/test_a.py::test_total" in text
    assert text.rstrip().splitlines()[-1].startswith("testlane: FAILED — 6 failed, 20 passed in ")
    assert len(text) <= len(run_inner(pytester, "-q").stdout.str())


def test_a_timeout_is_a_failure_at_the_line_where_the_test_hung(pytester: pytest.Pytester) -> None:
    suite(pytester, "timeout")
    result = run_inner(pytester, "--digest")
    text = result.stdout.str()
    assert result.ret == 1
    assert text.startswith("[1] TIMEOUT — Timeout >1.0s\n")  # the limit: the label says the rest
    assert "at tests/test_slow.py:8: time.sleep(30)" in text
    rerun = "rerun: pytest --digest -p no:cacheprovider tests/test_slow.py::test_waits_for_a_reply_that_never_comes"
    assert rerun in text
    assert "PASSED" not in text
    assert len(text) <= len(run_inner(pytester, "-q").stdout.str())


def test_green_suite_is_one_line(pytester: pytest.Pytester) -> None:
    suite(pytester, "green")
    result = run_inner(pytester, "--digest")
    assert result.ret == 0
    lines = result.stdout.str().splitlines()
    assert len(lines) == 1 and lines[0].startswith("testlane: PASSED — 50 passed")


def test_nothing_collected_is_a_failure(pytester: pytest.Pytester) -> None:
    suite(pytester, "green")
    result = run_inner(pytester, "--digest", "-k", "no_such_test")
    assert result.ret == 5
    text = result.stdout.str()
    assert "no tests ran: all 50 collected tests were deselected" in text
    assert "testlane: FAILED — no tests ran" in text and "PASSED" not in text


def test_an_internal_error_is_a_failure_with_its_message(pytester: pytest.Pytester) -> None:
    suite(pytester, "green")
    pytester.makeconftest("def pytest_collection_modifyitems(items):\n    raise RuntimeError('plugin exploded')\n")
    result = run_inner(pytester, "--digest")
    assert result.ret == 3
    text = result.stdout.str()
    assert "INTERNAL ERROR" in text and "plugin exploded" in text
    assert "testlane: FAILED — pytest crashed (INTERNALERROR)" in text


def test_an_interrupted_run_is_not_a_success(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_stop="""
        def test_ok():
            pass

        def test_stop():
            raise KeyboardInterrupt

        def test_never():
            pass
        """
    )
    result = run_inner(pytester, "--digest")
    assert result.ret == 2
    text = result.stdout.str()
    assert "interrupted: KeyboardInterrupt" in text
    assert "testlane: INTERRUPTED (not a success) — 1 passed, 1 incomplete in " in text


def test_stopping_early_says_how_many_tests_did_not_run(pytester: pytest.Pytester) -> None:
    suite(pytester, "six")
    text = run_inner(pytester, "--digest", "-x").stdout.str()
    assert "stopped early (stopping after 1 failures): " in text and "tests did not run" in text


def test_budget_option_and_setting(pytester: pytest.Pytester) -> None:
    suite(pytester, "six")
    small = run_inner(pytester, "--digest", "--digest-budget", "600").stdout.str()
    assert len(small) <= 600 and small.startswith("[1] FAILED — AssertionError: assert 7 == 6\n")
    pytester.path.joinpath("pyproject.toml").write_text(
        bench.PYPROJECT.format(name="six") + '\n[tool.testlane.reports]\nformat = "digest"\ndigest_budget = 700\n'
    )
    from_config = run_inner(pytester).stdout.str()
    assert len(from_config) <= 700 and from_config.startswith("[1] FAILED — AssertionError: assert 7 == 6\n")
    # Issue 15: an option given is kept whatever its value; 0 (the smallest digest) is not "not given".
    zero = run_inner(pytester, "--digest-budget", "0").stdout.str()
    assert zero.startswith("[1] FAILED — AssertionError: assert 7 == 6\n") and len(zero) < len(from_config)


def test_under_xdist_the_controller_reports_with_the_workers_facts(pytester: pytest.Pytester) -> None:
    suite(pytester, "fixture")
    text = run_inner(pytester, "--digest", "-n", "2").stdout.str()
    assert "[1] ERROR in setup of 200 tests" in text
    assert "at tests/conftest.py:12 in accounts_db" in text
    assert "\n[2]" not in text


def test_format_json_prints_the_versioned_document(pytester: pytest.Pytester) -> None:
    suite(pytester, "six")
    result = run_inner(pytester, "--format", "json")
    doc = json.loads(result.stdout.str())
    assert doc["schema"] == "testlane.report/1"
    assert doc["outcome"] == "failed" and doc["exit_code"] == 1 and doc["success"] is False
    assert doc["summary"]["failed"] == 6 and doc["summary"]["passed"] == 20 and doc["summary"]["root_causes"] == 6
    first = doc["groups"][0]
    assert first["location"] == "tests/test_a.py:6" and first["exception"] == "AssertionError"
    assert first["nodeids"] == ["tests/test_a.py::test_total"]
    assert first["failures"][0]["detail"] == ["+  where 7 = total([1, 2, 3])"]
    assert len(doc["tests"]) == 26


def test_json_and_jsonl_files_beside_pytests_own_output(pytester: pytest.Pytester) -> None:
    suite(pytester, "timeout")
    result = run_inner(pytester, "--report-json", "out/report.json", "--report-jsonl", "out/events.jsonl")
    assert "1 failed, 10 passed" in result.stdout.str()  # the terminal is pytest's own
    doc = json.loads((pytester.path / "out" / "report.json").read_text())
    assert doc["groups"][0]["kind"] == "timeout"
    events = [json.loads(line) for line in (pytester.path / "out" / "events.jsonl").read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[1] == "collected" and kinds[-1] == "finish"
    tests = [e for e in events if e["event"] == "test"]
    assert len(tests) == 11
    slow = next(e for e in tests if "test_slow" in e["nodeid"])
    assert slow["outcome"] == "failed" and slow["message"].startswith("Timeout >1.0s at tests/test_slow.py:8")
    assert events[-1]["outcome"] == "failed" and events[-1]["exit_code"] == 1


def test_format_jsonl_streams_to_stdout(pytester: pytest.Pytester) -> None:
    suite(pytester, "green")
    lines = run_inner(pytester, "--format", "jsonl").stdout.str().splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["event"] for e in events].count("test") == 50
    assert events[-1]["event"] == "finish" and events[-1]["outcome"] == "passed"


def test_junit_path_setting_writes_pytests_junit_xml(pytester: pytest.Pytester) -> None:
    suite(pytester, "six")
    pytester.path.joinpath("pyproject.toml").write_text(
        bench.PYPROJECT.format(name="six") + '\n[tool.testlane.reports]\njunit_path = "reports/junit.xml"\n'
    )
    run_inner(pytester, "--digest")
    root = ET.parse(pytester.path / "reports" / "junit.xml").getroot()
    suite_element = root if root.tag == "testsuite" else root[0]
    assert suite_element.get("failures") == "6" and suite_element.get("tests") == "26"


def test_a_crashed_xdist_worker_is_a_failure(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_dies="import os\n\ndef test_ok():\n    pass\n\ndef test_dies():\n    os._exit(3)\n")
    result = run_inner(pytester, "--format", "json", "-n", "2")
    doc = json.loads(result.stdout.str())
    assert result.ret == 1 and doc["outcome"] == "failed"
    assert doc["summary"]["collected"] == 2 and doc["summary"]["failed"] == 1
    crash = doc["groups"][0]
    assert crash["kind"] == "crash" and crash["nodeids"] == ["test_dies.py::test_dies"]
    assert "crashed while running 'test_dies.py::test_dies'" in crash["message"]
    assert doc["digest"].startswith("[1] CRASHED — worker 'gw")


def test_options_that_are_about_pytests_own_output_are_never_muted(pytester: pytest.Pytester) -> None:
    suite(pytester, "green")
    listing = run_inner(pytester, "--digest", "--collect-only", "-q")
    assert listing.ret == 0
    assert "tests/test_ok.py::test_ok[49]" in listing.stdout.str() and "testlane:" not in listing.stdout.str()
    assert "--digest-budget=CHARS" in run_inner(pytester, "--digest", "--help").stdout.str()


def test_collection_errors_are_failures_at_their_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_imports="import no_such_module\n\ndef test_a():\n    pass\n",
        test_syntax="def test_b(:\n    pass\n",
        test_fine="def test_c():\n    pass\n",
    )
    result = run_inner(pytester, "--digest")
    text = result.stdout.str()
    assert result.ret == 2  # pytest's code: it stops the run ("Interrupted: 2 errors during collection")
    assert (
        "[1] COLLECTION ERROR — ModuleNotFoundError: No module named 'no_such_module'\n    at test_imports.py:1\n"
        in text
    )
    assert "at test_imports.py:1" in text
    assert "[2] COLLECTION ERROR — SyntaxError: invalid syntax\n    at test_syntax.py:1" in text
    assert "at test_syntax.py:1" in text and "def test_b(:" in text
    assert text.rstrip().splitlines()[-1].startswith("testlane: ERROR — collection failed — 0 tests ran")
    assert text.rstrip().endswith("(exit 2)")
    # Told to go on, pytest runs the rest and exits 1: the verdict follows its code.
    going_on = run_inner(pytester, "--digest", "--continue-on-collection-errors")
    assert going_on.ret == 1
    last = going_on.stdout.str().rstrip().splitlines()[-1]
    assert last.startswith("testlane: FAILED — 1 passed in ") and last.endswith("; 2 root causes (exit 1)")


def test_stopping_after_the_last_test_says_nothing_and_otherwise_counts_the_rest(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_x="""
        def test_ok():
            pass

        def test_last():
            assert 1 == 2
        """
    )
    last = run_inner(pytester, "--digest", "-x")
    assert last.ret == 1
    assert "stopped early" not in last.stdout.str() and "did not run" not in last.stdout.str()
    pytester.makepyfile(
        test_x="""
        def test_first():
            assert 1 == 2

        def test_a():
            pass

        def test_b():
            pass
        """
    )
    first = run_inner(pytester, "--digest", "-x")
    assert first.ret == 1
    assert "stopped early (stopping after 1 failures): 2 of 3 tests did not run" in first.stdout.str()


def test_tests_skipped_by_a_plugin_name_the_first_reason(pytester: pytest.Pytester) -> None:
    # A plugin's skip (pytest-django's live_server without settings) is not "the project's own".
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture
        def live_server():
            pytest.skip("no Django settings")
        """
    )
    pytester.makepyfile(test_x="def test_page(live_server):\n    pass\n\ndef test_two(live_server):\n    pass\n")
    result = run_inner(pytester, "--digest")
    assert result.ret == 0
    text = result.stdout.str()
    assert (
        "nothing was tested: all 2 selected tests were skipped (the first: no Django settings); exit 0 as pytest "
        "says (skipped by the project or its plugins)" in text
    )
    assert "own skips" not in text


RUN_AS_OPTIONS = """
import warnings
import pytest

@pytest.mark.xfail(reason="known")
def test_xpasses():
    pass

def test_warns():
    warnings.warn("deprecated call", UserWarning)

def test_ok():
    pass
"""


def test_the_rerun_keeps_the_options_that_change_how_tests_run_and_reruns_the_failure(
    pytester: pytest.Pytester,
) -> None:
    # These tests fail only with the user's options (-o, -W, -p); selection and output options are dropped.
    pytester.makepyfile(test_x=RUN_AS_OPTIONS, test_y="def test_other():\n    pass\n")
    given = ["-o", "xfail_strict=true", "-W", "error:deprecated call", "-p", "no:asyncio", "--tb=line", "-v"]
    first = run_inner(pytester, "--digest", *given, "-k", "not nothing", "--maxfail=5", "test_x.py", "test_y.py")
    assert first.ret == 1
    reruns = [line.strip() for line in first.stdout.lines if line.strip().startswith("rerun: ")]
    kept = "-p no:cacheprovider -o xfail_strict=true -W 'error:deprecated call' -p no:asyncio"
    assert reruns == [
        f"rerun: pytest --digest {kept} test_x.py::test_xpasses",
        f"rerun: pytest --digest {kept} test_x.py::test_warns",
    ], first.stdout.str()
    for line in reruns:
        words = shlex.split(line.removeprefix("rerun: "))
        assert words[:2] == ["pytest", "--digest"]
        again = run_inner(pytester, *words[1:])
        assert again.ret == 1, again.stdout.str()  # reproduced, and only that test ran
        assert "testlane: FAILED — 1 failed in " in again.stdout.str()


def test_under_testlane_run_the_rerun_repeats_the_pytest_options_given_after_the_dashes(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # testlane run starts pytest with the arguments after `--` and says how it was started; the child
    # repeats the options among them (here as `testlane run` hands them on), not the selection.
    from testlane.reports import RERUN_ENV

    monkeypatch.setenv(RERUN_ENV, "testlane --set db.isolation=database run --")
    pytester.makepyfile(test_x=RUN_AS_OPTIONS)
    result = run_inner(pytester, "--digest", "-o", "xfail_strict=true", "-x", "test_x.py")
    assert result.ret == 1
    assert (
        "    rerun: testlane --set db.isolation=database run -- -p no:cacheprovider -o xfail_strict=true "
        "test_x.py::test_xpasses\n" in result.stdout.str()
    )


def _rooted_project(pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    pytester.makefile(".toml", pyproject=ROOTED_PYPROJECT)
    pytester.makepyfile(
        **{"tests/test_one": "def test_one():\n    pass\n", "other/test_two": "def test_two():\n    pass\n"}
    )
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    report, events = elsewhere / "r.json", elsewhere / "r.jsonl"
    report.write_text("{}")  # left by an earlier run
    events.write_text("")
    return report, events


def test_a_report_path_outside_the_project_as_one_word_leaves_the_rootdir_alone(
    pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory
) -> None:
    report, events = _rooted_project(pytester, tmp_path_factory)
    result = run_inner(pytester, f"--report-json={report}", f"--report-jsonl={events}")
    assert f"rootdir: {pytester.path}" in result.stdout.lines, result.stdout.str()
    result.assert_outcomes(passed=1)
    assert [t["nodeid"] for t in json.loads(report.read_text())["tests"]] == ["tests/test_one.py::test_one"]


def test_a_report_path_outside_the_project_as_two_words_stops_with_the_one_word_form(
    pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # pytest chooses the rootdir before it loads plugins: `--report-json /elsewhere/r.json` then looks like an
    # unknown flag and a path to test, and a path that exists (last run's report) moved the rootdir to a common
    # ancestor: the project's configuration (testpaths) not read, other/test_two.py run too. pytest's choice is
    # not redone (its configuration was read from it): the run stops before any test and says how to write it.
    report, events = _rooted_project(pytester, tmp_path_factory)
    result = run_inner(pytester, "--report-json", str(report), "--report-jsonl", str(events))
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    err = result.stderr.str()
    assert f"write --report-json={report} as one word" in err, err
    assert f"(not {pytester.path})" in err, err
    assert "Traceback" not in err + result.stdout.str()
    assert report.read_text() == "{}"  # nothing ran, nothing written


def test_a_report_path_inside_the_project_as_two_words_runs(pytester: pytest.Pytester) -> None:
    # The rootdir did not move (the path is under it): nothing to say, the run goes on.
    pytester.makefile(".toml", pyproject=ROOTED_PYPROJECT)
    pytester.makepyfile(**{"tests/test_one": "def test_one():\n    pass\n"})
    (pytester.path / "out").mkdir()
    (pytester.path / "out" / "r.json").write_text("{}")
    result = run_inner(pytester, "--report-json", "out/r.json")
    result.assert_outcomes(passed=1)
    assert (
        json.loads((pytester.path / "out" / "r.json").read_text())["tests"][0]["nodeid"]
        == "tests/test_one.py::test_one"
    )


def test_testlane_run_takes_digest_before_the_dashes_as_pytest_does_after_them(pytester: pytest.Pytester) -> None:
    # `testlane run --digest` said "No such option: --digest" (only `--format digest` was an option of run's).
    plain_project(pytester)
    pytester.makepyfile(test_x="def test_fails():\n    assert 1 == 2\n")
    env = clean_env({"TESTLANE_REPORTS_FORMAT": "terminal"})  # the digest comes from the flag alone
    for args in (["run", "--digest", "--"], ["run", "--", "--digest"]):
        result = run_cli([*args, "-p", "no:cacheprovider"], cwd=pytester.path, env=env)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "testlane: FAILED — 1 failed" in result.stdout.splitlines()[-1], result.stdout
        assert "short test summary" not in result.stdout  # pytest's own output muted: the digest owns stdout
