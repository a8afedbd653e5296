"""Adoption without surprises (issue 14): installing testlane changes nothing until a project opts in; a suite
that never declared lanes runs under `testlane run`; a project's own fixture named like testlane's is the
project's; discipline findings are not Python warnings; an opted-in plain `pytest` that tested nothing fails."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import plain_project, run_inner

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("plain_env")]

WITHOUT_TESTLANE = ("-p", "no:testlane", "-p", "no:testlane_reports")

UNCONFIGURED = """
[project]
name = "plain"
version = "0"
[tool.pytest.ini_options]
filterwarnings = ["error"]
asyncio_default_fixture_loop_scope = "function"
"""

# A project's own conftest: fixtures named like testlane's, from its own variables.
OWN_CONFTEST = """
import os
import pytest

@pytest.fixture
def redis_url():
    return os.environ.get("APP_REDIS_URL", "redis://127.0.0.1:6379/0")

@pytest.fixture
def postgres():
    return {"host": "127.0.0.1", "port": int(os.environ.get("APP_DB_PORT", "5432"))}
"""

EXISTING_SUITE = {
    # talks to "its database" (a listening socket) from its own variables
    "tests/test_db.py": (
        "import os, socket\n\n"
        "def test_talks_to_its_database(postgres):\n"
        "    socket.create_connection((postgres['host'], postgres['port']), timeout=2).close()\n\n"
        "def test_own_redis_url(redis_url):\n"
        "    assert redis_url.startswith('redis://')\n"
    ),
    # names that mean something to testlane's lanes
    "tests/integration/test_flow.py": "def test_flow():\n    pass\n",
    "tests/test_orders_it.py": "def test_orders():\n    pass\n",
    # what testlane's discipline reports: a module-level executor's thread, a changed variable
    "tests/test_background.py": (
        "import os\nfrom concurrent.futures import ThreadPoolExecutor\n\n"
        "EXECUTOR = ThreadPoolExecutor(max_workers=1)\n\n"
        "def test_submits_work():\n"
        "    assert EXECUTOR.submit(lambda: 2).result() == 2\n\n"
        "def test_sets_a_variable():\n"
        "    os.environ['APP_MODE'] = 'test'\n"
    ),
    # nothing added to the test: no timeout, no lane marker
    "tests/test_markers.py": (
        "def test_no_markers_added(request):\n    assert [m.name for m in request.node.iter_markers()] == []\n"
    ),
    # a fixture only testlane defines: pytest's own "not found", with or without testlane
    "tests/test_missing.py": "def test_wants_testlanes_fixture(pg_url):\n    pass\n",
}


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock
    sock.close()


def write(pytester: pytest.Pytester, files: dict[str, str]) -> None:
    for path, body in files.items():
        target = pytester.path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body)


def lines_of_testlane(result: pytest.RunResult) -> list[str]:
    return [line for line in result.outlines if line.lower().startswith("testlane")]


# ----------------------------------------------------------------------------- seen 2: installed changes nothing


def test_an_unconfigured_project_gives_the_same_results_with_and_without_testlane(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, listener: socket.socket
) -> None:
    pytester.makefile(".toml", pyproject=UNCONFIGURED)
    pytester.makeconftest(OWN_CONFTEST)
    write(pytester, EXISTING_SUITE)
    monkeypatch.setenv("APP_DB_PORT", str(listener.getsockname()[1]))
    with_testlane = run_inner(pytester, "-rA")
    without = run_inner(pytester, "-rA", *WITHOUT_TESTLANE)
    expected = {"passed": 7, "errors": 1}
    assert without.parseoutcomes() == expected, without.stdout.str()
    assert with_testlane.parseoutcomes() == expected, with_testlane.stdout.str()
    assert with_testlane.ret == without.ret == pytest.ExitCode.TESTS_FAILED
    assert "fixture 'pg_url' not found" in with_testlane.stdout.str()
    # The one line testlane may add: how to opt in, because a test wanted one of its fixtures.
    assert lines_of_testlane(with_testlane) == [
        "testlane: fixture 'pg_url' is testlane's, and this project has not opted in to testlane: add a "
        "[tool.testlane] table to pyproject.toml (`testlane init` writes one) or run `testlane run`."
    ]


def test_an_unconfigured_green_suite_prints_nothing_of_testlanes(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", pyproject=UNCONFIGURED)
    write(pytester, {"tests/integration/test_flow.py": "def test_flow():\n    pass\n"})
    result = run_inner(pytester)
    assert result.ret == 0 and result.parseoutcomes() == {"passed": 1}
    assert lines_of_testlane(result) == []


PROBE = """
import os

def test_probe(request):
    on = request.config.pluginmanager.get_plugin("testlane-session") is not None
    assert on == (os.environ["EXPECT_TESTLANE"] == "1"), on
"""


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("nothing", False),
        ("table", True),
        ("empty table", True),
        ("TESTLANE_IT", True),
        ("TESTLANE_SERVICES_FILE", True),
        ("TESTLANE_CONFIG", True),
        ("--it", True),
        ("--digest", True),
        ("PYTEST_ADDOPTS", True),
    ],
)
def test_what_opts_a_project_in(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, how: str, expected: bool
) -> None:
    tables = {"table": "[tool.testlane]\nservices = []\n", "empty table": "[tool.testlane]\n"}
    pytester.makefile(".toml", pyproject=UNCONFIGURED + tables.get(how, ""))
    pytester.makepyfile(test_probe=PROBE)
    monkeypatch.setenv("EXPECT_TESTLANE", "1" if expected else "0")
    args: list[str] = []
    if how == "TESTLANE_IT":
        monkeypatch.setenv("TESTLANE_IT", "1")
    elif how == "TESTLANE_SERVICES_FILE":
        monkeypatch.setenv("TESTLANE_SERVICES_FILE", str(pytester.path / "services.json"))
    elif how == "TESTLANE_CONFIG":
        other = pytester.path / "elsewhere" / "pyproject.toml"
        other.parent.mkdir()
        other.write_text("[tool.testlane]\nservices = []\n")
        monkeypatch.setenv("TESTLANE_CONFIG", str(other))
    elif how == "PYTEST_ADDOPTS":
        monkeypatch.setenv("PYTEST_ADDOPTS", "--lane all")
    elif how.startswith("--"):
        args.append(how)
    result = run_inner(pytester, *args)
    if how == "--digest":  # the digest's one line for a green run
        assert "1 passed" in result.stdout.str() and result.ret == 0, result.stdout.str()
    else:
        result.assert_outcomes(passed=1)


# ----------------------------------------------------------------------------- seen 2: nothing tested is not green

ONLY_INTEGRATION = {
    "tests/integration/test_a.py": "def test_a():\n    pass\n",
    "tests/test_b_it.py": "def test_b():\n    pass\n",
}


def test_opted_in_plain_pytest_that_skipped_every_test_for_lack_of_services_fails(pytester: pytest.Pytester) -> None:
    plain_project(pytester)
    write(pytester, ONLY_INTEGRATION)
    result = run_inner(pytester)
    result.assert_outcomes(skipped=2)
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    result.stdout.fnmatch_lines(
        [
            "testlane: all 2 selected tests are integration tests, skipped because the integration lane is off: "
            "nothing was tested, exit status 5 (no tests ran). Run them with `testlane run`*"
        ]
    )
    digest = run_inner(pytester, "--digest").stdout.str()
    assert "all 2 selected tests are integration tests, skipped because the integration lane is off" in digest


def test_all_skipped_pass_lets_it_exit_0_and_a_suite_with_unit_tests_is_green(pytester: pytest.Pytester) -> None:
    plain_project(pytester, '[tool.testlane.lanes]\nall_skipped = "pass"')
    write(pytester, ONLY_INTEGRATION)
    result = run_inner(pytester)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["testlane: all 2 selected tests are integration tests*exit status 0*"])
    plain_project(pytester)
    write(pytester, {"tests/unit/test_c.py": "def test_c():\n    pass\n"})
    mixed = run_inner(pytester)
    mixed.assert_outcomes(passed=1, skipped=2)
    assert mixed.ret == 0


FALLBACK_SUITE = (
    "import os, sqlite3\n\n"
    "URL = os.environ.get('DATABASE_URL', 'sqlite://')  # mealie's settings fall back the same way\n\n"
    "def test_reads_its_settings():\n"
    "    assert URL == 'sqlite://'\n\n"
    "def test_uses_the_fallback():\n"
    "    assert sqlite3.connect(':memory:').execute('SELECT 1').fetchone() == (1,)\n"
)


def test_plain_pytest_passes_on_a_fallback_that_needs_no_network_as_docs_adopting_md_says(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/adopting.md said plain `pytest` after opting in "does not go green while testing nothing"; mealie (SQLite
    when DATABASE_URL is unset) went green, 18 passed, with one line saying the mapping was not applied. The guide
    now shows that run: its notice line is the one pytest prints, and the run passes."""
    guide = (Path(__file__).resolve().parents[2] / "docs" / "adopting.md").read_text()
    shown = [line for line in guide.splitlines() if line.startswith("testlane: [tool.testlane.env] (DATABASE_URL)")]
    assert len(shown) == 1, "docs/adopting.md shows plain pytest's notice once"
    assert "passes, testing the fallback" in guide and "does not go green" not in guide
    monkeypatch.delenv("DATABASE_URL", raising=False)
    plain_project(pytester, '[tool.testlane.env]\nDATABASE_URL = "{postgres.url}"')
    write(pytester, {"tests/test_app.py": FALLBACK_SUITE})
    result = run_inner(pytester, "-q")
    result.assert_outcomes(passed=2)
    assert result.ret == 0
    assert shown[0] in result.stderr.str().splitlines(), result.stderr.str()


# ----------------------------------------------------------------------------- seen 1: lanes that fit a suite

NET_SUITE = (
    "import os, socket\n\n"
    "def test_uses_its_database():\n"
    "    socket.create_connection(('127.0.0.1', int(os.environ['APP_DB_PORT'])), timeout=2).close()\n"
)


@pytest.mark.parametrize("flag", ["--it", "--lane it"])
def test_a_suite_without_lanes_is_the_integration_lane_when_services_are_asked_for(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, listener: socket.socket, flag: str
) -> None:
    plain_project(pytester)
    write(pytester, {"tests/test_db.py": NET_SUITE, "tests/test_more.py": "def test_more():\n    pass\n"})
    monkeypatch.setenv("APP_DB_PORT", str(listener.getsockname()[1]))
    result = run_inner(pytester, *flag.split())
    result.assert_outcomes(passed=2)


@pytest.mark.parametrize("declared", ["by configuration", "by the layout"])
def test_a_suite_that_declared_lanes_keeps_its_unit_lane_guarded(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, listener: socket.socket, declared: str
) -> None:
    if declared == "by configuration":
        plain_project(pytester, '[tool.testlane.lanes]\nintegration_patterns = ["tests/slow/*"]')
    else:
        plain_project(pytester)
        write(pytester, {"tests/integration/test_flow.py": "def test_flow():\n    pass\n"})
    write(pytester, {"tests/test_db.py": NET_SUITE})
    monkeypatch.setenv("APP_DB_PORT", str(listener.getsockname()[1]))
    result = run_inner(pytester, "--it")
    outcome = result.parseoutcomes()
    assert outcome.get("failed") == 1, result.stdout.str()
    assert "[tool.testlane.lanes] integration_patterns" in result.stdout.str()


def test_run_help_says_what_it_does() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "testlane.cli.main", "run", "--help"], capture_output=True, text=True, check=True
    ).stdout
    flat = re.sub(r"\s+", " ", out)
    assert "TESTLANE_IT=1" in flat and "integration_patterns" in flat and "every test in the integration lane" in flat


# ----------------------------------------------------------------------------- seen 3: fixtures by definition

BY_DEFINITION = {
    "tests/test_own.py": (
        "def test_own_redis_url(redis_url):\n    assert redis_url.startswith('redis://')\n\n"
        "def test_own_postgres(postgres):\n    assert postgres['host'] == '127.0.0.1'\n"
    ),
    # an override that asks for testlane's own: testlane's is what the test gets
    "tests/wraps/conftest.py": (
        "import pytest\n\n@pytest.fixture\ndef pg_url(pg_url):\n    return pg_url + '?application_name=x'\n"
    ),
    "tests/wraps/test_wrapped.py": "def test_wrapped(pg_url):\n    pass\n",
}


def test_a_projects_own_fixture_named_like_testlanes_is_the_projects(pytester: pytest.Pytester) -> None:
    plain_project(pytester)
    pytester.makeconftest(OWN_CONFTEST)
    write(pytester, BY_DEFINITION)
    result = run_inner(pytester, "-rE")
    result.assert_outcomes(passed=2, errors=1)
    out = result.stdout.str()
    wrapped = "test_wrapped.py::test_wrapped is in the unit lane but uses testlane's service fixture"
    assert f"{wrapped} 'pg_url' (through 'pg_database')" in out
    assert "test_own" not in out.split("short test summary info")[1]


# ----------------------------------------------------------------------------- seen 4: findings are not warnings

LEAKY = (
    "from concurrent.futures import ThreadPoolExecutor\n\n"
    "EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix='app-pool')\n\n"
    "def test_first_use_starts_the_thread():\n"
    "    assert EXECUTOR.submit(lambda: 2).result() == 2\n\n"
    "def test_after():\n"
    "    pass\n"
)


def test_a_leak_under_filterwarnings_error_is_a_finding_not_an_error(pytester: pytest.Pytester) -> None:
    pytester.makefile(
        ".toml",
        pyproject='[project]\nname = "leaky"\nversion = "0"\n[tool.testlane]\nservices = []\n'
        '[tool.pytest.ini_options]\nfilterwarnings = ["error"]\nasyncio_default_fixture_loop_scope = "function"\n',
    )
    pytester.makepyfile(test_pool=LEAKY)
    result = run_inner(pytester, "--report-json", "report.json")
    result.assert_outcomes(passed=2)
    assert result.ret == 0
    out = result.stdout.str().split("testlane findings")[1]
    assert "test_pool.py:5: test_pool.py::test_first_use_starts_the_thread left running: thread 'app-pool_0'" in out
    findings = json.loads((pytester.path / "report.json").read_text())["findings"]
    assert [(f["nodeid"], f["kind"]) for f in findings] == [("test_pool.py::test_first_use_starts_the_thread", "leak")]


REWRITE_PROBE = """
import sys

import pytest

already_imported = []


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    hook = config.pluginmanager.rewrite_hook
    mark = hook.mark_rewrite

    def recording(*names):
        already_imported.extend(name for name in names if name in sys.modules)
        return mark(*names)

    hook.mark_rewrite = recording


def pytest_unconfigure(config):
    print("asked to rewrite, already imported:", sorted(n for n in already_imported if n.startswith("testlane")))
"""


def test_an_opted_in_project_never_asks_pytest_to_rewrite_a_module_it_imported(pytester: pytest.Pytester) -> None:
    """pytest before 9.2 warns "Module already imported so cannot be rewritten" when a plugin module is
    registered through `import_plugin` after it was imported; under `filterwarnings = ["error"]` that is an
    INTERNALERROR before any test runs (seen adopting ihatemoney, pytest 9.0.3). The feature modules are
    registered, not re-imported through pytest's rewrite hook."""
    plain_project(pytester)
    pytester.makeconftest(REWRITE_PROBE)
    pytester.makepyfile(test_x="def test_x():\n    assert 1\n")
    result = run_inner(pytester, "-s", "-W", "error::pytest.PytestAssertRewriteWarning")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["asked to rewrite, already imported: []"])


def test_an_opted_in_run_whose_tests_use_no_service_imports_no_process_machinery(pytester: pytest.Pytester) -> None:
    """psutil and ctypes (about 40 ms of every start) are imported by what needs them: a leaked child process,
    a server, a failure with server logs; a green run of tests that use no service needs none of them."""
    plain_project(pytester)
    pytester.makeconftest(
        "import sys\n\n\ndef pytest_unconfigure(config):\n"
        "    print('imported:', sorted(m for m in ('psutil', 'ctypes', 'testlane.services.process') "
        "if m in sys.modules))\n"
    )
    pytester.makepyfile(test_x="def test_x():\n    assert 1\n")
    result = run_inner(pytester, "-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["imported: []"])
