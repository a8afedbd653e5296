"""The digest, grouping and JSON document as pure logic, on hand-made failures."""

from __future__ import annotations

import json
from pathlib import Path

from testlane.reports.context import excerpt, read_log_since
from testlane.reports.digest import render_digest, rerun_command, summary_line
from testlane.reports.grouping import group_failures, normalize
from testlane.reports.jsonreport import JsonLines, document
from testlane.reports.model import SCHEMA, Failure, Group, RunResult, TestOutcome


def fixture_error(nodeid: str) -> Failure:
    return Failure(
        nodeid=nodeid,
        phase="setup",
        kind="error",
        exc_type="RuntimeError",
        message="database at 10.0.0.7:5432 is not ready",
        path="tests/conftest.py",
        line=12,
        function="db",
        source='raise RuntimeError("database ... not ready")',
        logs=["WARNING  app:conftest.py:11 retrying"],
    )


def assertion(nodeid: str, line: int, message: str, detail: list[str] | None = None) -> Failure:
    path = nodeid.split("::")[0]
    return Failure(nodeid, "call", "assertion", "AssertionError", message, detail or [], path, line, "t", "assert x")


def result_of(failures: list[Failure], passed: int = 0, exit_code: int | None = 1) -> RunResult:
    tests = {f.nodeid: TestOutcome(f.nodeid, "error" if f.phase == "setup" else "failed") for f in failures}
    tests.update(
        {f"tests/test_ok.py::test_{i}": TestOutcome(f"tests/test_ok.py::test_{i}", "passed") for i in range(passed)}
    )
    return RunResult(
        exit_code=exit_code, tests=list(tests.values()), groups=group_failures(failures), collected=len(tests)
    )


def test_one_broken_fixture_is_one_group_with_every_test() -> None:
    failures = [fixture_error(f"tests/test_a.py::test_{i}") for i in range(200)]
    groups = group_failures(failures)
    assert len(groups) == 1
    assert groups[0].count == 200


def test_different_places_are_different_groups_and_parametrized_values_are_not() -> None:
    failures = [
        assertion("tests/test_a.py::test_x[1]", 5, "assert 1 == 2"),
        assertion("tests/test_a.py::test_x[7]", 5, "assert 7 == 8"),
        assertion("tests/test_a.py::test_y", 9, "assert 'a' == 'b'"),
        assertion("tests/test_b.py::test_z", 5, "assert 1 == 2"),
    ]
    groups = group_failures(failures)
    assert [g.count for g in groups] == [2, 1, 1]
    assert groups[0].first.nodeid == "tests/test_a.py::test_x[1]"  # the first failure leads


def test_normalize_blanks_what_varies_between_tests() -> None:
    assert normalize("db tl_0a1b2c at 0x7f3a9 took 12.5s for 'alice'") == normalize(
        "db tl_ffee at 0x1 took 3s for 'bob'"
    )
    assert normalize("KeyError: 'a'\nsecond line") == "KeyError: '…'"


def test_digest_of_a_fixture_failure_folds_the_node_ids_and_reruns_the_files() -> None:
    failures = [fixture_error(f"tests/test_a.py::test_{i}") for i in range(200)]
    text = render_digest(result_of(failures, passed=3))
    assert "[1] ERROR in setup of 200 tests — RuntimeError: database at 10.0.0.7:5432 is not ready" in text
    assert "at tests/conftest.py:12 in db" in text
    assert "… and 197 more" in text
    assert "WARNING  app:conftest.py:11 retrying" in text
    assert "rerun: pytest tests/test_a.py\n" in text  # every test of the file failed so: the file is exact
    assert text.rstrip().endswith("testlane: FAILED — 200 errors, 3 passed in 0.00s; 1 root cause (exit 1)")


def test_rerun_lists_the_first_ids_when_the_file_has_other_tests_and_quotes_them() -> None:
    failures = [assertion(f"tests/test_a.py::test_x[{i}]", 5, f"assert {i} == 0") for i in range(5)]
    result = result_of(failures)
    result.tests.append(TestOutcome("tests/test_a.py::test_passes", "passed"))
    result.tests.append(TestOutcome("tests/test_a.py::test_x[5]", "passed"))  # test_x is not all failing
    result.groups = group_failures(failures)
    text = render_digest(result)
    assert (
        "rerun: pytest 'tests/test_a.py::test_x[0]' 'tests/test_a.py::test_x[1]' 'tests/test_a.py::test_x[2]'" in text
    )
    assert "(first 3 of 5)" in text


def test_rerun_names_a_test_function_whose_every_parameter_set_failed() -> None:
    failures = [assertion(f"tests/test_a.py::test_x[{i}]", 5, f"assert {i} == 0") for i in range(5)]
    result = result_of(failures)
    result.tests.append(TestOutcome("tests/test_a.py::test_passes", "passed"))
    result.groups = group_failures(failures)
    text = render_digest(result)
    assert "    rerun: pytest tests/test_a.py::test_x\n" in text  # exactly the 5, without listing them
    assert "    tests: tests/test_a.py::test_x[0], [1], [2] … and 2 more\n" in text


def test_failures_that_share_a_testlane_cause_are_one_group_at_the_cause() -> None:
    def broken(nodeid: str, line: int) -> Failure:
        # Same cause, different tests, places and message details (e.g. two xdist workers' wording).
        return Failure(
            nodeid=nodeid,
            phase="setup",
            kind="error",
            exc_type="MigrationError",
            message=f"migration failed in migrations/002.sql: relation {nodeid!r} does not exist",
            detail=["hint: fix the migration; the template is rebuilt when its files change."],
            path="migrations/002.sql" if line else None,
            line=line or None,
            cause="migration /app/migrations/002.sql:4",
        )

    failures = [broken(f"tests/test_{f}_it.py::test_{i}", 4) for f in "ab" for i in range(3)]
    failures.append(assertion("tests/test_c.py::test_y", 7, "assert 1 == 2"))
    result = result_of(failures)
    result.groups = group_failures(failures)
    assert [g.count for g in result.groups] == [6, 1]
    text = render_digest(result)
    assert text.startswith("[1] ERROR — MigrationError: migration failed in migrations/002.sql: relation")
    assert "    at migrations/002.sql:4\n" in text
    assert (
        "    6 tests errored because of it: tests/test_a_it.py::test_0, tests/test_a_it.py::test_1 … and 4 more" in text
    )
    assert "    rerun: pytest tests/test_a_it.py tests/test_b_it.py\n" in text


def test_the_note_counts_the_other_tests_in_the_files_before_parameter_sets_merge() -> None:
    # test_a_it.py: test_accounts[0..2] (all broken) and test_plain (broken too); test_b_it.py: 2 broken
    # and 1 that passes. The one other test in those files is test_b_it.py::test_ok, whatever merges.
    def broken(nodeid: str) -> Failure:
        return Failure(nodeid, "setup", "error", "MigrationError", "migration failed", cause="migration m.sql:4")

    ids = [f"tests/test_a_it.py::test_accounts[{i}]" for i in range(3)]
    ids += ["tests/test_b_it.py::test_0", "tests/test_b_it.py::test_1"]
    failures = [broken(n) for n in ids]
    result = result_of(failures)
    result.tests.append(TestOutcome("tests/test_b_it.py::test_ok", "passed"))
    group = group_failures(failures)[0]
    command, note = rerun_command(result, group, files_exact=False)
    assert command == "pytest tests/test_a_it.py tests/test_b_it.py"
    assert note == "and 1 other test in those files"
    result.tests.append(TestOutcome("tests/test_a_it.py::test_plain", "passed"))
    assert rerun_command(result, group, files_exact=False)[1] == "and 2 other tests in those files"


def test_rerun_under_plain_pytest_adds_it_for_integration_tests_and_uses_the_run_prefix() -> None:
    failure = assertion("tests/test_db_it.py::test_q", 3, "assert 0 == 1")
    failure.lane = "it"
    group = Group(key=("k",), failures=[failure])
    plain = RunResult(exit_code=1, rerun_prefix="pytest", it_flag=True)
    assert rerun_command(plain, group, files_exact=False)[0] == "pytest --it tests/test_db_it.py::test_q"
    under_run = RunResult(exit_code=1, rerun_prefix="testlane run --", it_flag=False)
    assert rerun_command(under_run, group, files_exact=False)[0] == "testlane run -- tests/test_db_it.py::test_q"


def test_a_single_test_groups_headline_leaves_its_node_id_to_the_rerun_line() -> None:
    nodeid = "tests/test_a.py::test_x[a b]"
    text = render_digest(result_of([assertion(nodeid, 5, "assert 1 == 2")], passed=1))
    assert text.count("test_x[a b]") == 1, text  # said once: in the command that reruns it
    assert text.startswith("[1] FAILED — AssertionError: assert 1 == 2\n    at tests/test_a.py:5 in t\n"), text
    assert "    rerun: pytest 'tests/test_a.py::test_x[a b]'\n" in text


def test_a_timeouts_message_is_its_limit() -> None:
    timeout = Failure(
        "tests/test_slow.py::test_w",
        "call",
        "timeout",
        "Failed",
        "Timeout (>1.0s) from pytest-timeout.",
        [],
        "tests/test_slow.py",
        8,
        "test_w",
        "time.sleep(30)",
    )
    text = render_digest(result_of([timeout]))
    assert text.startswith("[1] TIMEOUT — Timeout >1.0s\n    at tests/test_slow.py:8: time.sleep(30)\n"), text
    assert "pytest-timeout" not in text


def test_a_timeout_of_testlane_s_keeps_its_setting_as_a_sentence_of_its_own() -> None:
    """The headline read `Timeout >1.0s It is testlane's ...`: the limit's sentence lost its full stop."""
    said = "Timeout (>1.0s) from pytest-timeout. It is testlane's unit-lane timeout, discipline.timeout_unit: ..."
    timeout = Failure(
        "tests/test_slow.py::test_w", "call", "timeout", "Failed", said, [], "tests/test_slow.py", 8, "test_w", "x"
    )
    text = render_digest(result_of([timeout]))
    assert text.startswith("[1] TIMEOUT — Timeout >1.0s. It is testlane's unit-lane timeout, "), text


def test_budget_folds_later_groups_but_keeps_the_first_failure() -> None:
    failures = [
        assertion(f"tests/test_{i}.py::test_case", i + 1, f"assert {i} == -1", [f"diff line {n}" for n in range(30)])
        for i in range(40)
    ]
    for failure in failures:
        failure.logs = [f"log line {n}" for n in range(20)]
    result = result_of(failures)
    full = render_digest(result, budget=100_000)
    small = render_digest(result, budget=1500)
    assert len(small) <= 1500 < len(full)
    assert "[1] FAILED — AssertionError: assert 0 == -1" in small  # its rerun line names the test
    # folded to one line, without a rerun line, a group names its test in its headline
    assert "[2] FAILED tests/test_1.py::test_case — AssertionError: assert 1 == -1 at tests/test_1.py:2\n" in small
    assert "at tests/test_0.py:1" in small
    assert "diff line 0" in small
    assert "rerun: pytest tests/test_0.py::test_case" in small
    assert "more root causes" in small
    assert small.rstrip().splitlines()[-1].startswith("testlane: FAILED — 40 failed")


def test_a_first_failure_larger_than_the_budget_is_cut_not_dropped() -> None:
    huge = assertion("tests/test_a.py::test_big", 3, "x" * 5000, ["y" * 300] * 50)
    text = render_digest(result_of([huge]), budget=800)
    assert len(text) <= 800
    assert text.startswith("[1] FAILED — AssertionError: xxx")
    assert "    rerun: pytest tests/test_a.py::test_big\n" in text  # never cut: it names the test
    assert text.rstrip().splitlines()[-1].startswith("testlane: FAILED")


def test_the_summary_never_says_passed_unless_something_passed_and_pytest_exited_zero() -> None:
    # no time on a green line: nothing there to act on
    assert summary_line(result_of([], passed=4, exit_code=0)) == "testlane: PASSED — 4 passed"
    skipped = [TestOutcome("t.py::a", "skipped")]
    # Every test an integration test skipped because the lane is off (testlane's skip): nothing tested, 5.
    lane_off = RunResult(exit_code=0, tests=skipped, lane_off=True)
    assert (lane_off.outcome, lane_off.verdict.exit_code) == ("no_tests", 5)
    assert summary_line(lane_off).startswith("testlane: FAILED — no tests ran — 1 skipped")
    accepted = RunResult(exit_code=0, tests=skipped, lane_off=True, all_skipped="pass")
    assert (accepted.outcome, accepted.verdict.exit_code) == ("passed", 0)
    assert summary_line(accepted).startswith('testlane: PASSED — nothing was tested (lanes.all_skipped = "pass")')
    # The project's own skip marks: pytest's 0 stands, and the tally says nothing passed.
    marks = RunResult(exit_code=0, tests=skipped)
    assert (marks.outcome, marks.verdict.exit_code, marks.verdict.pytest_exit_code) == ("passed", 0, 0)
    assert summary_line(marks).endswith("testlane: PASSED — 0 passed, 1 skipped")
    assert summary_line(RunResult(exit_code=5)).startswith("testlane: FAILED — no tests ran")
    assert summary_line(RunResult(exit_code=2)).startswith("testlane: INTERRUPTED (not a success)")
    # pytest's 2 on collection errors stands; the words say what it is.
    collection = Failure(
        nodeid="t.py", kind="collection", phase="collect", exc_type="ImportError", message="no module named x"
    )
    stopped = RunResult(exit_code=2, groups=group_failures([collection]))
    assert (stopped.outcome, stopped.verdict.exit_code) == ("collection_error", 2)
    assert summary_line(stopped).startswith("testlane: ERROR — collection failed — 0 tests ran in ")
    assert summary_line(stopped).endswith("; 1 root cause (exit 2)")
    going_on = RunResult(exit_code=1, groups=group_failures([collection]))  # --continue-on-collection-errors
    assert (going_on.outcome, going_on.verdict.exit_code) == ("failed", 1)
    assert summary_line(RunResult(exit_code=3)).startswith("testlane: FAILED — pytest crashed (INTERNALERROR)")
    # testlane's own 3: the run stopped at a service that could not start (as `testlane run` exits 3 for it)
    service = RunResult(exit_code=3, service_error=True)
    assert (service.outcome, service.verdict.exit_code) == ("service_error", 3)
    assert summary_line(service).startswith("testlane: FAILED — a service could not be started")
    assert RunResult(exit_code=None).outcome == "crashed"
    assert RunResult(exit_code=-9).outcome == "crashed"
    # exit 0 with a failure recorded (a plugin swallowed it) is still a failure
    assert result_of([assertion("t.py::a", 1, "assert 0")], exit_code=0).outcome == "failed"


def test_json_document_carries_the_schema_groups_and_tests() -> None:
    failures = [fixture_error(f"tests/test_a.py::test_{i}") for i in range(3)]
    doc = document(result_of(failures, passed=2))
    assert doc["schema"] == SCHEMA == "testlane.report/1"
    assert doc["outcome"] == "failed" and doc["success"] is False and doc["exit_code"] == 1
    assert doc["summary"]["error"] == 3 and doc["summary"]["passed"] == 2 and doc["summary"]["root_causes"] == 1
    group = doc["groups"][0]
    assert group["count"] == 3 and group["location"] == "tests/conftest.py:12" and group["kind"] == "error"
    assert group["rerun"].startswith("pytest ")
    assert group["failures"][0]["logs"] == ["WARNING  app:conftest.py:11 retrying"]
    assert {t["outcome"] for t in doc["tests"]} == {"error", "passed"}
    assert doc["digest"].endswith("(exit 1)\n")
    json.dumps(doc)  # serializable as is


def test_json_lines_are_one_object_per_line(tmp_path: Path) -> None:
    stream = JsonLines.to_file(tmp_path / "out" / "events.jsonl")
    stream.emit("start", rootdir="/x")
    stream.emit("test", nodeid="a.py::t", outcome="passed")
    stream.close()
    lines = (tmp_path / "out" / "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["event"] for e in events] == ["start", "test"]
    assert all(e["schema"] == SCHEMA for e in events)


def test_read_log_since_returns_only_lines_written_after_the_offset(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("old line 1\nold line 2\n")
    offset = log.stat().st_size
    with log.open("a") as fh:
        fh.write('ERROR:  relation "nope" does not exist\nSTATEMENT:  SELECT * FROM nope\n')
    assert read_log_since(log, offset, 10) == [
        'ERROR:  relation "nope" does not exist',
        "STATEMENT:  SELECT * FROM nope",
    ]
    assert read_log_since(log, offset, 1) == ["STATEMENT:  SELECT * FROM nope"]
    assert read_log_since(tmp_path / "missing.log", 0, 5) == []


RABBITMQ_WINDOW = (
    "2026-11-30 10:49:45.855591+00:00 [info] <0.223.0> Feature flags: list of feature flags found:\n"
    "2026-11-30 10:49:46.338483+00:00 [notice] <0.223.0> Logging: switching to configured handler(s)\n"
    '\x1b[38;5;214m2026-11-30 10:49:50.202814+00:00 [warning] <0.633.0> Message store "x/msg_store_persistent": '
    "rebuilding indices from scratch\x1b[0m\n"
    "\x1b[38;5;160m2026-11-30 10:49:50.340365+00:00 [error] <0.806.0> Channel error on connection <0.797.0> "
    "(127.0.0.1:55416 -> 127.0.0.1:42309, vhost: 'tl_x_1', user: 'tl_u'), channel 1:\x1b[0m\n"
    "\x1b[38;5;160m2026-11-30 10:49:50.340365+00:00 [error] <0.806.0> operation queue.declare caused a channel "
    "exception not_found: no queue 'nope' in vhost 'tl_x_1'\x1b[0m\n"
    "2026-11-30 10:49:50.350000+00:00 [info] <0.820.0> accepting AMQP connection <0.820.0>\n"
)


def test_a_coloured_server_log_is_shown_as_plain_text_with_only_its_problems(tmp_path: Path) -> None:
    # RabbitMQ colours its console log (what testlane reads): the excerpt under a failing test, the
    # log tail of a failed start and `testlane services logs` show no escape sequences, and the
    # node's housekeeping (feature flags, its message store rebuilt at boot) is left out.
    from testlane.services.process import log_tail

    log = tmp_path / "server.log"
    log.write_text(RABBITMQ_WINDOW)
    lines = read_log_since(log, 0, 100)
    assert not any("\x1b" in line or "[38;5;" in line for line in lines), lines
    assert "\x1b" not in log_tail(log) and "[38;5;" not in log_tail(log)
    assert excerpt(lines, 24) == [
        "2026-11-30 10:49:50.340365+00:00 [error] <0.806.0> Channel error on connection <0.797.0> "
        "(127.0.0.1:55416 -> 127.0.0.1:42309, vhost: 'tl_x_1', user: 'tl_u'), channel 1:",
        "2026-11-30 10:49:50.340365+00:00 [error] <0.806.0> operation queue.declare caused a channel "
        "exception not_found: no queue 'nope' in vhost 'tl_x_1'",
    ]


def test_importing_the_reports_plugin_stays_cheap() -> None:
    import subprocess
    import sys

    code = (
        "import sys, testlane.reports.pytest_reporter\n"
        "heavy = ('psycopg', 'redis', 'rich', 'click', 'testlane.reports.digest', 'testlane.reports.jsonreport',"
        " 'testlane.reports.grouping', 'testlane.reports.failures')\n"
        "print(','.join(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


BOOT = [
    "2026-11-30 04:00:18.853 UTC [4792] LOG:  starting PostgreSQL 18.6 on x86_64-pc-linux-gnu, 64-bit",
    '2026-11-30 04:00:18.853 UTC [4792] LOG:  listening on IPv4 address "127.0.0.1", port 41375',
    "2026-11-30 04:00:18.876 UTC [4798] LOG:  database system was shut down at 2026-11-30 03:34:21 UTC",
    "2026-11-30 04:00:18.882 UTC [4792] LOG:  database system is ready to accept connections",
]


def test_the_log_excerpt_drops_housekeeping_and_prefers_the_errors_with_their_statements() -> None:
    error = [
        '2026-11-30 04:00:20.055 UTC [4842] app@tl_x_1 ERROR:  duplicate key value violates unique constraint "u"',
        "2026-11-30 04:00:20.055 UTC [4842] app@tl_x_1 DETAIL:  Key (email)=(a@b.c) already exists.",
        "2026-11-30 04:00:20.055 UTC [4842] app@tl_x_1 STATEMENT:  INSERT INTO users (email)",
        "\t    VALUES ('a@b.c')",
    ]
    noise = ["2026-11-30 04:00:20.100 UTC [4850] LOG:  connection received: host=127.0.0.1 port=5555"] * 30
    assert excerpt([*BOOT, *error, *noise], 24) == error
    # no problem reported: what the test caused, without the boot
    assert excerpt([*BOOT, noise[0]], 24) == [noise[0]]
    assert excerpt(BOOT, 24) == []
    # the last problems win when there are more than the limit; a problem's own lines stay with it
    many = [f"2026-11-30 04:00:2{i}.000 UTC [1] ERROR:  failure {i}" for i in range(5)]
    assert excerpt(many, 2) == many[-2:]
    valkey = ["1:M 30 Nov 2026 04:00:18.853 * Ready to accept connections tcp", "1:M 30 Nov 2026 04:00:19.000 # oops"]
    assert excerpt(valkey, 5) == [valkey[1]]


def own_error(nodeid: str) -> Failure:
    return Failure(
        nodeid=nodeid,
        phase="setup",
        kind="error",
        exc_type="MigrationError",
        message='migration 003_orders.sql failed at line 7: column "total" does not exist '
        + " ".join(["(details)"] * 20),
        detail=["hint: fix the migration, then run again; the template is rebuilt from the migrations' content"],
        path="tests/conftest.py",
        line=3,
        own=True,
        logs=[f"captured line {n} " + "x" * 100 for n in range(30)],
        servers={"postgres": [f'ERROR:  column "total" does not exist {n}' for n in range(8)]},
    )


def test_testlanes_own_message_is_whole_however_small_the_budget() -> None:
    first = own_error("tests/test_a.py::test_a")
    later = [assertion(f"tests/test_{i}.py::test_case", i + 1, f"assert {i} == -1", ["d"] * 20) for i in range(9)]
    result = result_of([first, *later])
    for budget in (4000, 1200, 600, 100):
        text = render_digest(result, budget=budget)
        assert first.message in text and first.detail[0] in text, (budget, text)
        assert "rerun: pytest tests/test_a.py::test_a" in text
        assert text.rstrip().splitlines()[-1].startswith("testlane: FAILED — 9 failed, 1 error")
        if budget <= 1200:
            assert "more root causes (" in text and " not shown: rerun them with `pytest tests/test_" in text
        if budget >= 1200:
            assert len(text) <= budget
    # a later group folded to one line keeps testlane's message whole too
    result = result_of([*later[:1], own_error("tests/test_b.py::test_b")])
    text = render_digest(result, budget=900)
    assert own_error("x").message in text and own_error("x").detail[0] in text
    # the JSON Lines headline does not cut it either
    from testlane.reports.digest import failure_headline

    assert failure_headline(first).startswith(f"MigrationError: {first.message} at tests/conftest.py:3")


def test_rerun_options_keep_how_tests_run_and_drop_selection_and_output() -> None:
    import argparse

    from testlane.reports.rerun import rerun_options

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-p", dest="plugins", action="append")
    parser.add_argument("-o", "--override-ini", dest="override_ini", action="append")
    parser.add_argument("-c", dest="inifilename")
    parser.add_argument("-W", dest="pythonwarnings", action="append")
    parser.add_argument("--timeout", dest="timeout")
    parser.add_argument("--isolation", dest="testlane_db__isolation")
    parser.add_argument("-k", dest="keyword")
    parser.add_argument("-x", dest="maxfail", action="store_const", const=1)
    parser.add_argument("-v", dest="verbose", action="count")
    parser.add_argument("-s", dest="capture", action="store_const", const="no")
    parser.add_argument("-n", dest="numprocesses")
    parser.add_argument("--format", dest="testlane_reports__format")
    actions = dict(parser._option_string_actions)
    args = [
        "-pno:django",
        "-xvs",
        "--timeout=1",
        "-o",
        "a=b",
        "-k",
        "x or y",
        "tests/a.py::t",
        "-n",
        "2",
        "-c",
        "cfg/pytest.ini",
        "--isolation",
        "database",
        "--format",
        "json",
        "-W",
        "error",
        "--",
        "-odd",
    ]
    kept = rerun_options(args, actions, drop=frozenset({"testlane_reports__format"}))
    assert kept == [
        "-p",
        "no:django",
        "-s",
        "--timeout",
        "1",
        "-o",
        "a=b",
        "-c",
        "cfg/pytest.ini",
        "--isolation",
        "database",
        "-W",
        "error",
    ]
    elsewhere = rerun_options(["-c", "cfg/pytest.ini"], actions, absolute_from="/home/u/app")
    assert elsewhere == ["-c", "/home/u/app/cfg/pytest.ini"]
