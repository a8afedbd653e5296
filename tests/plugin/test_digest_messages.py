"""Issue 16, seen 3: the digest never cuts testlane's own message or hint — the part that says what to do.
The budget is met by folding the excerpts (diffs, logs, output) and dropping whole later groups, named in
one line with the command that shows them."""

from __future__ import annotations

import pytest

from tests.helpers import plain_project, run_inner, write_files

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("plain_env")]

# Three of testlane's messages (the unit lane's service-fixture error, the guard's LaneError with its
# hint, a blocked connection) after ten noisy failures of the project's own.
NOISY = "\n".join(
    f"def test_noisy_{i}():\n    print('output line ' * 30)\n    assert {{'k': 'v' * 300}} == {{'k': 'w' * 300}}\n"
    for i in range(10)
)
SUITE = {
    "tests/test_a.py": (
        "import socket\nimport testlane.db\n\n"
        "def test_uses_a_service(pg_url):\n    pass\n\n"
        "def test_calls_a_helper():\n"
        "    with testlane.db.database('postgresql://localhost/app'):\n        pass\n\n"
        "def test_connects():\n    socket.create_connection(('127.0.0.1', 9), timeout=1)\n"
    ),
    "tests/test_b.py": NOISY,
}

LANE_MESSAGE = (
    "tests/test_a.py::test_uses_a_service is in the unit lane but uses testlane's service fixture 'pg_url' "
    "(through 'pg_database'), which needs a real server. Mark the test @pytest.mark.integration, or move it to "
    "tests/integration/ or a *_it.py file, or list its files in [tool.testlane.lanes] integration_patterns; "
    "in the unit lane, use a fake instead."
)
GUARD_MESSAGE = "LaneError: testlane.db.database() needs a real database, but this test is in the unit lane."
GUARD_HINT = (
    "hint: run the integration lane: `testlane run`, or `pytest --it` / TESTLANE_IT=1; mark the test "
    "`@pytest.mark.integration` or put it in tests/integration/ or a *_it.py file. Outside pytest, pass "
    "allow=True if you mean it."
)


@pytest.mark.parametrize("budget", ["4000", "1500", "300"])
def test_testlanes_messages_are_whole_at_any_budget(pytester: pytest.Pytester, budget: str) -> None:
    plain_project(pytester)
    write_files(pytester.path, SUITE)
    result = run_inner(pytester, "--digest", "--digest-budget", budget)
    assert result.ret == 1
    text = result.stdout.str()
    assert text.startswith("[1] ERROR in setup — ")
    assert LANE_MESSAGE in text
    if budget == "4000":
        blocked = text.split("NetworkBlockedError: ", 1)[1].split("\n", 1)[0]
        assert blocked.startswith("tests/test_a.py::test_connects tried to connect to 127.0.0.1:9 from the unit lane")
        assert blocked.endswith('[tool.testlane.lanes] unit_allow_hosts = ["127.0.0.1:9"] (that port only).')
    if budget != "300":
        assert GUARD_MESSAGE in text and GUARD_HINT in text
        assert len(text) <= int(budget)
    if budget == "1500":
        assert "more root causes (" in text and "not shown: rerun them with `pytest --digest " in text
    if budget == "300":  # only the first group's message fits, whole: the others are one line, with how to see them
        assert "… 12 more root causes (12 tests) not shown: rerun them with `pytest --digest " in text
        assert "tests/test_a.py::test_calls_a_helper tests/test_a.py::test_connects" in text
    assert text.rstrip().splitlines()[-1].startswith("testlane: FAILED — 12 failed, 1 error in ")
