"""The bundled examples pass, run the way a user runs them: `testlane run` in the example's folder.

A failure inside an example fails this test (and so `make test`), with the example's output attached.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.helpers import clean_env, leftovers, run_cli, server_processes

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# What the chat example must cover (issue 5): each of these tests exists and passed.
CHAT_INTEGRATION = [
    "test_protocol.py::test_every_client_is_welcomed",
    "test_protocol.py::test_a_command_gets_the_answer_with_its_id",
    "test_protocol.py::test_invalid_json_gets_an_error_and_the_connection_stays_usable",
    "test_protocol.py::test_an_unknown_command_fails_cleanly",
    "test_broadcast.py::test_two_clients_both_see_the_conversation",
    "test_broadcast.py::test_clients_of_another_instance_see_it_too",
    "test_streaming.py::test_the_reply_streams_in_order_then_is_stored",
    "test_conversations.py::test_a_conversation_s_whole_life",
    "test_conversations.py::test_deleting_a_conversation_deletes_its_messages",
    "test_conversations.py::test_a_new_conversation_gets_its_title_in_the_background",
]


def run_example(
    name: str, data_dir: Path, tmp_path: Path, *, options: list[str] | None = None, lane: list[str] | None = None
) -> dict[str, str]:
    """Run an example's suite under `testlane run`; return {test id: outcome}."""
    report = tmp_path / f"{name}.xml"
    env = clean_env({"TESTLANE_DATA_DIR": str(data_dir)})
    result = run_cli(
        [*(options or []), "run", "--", "-p", "no:cacheprovider", "-q", f"--junitxml={report}", *(lane or [])],
        cwd=EXAMPLES / name,
        env=env,
        timeout=300,
    )
    output = f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    assert result.returncode == 0, f"the {name} example failed (exit {result.returncode}):\n{output}"
    outcomes: dict[str, str] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        test_id = f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name')}"
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcomes[test_id] = kinds[0] if kinds else "passed"
    assert server_processes(data_dir) == [] and leftovers(data_dir) == []
    return outcomes


@pytest.mark.timeout(300)
def test_the_chat_example_passes_in_both_lanes(data_dir: Path, tmp_path: Path) -> None:
    outcomes = run_example("chat", data_dir, tmp_path)
    not_passed = {test: outcome for test, outcome in outcomes.items() if outcome != "passed"}
    assert not_passed == {}
    unit = [t for t in outcomes if t.startswith("tests/unit/")]
    integration = [t for t in outcomes if t.startswith("tests/integration/")]
    assert len(unit) >= 30 and len(integration) >= 15, (len(unit), len(integration))
    missing = [t for t in CHAT_INTEGRATION if f"tests/integration/{t}" not in outcomes]
    assert missing == []


@pytest.mark.timeout(300)
def test_the_quickstart_example_passes(data_dir: Path, tmp_path: Path) -> None:
    outcomes = run_example("quickstart", data_dir, tmp_path)
    assert outcomes == {
        "tests/test_visits_it.py::test_services_are_real": "passed",
        "tests/test_visits_it.py::test_visits_are_counted_and_cached": "passed",
    }


SYSTEM_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
# The default backend (`auto`: the embedded binaries here) is test_the_chat_example_passes_in_both_lanes's run, the
# integration lane included: an "embedded" entry with no options ran that lane again, the same way (26.5 s).
POSTGRES_BACKENDS = {
    "local": ["--set", "postgres.backend=local"],
    "url": ["--set", "postgres.backend=url", "--set", f"postgres.url={SYSTEM_PG}"],
    "container": ["--set", "postgres.backend=container", "--set", "postgres.image=localhost/testlane-postgres:15"],
}


def _unavailable(backend: str) -> str | None:
    from testlane.services.binaries import local_postgres_candidates
    from tests.integration.test_backends_it import _listening, podman_unavailable

    if backend == "local" and not local_postgres_candidates()[0]:
        return "no local PostgreSQL"
    if backend == "url" and not _listening(5432):
        return "this machine's PostgreSQL is not running on 5432"
    if backend == "container":
        return podman_unavailable()
    return None


@pytest.mark.timeout(600)
@pytest.mark.parametrize("backend", list(POSTGRES_BACKENDS))
def test_the_chat_example_integration_lane_on_each_postgres_backend(
    backend: str, data_dir: Path, tmp_path: Path
) -> None:
    """Issue 8: the same suite, unchanged, on every Postgres backend this machine has."""
    reason = _unavailable(backend)
    if reason:
        pytest.skip(reason)
    outcomes = run_example("chat", data_dir, tmp_path, options=POSTGRES_BACKENDS[backend], lane=["--lane", "it"])
    assert {t: o for t, o in outcomes.items() if o != "passed"} == {}
    missing = [t for t in CHAT_INTEGRATION if f"tests/integration/{t}" not in outcomes]
    assert missing == []
    if backend == "url":
        from tests.integration.test_backends_it import dead_owned_leftovers

        assert dead_owned_leftovers() == [], "the run left databases on the existing server"


README = EXAMPLES.parent / "README.md"


def readme_block(language: str, containing: str) -> str:
    """The README's ``language`` code block that contains ``containing``, exactly as written."""
    blocks = [b.split("```", 1)[0] for b in README.read_text().split(f"```{language}\n")[1:]]
    [block] = [b for b in blocks if containing in b]
    return block


@pytest.mark.timeout(300)
def test_the_readmes_first_examples_pass_as_written(data_dir: Path, tmp_path: Path) -> None:
    # The quick start's tests, copied the way a user copies them: the first one twice (a second test
    # like it must not find its table), the per-test database pair with the README's own migrations key.
    first = readme_block("python", "def test_order_is_stored")
    (tmp_path / "pyproject.toml").write_text(
        '[tool.testlane]\nservices = ["postgres", "valkey"]\n\n' + readme_block("toml", "[tool.testlane.db]")
    )
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "001_users.sql").write_text("CREATE TABLE users (id serial PRIMARY KEY, email text);\n")
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_orders_it.py").write_text(first)
    (tests / "test_returns_it.py").write_text(first.replace("test_order_is_stored", "test_return_is_stored"))
    (tests / "test_signup_it.py").write_text(readme_block("python", "def test_signup"))
    result = run_cli(
        ["run", "--", "-p", "no:cacheprovider", "-q"],
        cwd=tmp_path,
        env=clean_env({"TESTLANE_DATA_DIR": str(data_dir), "TESTLANE_REPORTS_FORMAT": "terminal"}),
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout
    assert server_processes(data_dir) == [] and leftovers(data_dir) == []
