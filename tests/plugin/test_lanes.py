"""Lanes, the unit lane's network guard, and sharding, on small generated projects."""

from __future__ import annotations

import json
import socket

import pytest

from tests.helpers import plain_project, run_inner

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("plain_env")]

LANE_SUITE = {
    "tests/unit/test_fast.py": "def test_unit():\n    pass\n",
    "tests/integration/test_db.py": "def test_in_folder():\n    pass\n",
    "tests/test_orders_it.py": "def test_by_name():\n    pass\n",
    "tests/test_marked.py": "import pytest\n\n@pytest.mark.integration\ndef test_marked():\n    pass\n",
}


def make_lane_suite(pytester: pytest.Pytester, extra: str = "") -> None:
    plain_project(pytester, extra)
    for path, body in LANE_SUITE.items():
        target = pytester.path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body)


def test_integration_tests_skip_without_the_flag_with_one_line_saying_how(pytester: pytest.Pytester) -> None:
    make_lane_suite(pytester)
    result = run_inner(pytester)
    result.assert_outcomes(passed=1, skipped=3)
    result.stdout.fnmatch_lines(
        ["testlane: 3 integration tests skipped: the integration lane is off. Run them with `testlane run`*"]
    )


@pytest.mark.parametrize("how", ["--it", "env"])
def test_the_flag_runs_both_lanes(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    make_lane_suite(pytester)
    if how == "env":
        monkeypatch.setenv("TESTLANE_IT", "1")
    result = run_inner(pytester, *(["--it"] if how == "--it" else []))
    result.assert_outcomes(passed=4)
    assert "integration tests skipped" not in result.stdout.str()


def test_lane_selects_one_lane(pytester: pytest.Pytester) -> None:
    make_lane_suite(pytester)
    only_it = run_inner(pytester, "--lane", "it")
    only_it.assert_outcomes(passed=3, deselected=1)
    only_unit = run_inner(pytester, "--lane", "unit", "-m", "not integration")
    only_unit.assert_outcomes(passed=1, deselected=1)  # the files the patterns select are not even collected
    marked = run_inner(pytester, "--it", "-m", "integration")  # lane membership is a marker too
    marked.assert_outcomes(passed=3, deselected=1)


NO_LANES = {"tests/test_orders.py": "def test_one():\n    pass\n\ndef test_two():\n    pass\n"}


def test_a_suite_without_lanes_has_no_unit_lane_by_name(pytester: pytest.Pytester) -> None:
    """A suite that declares no lanes is all integration tests when a lane is asked for by name: `--lane it` runs
    every test, `--lane unit` none, saying why and how to have a unit lane (it ran them all in the unit lane,
    without their services: the gate's unit check failed on a suite `testlane run` passes). Plain `pytest`
    runs them as it always did."""
    plain_project(pytester)
    for path, body in NO_LANES.items():
        (pytester.path / path).parent.mkdir(parents=True, exist_ok=True)
        (pytester.path / path).write_text(body)
    run_inner(pytester, "--lane", "it").assert_outcomes(passed=2)
    run_inner(pytester).assert_outcomes(passed=2)
    unit = run_inner(pytester, "--lane", "unit")
    unit.assert_outcomes(deselected=2)
    assert unit.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    unit.stdout.fnmatch_lines(
        ["testlane: --lane unit: 2 integration-lane test(s) deselected (the suite declares no lanes, so every test is*"]
    )
    digest = run_inner(pytester, "--lane", "unit", "--digest")
    assert digest.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    digest.stdout.fnmatch_lines(["no tests ran: --lane unit: the suite declares no lanes*integration_patterns"])


NEEDS_URL = "import os\n\nassert os.environ.get('TEST_DATABASE_URLS'), 'set TEST_DATABASE_URLS'\n"
IMPORT_TIME = {
    "tests/unit/test_fast.py": "def test_unit():\n    pass\n",
    "tests/integration/conftest.py": NEEDS_URL,
    "tests/integration/test_db.py": NEEDS_URL + "\ndef test_in_folder():\n    pass\n",
    "tests/test_orders_it.py": NEEDS_URL + "\ndef test_by_name():\n    pass\n",
    "tests/test_databases.py": NEEDS_URL + "\ndef test_named():\n    pass\n",
    "tests/test_marked.py": "import pytest\n\n@pytest.mark.integration\ndef test_marked():\n    pass\n",
}


def test_lane_unit_does_not_import_the_files_the_integration_patterns_select(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Integration modules that need their variables at import time (encode/databases asserts
    TEST_DATABASE_URLS) broke `--lane unit` with collection errors, though every test in them is deselected.
    Plain `pytest` still collects them, skipping their tests."""
    patterns = (
        '[tool.testlane.lanes]\nintegration_patterns = ["*_it.py", "tests/integration/*", "tests/test_databases.py"]'
    )
    plain_project(pytester, patterns)
    for path, body in IMPORT_TIME.items():
        (pytester.path / path).parent.mkdir(parents=True, exist_ok=True)
        (pytester.path / path).write_text(body)
    monkeypatch.delenv("TEST_DATABASE_URLS", raising=False)
    unit = run_inner(pytester, "--lane", "unit")
    unit.assert_outcomes(passed=1, deselected=1)
    assert unit.ret == pytest.ExitCode.OK, unit.stdout.str()
    unit.stdout.fnmatch_lines(
        [
            "testlane: --lane unit: 1 integration-lane test(s) deselected.",
            "testlane: --lane unit: 3 integration-lane file(s) not collected (lanes.integration_patterns)*",
        ]
    )
    assert "TEST_DATABASE_URLS" not in unit.stdout.str()
    plain = run_inner(pytester)
    assert plain.ret == pytest.ExitCode.INTERRUPTED and "set TEST_DATABASE_URLS" in plain.stdout.str()
    monkeypatch.setenv("TEST_DATABASE_URLS", "sqlite://")
    run_inner(pytester).assert_outcomes(passed=1, skipped=4)
    # The default patterns too: the files they select declare the lanes, so the unit test still runs.
    plain_project(pytester)
    (pytester.path / "tests" / "test_databases.py").unlink()
    monkeypatch.delenv("TEST_DATABASE_URLS")
    run_inner(pytester, "--lane", "unit").assert_outcomes(passed=1, deselected=1)
    (pytester.path / "tests" / "unit" / "test_fast.py").unlink()
    (pytester.path / "tests" / "test_marked.py").unlink()
    nothing = run_inner(pytester, "--lane", "unit", "--digest")
    assert nothing.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    nothing.stdout.fnmatch_lines(["no tests ran: --lane unit: all 2 test file(s) are in the integration lane*"])


def test_integration_patterns_come_from_config(pytester: pytest.Pytester) -> None:
    make_lane_suite(pytester, '[tool.testlane.lanes]\nintegration_patterns = ["tests/unit/*"]')
    result = run_inner(pytester)
    result.assert_outcomes(passed=2, skipped=2)  # only tests/unit/ and the marked test are integration now


def test_service_fixture_in_the_unit_lane_names_the_test_and_the_fix(pytester: pytest.Pytester) -> None:
    plain_project(pytester)
    pytester.makepyfile(test_x="def test_wants_db(pg_conn):\n    pass\n")
    result = run_inner(pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*test_x.py::test_wants_db is in the unit lane but uses testlane's service fixture*'pg_conn'*"
            "Mark the test @pytest.mark.integration*"
        ]
    )


def test_the_unit_lane_message_names_the_fixture_asked_for_and_what_it_pulled_in(pytester: pytest.Pytester) -> None:
    plain_project(pytester)
    pytester.makepyfile(test_x="def test_one(pg_conn):\n    pass\n\ndef test_two(redis_client, pg_url):\n    pass\n")
    result = run_inner(pytester)
    assert result.ret == 1
    text = " ".join(result.stdout.str().split())
    assert (
        "test_x.py::test_one is in the unit lane but uses testlane's service fixture 'pg_conn' (through "
        "'pg_database'), which needs a real server. Mark" in text
    )
    assert (
        "test_x.py::test_two is in the unit lane but uses testlane's service fixtures 'redis_client' and 'pg_url' "
        "(through 'redis_db' and 'pg_database'), which need real servers. Mark" in text
    )


NETWORK_SUITE = """
import socket
import pytest

def test_socket_to_postgres_port():
    socket.create_connection(("127.0.0.1", 5432), timeout=1)

def test_psycopg():
    import psycopg
    psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", connect_timeout=1)

def test_swallowed():
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1)
    except Exception:
        pass

def test_unix_sockets_are_fine():
    a, b = socket.socketpair()
    a.sendall(b"x")
    assert b.recv(1) == b"x"

@pytest.mark.integration
def test_integration_may_connect(listening_port):
    socket.create_connection(("127.0.0.1", listening_port), timeout=1).close()
"""


@pytest.fixture
def listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock
    sock.close()


def test_unit_lane_network_is_blocked_naming_host_and_port(pytester: pytest.Pytester, listener: socket.socket) -> None:
    plain_project(pytester)
    pytester.makeconftest(
        f"import pytest\n\n@pytest.fixture\ndef listening_port():\n    return {listener.getsockname()[1]}\n"
    )
    pytester.makepyfile(test_net=NETWORK_SUITE)
    result = run_inner(pytester, "--it", "-rfE")
    result.assert_outcomes(passed=3, failed=2, errors=1)  # the swallowed one fails in teardown
    out = result.stdout.str()
    assert "test_net.py::test_socket_to_postgres_port tried to connect to 127.0.0.1:5432 from the unit lane" in out
    assert "test_net.py::test_psycopg tried to connect to 127.0.0.1:5432 (PostgreSQL, via libpq)" in out
    assert (
        "test_net.py::test_swallowed tried to connect to 127.0.0.1:6379 from the unit lane; the connection was "
        "blocked (and the error swallowed" in out
    )
    # The fix for a database or cache reached from the unit lane is the lane, never allowing the host.
    assert "[tool.testlane.lanes] integration_patterns" in out
    assert "unit_allow_hosts" not in out


INTERLEAVED = """
import socket
import pytest

def test_unit_first(listening_port):
    with pytest.raises(Exception, match="from the unit lane"):
        socket.create_connection(("127.0.0.1", listening_port), timeout=1)

@pytest.mark.integration
def test_integration_between(listening_port):
    assert "connect" not in vars(socket.socket)  # the unit lane's patches are off
    socket.create_connection(("127.0.0.1", listening_port), timeout=1).close()

def test_unit_after_an_integration_test(listening_port):
    with pytest.raises(Exception, match="test_unit_after_an_integration_test tried to connect"):
        socket.create_connection(("127.0.0.1", listening_port), timeout=1)

def test_unit_last(listening_port):
    with pytest.raises(Exception, match="test_unit_last tried to connect"):
        socket.create_connection(("127.0.0.1", listening_port), timeout=1)
"""


def test_the_guard_blocks_every_unit_test_around_integration_tests_and_is_gone_after_the_run(
    pytester: pytest.Pytester, listener: socket.socket
) -> None:
    """The patches stay on from one unit-lane test to the next (the running test's check behind them), come
    off for an integration-lane test, and are gone once the tests are done."""
    plain_project(pytester)
    pytester.makeconftest(
        "import socket, pytest\n\n"
        f"@pytest.fixture\ndef listening_port():\n    return {listener.getsockname()[1]}\n\n"
        "def pytest_sessionfinish(session):\n"
        "    print('patched after the run:', 'connect' in vars(socket.socket))\n"
    )
    pytester.makepyfile(test_order=INTERLEAVED)
    result = run_inner(pytester, "--it", "-s")
    result.assert_outcomes(passed=4, errors=3)  # each unit test's blocked attempt also fails its teardown
    out = result.stdout.str()
    for name in ("test_unit_first", "test_unit_after_an_integration_test", "test_unit_last"):
        assert f"test_order.py::{name} tried to connect to 127.0.0.1:" in out
    assert "test_integration_between tried" not in out
    result.stdout.fnmatch_lines(["*patched after the run: False*"])


def test_allowed_hosts_are_allowed_in_the_unit_lane(pytester: pytest.Pytester, listener: socket.socket) -> None:
    plain_project(pytester, '[tool.testlane.lanes]\nunit_allow_hosts = ["127.0.0.1"]')
    port = listener.getsockname()[1]
    pytester.makepyfile(
        test_ok=f"import socket\n\ndef test_local():\n    socket.create_connection(('localhost', {port})).close()\n"
    )
    run_inner(pytester).assert_outcomes(passed=1)


def test_an_allowed_host_and_port_allows_that_port_only(pytester: pytest.Pytester, listener: socket.socket) -> None:
    """`unit_allow_hosts = ["127.0.0.1:8080"]` was taken for a host named so and matched nothing; the guard's hint
    offered the whole host, which opens every server on it (databases too) to the unit lane."""
    port = listener.getsockname()[1]
    plain_project(pytester, f'[tool.testlane.lanes]\nunit_allow_hosts = ["127.0.0.1:{port}"]')
    pytester.makepyfile(
        test_ok=f"import socket\n\ndef test_that_port():\n    socket.create_connection(('127.0.0.1', {port})).close()\n"
        "\ndef test_another_port():\n    socket.create_connection(('127.0.0.1', 9)).close()\n"
    )
    result = run_inner(pytester)
    result.assert_outcomes(passed=1, failed=1)
    assert 'unit_allow_hosts = ["127.0.0.1:9"] (that port only).' in result.stdout.str()


def test_a_refused_connection_s_traceback_shows_no_frame_of_the_guard(pytester: pytest.Pytester) -> None:
    """The refusal's traceback showed ~15 lines of testlane's own frames (egress.connect, the guard's dispatch)
    between the test's call and the message."""
    plain_project(pytester)
    pytester.makepyfile(
        test_x="import socket\n\ndef test_connects():\n    socket.create_connection(('127.0.0.1', 9))\n"
    )
    result = run_inner(pytester, "--tb=long")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "NetworkBlockedError" in out and "socket.create_connection(('127.0.0.1', 9))" in out, out
    assert "egress.py" not in out and "network_guard.py" not in out, out


def test_network_guard_can_be_switched_off(pytester: pytest.Pytester, listener: socket.socket) -> None:
    plain_project(pytester, "[tool.testlane.lanes]\nblock_network = false")
    port = listener.getsockname()[1]
    pytester.makepyfile(
        test_ok=f"import socket\n\ndef test_any():\n    socket.create_connection(('127.0.0.1', {port})).close()\n"
    )
    run_inner(pytester).assert_outcomes(passed=1)


SKEWED = "\n".join(f"def test_{i}():\n    pass\n" for i in range(40))
# A skewed suite: a few long tests, many short ones (recorded durations, as users commit them).
SKEWED_DURATIONS = {
    f"test_many.py::test_{i}": (30.0 if i < 3 else 8.0 if i < 8 else 0.5 + (i % 5) * 0.3) for i in range(40)
}


def passed(result: pytest.RunResult) -> list[str]:
    return [line.split(" ")[0] for line in result.outlines if " PASSED" in line]


def shard_runs(pytester: pytest.Pytester, shards: int, *args: str) -> list[list[str]]:
    """Run every shard of a sharded suite with the documented option; the node ids each one ran."""
    runs = []
    for index in range(1, shards + 1):
        result = run_inner(pytester, "--shard", f"{index}/{shards}", "-v", *args)
        assert result.ret == 0, result.stdout.str()
        runs.append(passed(result))
    return runs


def test_shards_cover_every_test_once_and_balance_recorded_durations(pytester: pytest.Pytester) -> None:
    plain_project(pytester)
    pytester.makepyfile(test_many=SKEWED)
    (pytester.path / ".testlane").mkdir()
    (pytester.path / ".testlane" / "durations.json").write_text(json.dumps(SKEWED_DURATIONS))
    runs = shard_runs(pytester, 3)
    assert all(runs), runs
    seen = [nodeid for ran in runs for nodeid in ran]
    assert sorted(seen) == sorted(SKEWED_DURATIONS)  # every test exactly once
    totals = [sum(SKEWED_DURATIONS[nodeid] for nodeid in ran) for ran in runs]
    assert (max(totals) - min(totals)) / max(totals) < 0.20, totals  # balanced by lanes.durations_file
    assert shard_runs(pytester, 3) == runs  # deterministic


def test_shard_is_pytest_splits_split(pytester: pytest.Pytester) -> None:
    """`--shard I/N` is `--splits N --group I --splitting-algorithm least_duration` (docs/lanes.md)."""
    plain_project(pytester)
    pytester.makepyfile(test_many=SKEWED)
    (pytester.path / ".testlane").mkdir()
    (pytester.path / ".testlane" / "durations.json").write_text(json.dumps(SKEWED_DURATIONS))
    for index in (1, 2):
        shard = passed(run_inner(pytester, "--shard", f"{index}/2", "-v"))
        split = run_inner(
            pytester, "-v", "--splits", "2", "--group", str(index), "--splitting-algorithm", "least_duration"
        )
        assert shard == passed(split) != []


def test_store_durations_writes_lanes_durations_file(pytester: pytest.Pytester) -> None:
    plain_project(pytester)
    pytester.makepyfile(test_few="def test_a():\n    pass\n\ndef test_b():\n    pass\n")
    run_inner(pytester, "--store-durations").assert_outcomes(passed=2)  # .testlane/ does not exist yet
    recorded = json.loads((pytester.path / ".testlane" / "durations.json").read_text())
    assert set(recorded) == {"test_few.py::test_a", "test_few.py::test_b"}
    assert not (pytester.path / ".test_durations").exists()


def test_store_durations_under_xdist_records_every_test(pytester: pytest.Pytester) -> None:
    plain_project(pytester)
    pytester.makepyfile(test_many=SKEWED)
    run_inner(pytester, "--store-durations", "-n", "2").assert_outcomes(passed=40)
    recorded = json.loads((pytester.path / ".testlane" / "durations.json").read_text())
    assert set(recorded) == set(SKEWED_DURATIONS)


def test_durations_path_given_wins_over_the_setting(pytester: pytest.Pytester) -> None:
    plain_project(pytester, '[tool.testlane.lanes]\ndurations_file = "ci/durations.json"')
    pytester.makepyfile(test_few="def test_a():\n    pass\n")
    run_inner(pytester, "--store-durations").assert_outcomes(passed=1)
    assert json.loads((pytester.path / "ci" / "durations.json").read_text()).keys() == {"test_few.py::test_a"}
    run_inner(pytester, "--store-durations", "--durations-path", "mine.json").assert_outcomes(passed=1)
    assert json.loads((pytester.path / "mine.json").read_text()).keys() == {"test_few.py::test_a"}


def test_not_opted_in_pytest_split_is_left_as_it_is(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_few="def test_a():\n    pass\n")  # no [tool.testlane]: pytest-split's defaults
    run_inner(pytester, "--store-durations").assert_outcomes(passed=1)
    assert (pytester.path / ".test_durations").exists()
    assert not (pytester.path / ".testlane").exists()


def test_bad_shard_option_is_a_usage_error(pytester: pytest.Pytester) -> None:
    plain_project(pytester)
    pytester.makepyfile(test_a="def test_a():\n    pass\n")
    result = run_inner(pytester, "--shard", "4/3")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--shard '4/3': expected I/N with 1 <= I <= N*"])
    result = run_inner(pytester, "--shard", "1/3", "--splits", "3", "--group", "2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--shard I/N is --splits N --group I: give one or the other, not both.*"])


def test_unreadable_durations_file_is_one_line(pytester: pytest.Pytester) -> None:
    plain_project(pytester)
    pytester.makepyfile(test_a="def test_a():\n    pass\n")
    (pytester.path / ".testlane").mkdir()
    (pytester.path / ".testlane" / "durations.json").write_text('{\n<<<<<<< HEAD\n "test_a.py::test_a": 1\n}\n')
    result = run_inner(pytester, "--shard", "1/2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*the durations file */.testlane/durations.json is not JSON*"])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()
