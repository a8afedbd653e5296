"""Issue 16, seen 1: the verdict and the exit code are one decision. For every kind of run, the digest's
summary line, the JSON document, the JSON Lines `finish` event, pytest's own output and the process's exit
status say the same thing — under plain pytest and under `testlane run`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import clean_env, plain_project, run_cli, run_inner, write_files

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("plain_env")]

SUITES: dict[str, dict[str, str]] = {
    "all passed": {"tests/test_a.py": "def test_a():\n    pass\n\ndef test_b():\n    pass\n"},
    "a failure": {"tests/test_a.py": "def test_a():\n    pass\n\ndef test_b():\n    assert 1 == 2\n"},
    "a fixture error": {
        "tests/test_a.py": (
            "import pytest\n\n@pytest.fixture\ndef broken():\n    raise RuntimeError('no database')\n\n"
            "def test_a(broken):\n    pass\n"
        )
    },
    "all skipped by the lane": {
        "tests/integration/test_a.py": "def test_a():\n    pass\n",
        "tests/test_b_it.py": "def test_b():\n    pass\n",
    },
    # the project's own flag, forgotten: nothing was tested
    "all skipped by the project": {
        "tests/test_a.py": (
            "import os, pytest\n\n"
            "pytestmark = pytest.mark.skipif(not os.environ.get('RUN_SLOW'), reason='set RUN_SLOW=1')\n\n"
            "def test_a():\n    pass\n\ndef test_b():\n    pass\n"
        )
    },
    "nothing collected": {"tests/helpers.py": "X = 1\n"},
    "xfail only": {"tests/test_a.py": "import pytest\n\n@pytest.mark.xfail\ndef test_a():\n    assert 0\n"},
    "xpass only": {"tests/test_a.py": "import pytest\n\n@pytest.mark.xfail\ndef test_a():\n    pass\n"},
    "interrupted": {
        "tests/test_a.py": (
            "def test_a():\n    pass\n\ndef test_b():\n    raise KeyboardInterrupt\n\ndef test_c():\n    pass\n"
        )
    },
    "a collection error": {
        "tests/test_a.py": "def test_a():\n    pass\n",
        "tests/test_b.py": "import no_such_module\n",
    },
}

# suite, extra configuration: outcome, exit code, the summary line's start
CASES = [
    ("all passed", "", "passed", 0, "testlane: PASSED — 2 passed"),
    ("a failure", "", "failed", 1, "testlane: FAILED — 1 failed, 1 passed in "),
    ("a fixture error", "", "failed", 1, "testlane: FAILED — 1 error in "),
    ("all skipped by the lane", "", "no_tests", 5, "testlane: FAILED — no tests ran — 2 skipped in "),
    # the project's own skip marks: its decision, pytest's 0 stands (said as it is: nothing passed)
    ("all skipped by the project", "", "passed", 0, "testlane: PASSED — 0 passed, 2 skipped"),
    ("nothing collected", "", "no_tests", 5, "testlane: FAILED — no tests ran — 0 tests ran in "),
    ("xfail only", "", "passed", 0, "testlane: PASSED — 1 xfailed"),
    ("xpass only", "", "passed", 0, "testlane: PASSED — 1 xpassed"),
    ("interrupted", "", "interrupted", 2, "testlane: INTERRUPTED (not a success) — 1 passed, 1 incomplete in "),
    # pytest's 2 ("Interrupted: 1 error during collection") stands; the verdict says what it is
    ("a collection error", "", "collection_error", 2, "testlane: ERROR — collection failed — 0 tests ran in "),
    (
        "all skipped by the lane",
        '[tool.testlane.lanes]\nall_skipped = "pass"',
        "passed",
        0,
        'testlane: PASSED — nothing was tested (lanes.all_skipped = "pass") — 2 skipped',
    ),
    (
        "all skipped by the project",
        '[tool.testlane.lanes]\nall_skipped = "fail"',
        "passed",
        0,
        "testlane: PASSED — 0 passed, 2 skipped",
    ),
]


def exit_text(code: int) -> str:
    return "" if code == 0 else f"(exit {code})"


def check_reports(root: Path, text: str, outcome: str, code: int, start: str) -> None:
    """The digest's last line, the JSON document and the JSON Lines finish event agree with ``code``."""
    last = text.rstrip().splitlines()[-1]
    assert last.startswith(start), text
    assert last.endswith(exit_text(code)), text
    if code:
        assert "PASSED" not in text
    doc = json.loads((root / "report.json").read_text())
    assert (doc["outcome"], doc["exit_code"], doc["success"]) == (outcome, code, code == 0)
    assert doc["summary_line"].split(" in ")[0] == last.split(" in ")[0]
    finish = [json.loads(line) for line in (root / "events.jsonl").read_text().splitlines()][-1]
    assert (finish["event"], finish["outcome"], finish["exit_code"]) == ("finish", outcome, code)


@pytest.mark.parametrize(
    ("suite", "extra", "outcome", "code", "start"), CASES, ids=[c[0] + (", pass" if c[1] else "") for c in CASES]
)
def test_plain_pytest_digest_json_and_exit_code_agree(
    pytester: pytest.Pytester, suite: str, extra: str, outcome: str, code: int, start: str
) -> None:
    plain_project(pytester, extra)
    write_files(pytester.path, SUITES[suite])
    reports = ("--report-json", "report.json", "--report-jsonl", "events.jsonl")
    digest = run_inner(pytester, "--digest", *reports)
    assert digest.ret == code, digest.stdout.str()
    check_reports(pytester.path, digest.stdout.str(), outcome, code, start)
    terminal = run_inner(pytester, *reports)  # pytest's own output: the same exit status, the same reports
    assert terminal.ret == code, terminal.stdout.str()
    check_reports(
        pytester.path, json.loads((pytester.path / "report.json").read_text())["digest"], outcome, code, start
    )


def test_pytests_own_output_says_why_nothing_was_tested(pytester: pytest.Pytester) -> None:
    plain_project(pytester)
    write_files(pytester.path, SUITES["all skipped by the lane"])
    result = run_inner(pytester)
    assert result.ret == 5
    result.stdout.fnmatch_lines(
        [
            "testlane: all 2 selected tests are integration tests, skipped because the integration lane is off: "
            "nothing was tested, exit status 5 (no tests ran). Run them with `testlane run` (services included) "
            "or `pytest --it`."
        ]
    )
    for path in ("tests/integration/test_a.py", "tests/test_b_it.py"):
        (pytester.path / path).unlink()
    write_files(pytester.path, SUITES["all skipped by the project"])
    marks = run_inner(pytester)  # the project's own skips: pytest's 0 and pytest's words, nothing added
    assert marks.ret == 0, marks.stdout.str()
    marks.stdout.fnmatch_lines(["*2 skipped in *"])
    assert "testlane:" not in marks.stdout.str()
    (pytester.path / "tests/test_a.py").unlink()
    write_files(pytester.path, SUITES["a collection error"])
    (pytester.path / "tests/test_a.py").unlink()
    collection = run_inner(pytester)  # pytest's 2 and its own words: "Interrupted: 1 error during collection"
    assert collection.ret == 2
    collection.stdout.fnmatch_lines(["*Interrupted: 1 error during collection*"])
    assert "pytest's own code was" not in collection.stdout.str()


RUN_CASES = [
    ("all passed", "passed", 0, "testlane: PASSED — 2 passed"),
    ("a failure", "failed", 1, "testlane: FAILED — 1 failed, 1 passed in "),
    ("all skipped by the project", "passed", 0, "testlane: PASSED — 0 passed, 2 skipped"),
    ("nothing collected", "no_tests", 5, "testlane: FAILED — no tests ran — 0 tests ran in "),
    ("xpass only", "passed", 0, "testlane: PASSED — 1 xpassed"),
    ("a collection error", "collection_error", 2, "testlane: ERROR — collection failed — 0 tests ran in "),
]


@pytest.mark.parametrize(("suite", "outcome", "code", "start"), RUN_CASES, ids=[c[0] for c in RUN_CASES])
def test_testlane_run_exits_with_the_verdicts_code(
    pytester: pytest.Pytester, suite: str, outcome: str, code: int, start: str
) -> None:
    plain_project(pytester)
    write_files(pytester.path, SUITES[suite])
    args = ["run", "--", "-p", "no:cacheprovider", "-p", "no:django", "--report-json", "report.json"]
    result = run_cli([*args, "--report-jsonl", "events.jsonl"], cwd=pytester.path, env=clean_env({"CLAUDECODE": "1"}))
    assert result.returncode == code, result.stdout + result.stderr
    check_reports(pytester.path, result.stdout, outcome, code, start)
