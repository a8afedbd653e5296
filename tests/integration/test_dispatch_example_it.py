"""The dispatch example (examples/dispatch) runs, and its seam tests catch every broken variant.

Two runs of the example's own suite under ``testlane run``, as a user would run it:

* as shipped: every test passes (unit lane with fakes, seam and query tests on real servers);
* with ``--broken all``: every seam test (Postgres, Redis Streams, NATS JetStream) runs once per
  implementation; the ``[real]`` ones pass and each deliberately broken variant
  (examples/dispatch/dispatch/broken.py) fails exactly the tests listed in ``CATCHES`` below — every
  variant is caught, and by the seam that guards it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.helpers import clean_env, leftovers, run_cli

pytestmark = pytest.mark.timeout(600)

EXAMPLE = REPO / "examples" / "dispatch"

LOCK_HELD = "test_locks.py::test_a_held_key_is_refused_until_released"
LOCK_KILLED = "test_locks.py::test_killing_the_holding_connection_releases_the_lock"
LOCK_STALLED = "test_locks.py::test_a_stalled_holder_keeps_the_lock"
CLAIM = "test_claims.py::test_two_concurrent_claims_of_one_job_have_one_winner"
ON_CONFLICT = "test_wake_index.py::test_concurrent_inserts_of_one_wait_keep_one_row"
GROUP_ONCE = "test_stream.py::test_one_event_two_workers_of_a_group_handle_it_once"
GROUP_BLOCKED = "test_stream.py::test_an_event_emitted_while_both_workers_wait_is_handled_once"
REDELIVERY = "test_stream.py::test_a_job_held_by_a_dead_worker_is_reclaimed_and_completed_once"
JS_ONCE = "test_jetstream.py::test_competing_workers_handle_each_job_once"
JS_WAITING = "test_jetstream.py::test_a_job_published_while_both_workers_wait_goes_to_one"
JS_KILLED = "test_jetstream.py::test_a_job_held_by_a_killed_worker_is_redelivered_once_and_completed_once"
JS_STALLED = "test_jetstream.py::test_a_worker_stalled_past_ack_wait_loses_its_job_and_it_takes_effect_once"
JS_HELPER = "test_jetstream.py::test_the_job_worker_passes_the_redelivery_seam_of_testlane_seams_jetstream"
CASE_INSENSITIVE = "test_queries.py::test_queue_names_are_unique_and_found_in_any_case"
OWNER_SCOPED = "test_queries.py::test_an_owner_deletes_its_own_schedules_only"
OVERLAP = "test_queries.py::test_windows_overlap_half_open_including_open_ended_ones"

# broken variant -> the tests that must fail with it (all others must pass)
CATCHES: dict[str, set[str]] = {
    "xact-lock": {LOCK_HELD, LOCK_KILLED, LOCK_STALLED},
    "release-elsewhere": {LOCK_HELD, LOCK_STALLED},
    "lock-table": {LOCK_KILLED},
    "check-then-delete": {CLAIM},
    "check-then-insert": {ON_CONFLICT},
    "no-group": {GROUP_ONCE, GROUP_BLOCKED, REDELIVERY},
    "no-ack": {GROUP_ONCE, GROUP_BLOCKED, REDELIVERY},
    "ack-early": {REDELIVERY},
    "no-reclaim": {REDELIVERY},
    "ack-on-receipt": {JS_KILLED, JS_STALLED, JS_HELPER},
    "ack-none": {JS_KILLED, JS_STALLED, JS_HELPER},
    "default-ack-wait": {JS_KILLED, JS_STALLED},
    "own-consumer": {JS_ONCE, JS_WAITING, JS_KILLED, JS_STALLED},
    "no-dedupe": {JS_STALLED},
    "case-sensitive": {CASE_INSENSITIVE},
    "unscoped": {OWNER_SCOPED},
    "contained": {OVERLAP},
}
SEAM_TESTS = {LOCK_HELD, LOCK_KILLED, LOCK_STALLED, CLAIM, ON_CONFLICT, GROUP_ONCE, GROUP_BLOCKED, REDELIVERY}
SEAM_TESTS |= {JS_ONCE, JS_WAITING, JS_KILLED, JS_STALLED, JS_HELPER}
QUERY_TESTS = {CASE_INSENSITIVE, OWNER_SCOPED, OVERLAP}


def run_example(tmp_path: Path, data_dir: Path, *args: str) -> dict[str, str]:
    """Run the example's suite under `testlane run`; the outcome of each test id (``file::name[params]``)."""
    junit = tmp_path / "junit.xml"
    env = clean_env({"TESTLANE_DATA_DIR": str(data_dir)})
    env.pop("PYTEST_ADDOPTS", None)
    proc = run_cli(
        ["run", "--", "-p", "no:cacheprovider", "-q", f"--junitxml={junit}", *args], cwd=EXAMPLE, env=env, timeout=500
    )
    assert junit.exists(), f"the example's run wrote no report (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    outcomes = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        module = case.get("classname", "").rsplit(".", 1)[-1]
        kinds = {child.tag for child in case}
        outcome = "failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed"
        outcomes[f"{module}.py::{case.get('name')}"] = outcome
    assert leftovers(data_dir) == []
    return outcomes


def split(test_id: str) -> tuple[str, str]:
    """``test_x.py::test_y[no-ack-kill]`` -> (``test_x.py::test_y``, ``no-ack-kill``)."""
    base, _, params = test_id.partition("[")
    return base, params.rstrip("]")


def variant_of(params: str) -> str | None:
    for name in sorted([*CATCHES, "real"], key=len, reverse=True):
        if params == name or params.startswith(f"{name}-") or params.endswith(f"-{name}"):
            return name
    return None


def test_the_example_passes_as_shipped(tmp_path: Path, data_dir: Path) -> None:
    outcomes = run_example(tmp_path, data_dir)
    failed = sorted(test for test, outcome in outcomes.items() if outcome != "passed")
    assert failed == []
    tests = {split(test)[0] for test in outcomes}
    assert tests >= SEAM_TESTS | QUERY_TESTS  # every seam and query test ran
    assert any(test.startswith("test_dispatcher.py::") for test in tests)  # and the unit lane, with fakes
    assert any(test.startswith("test_queue_logic.py::") for test in tests)  # the queue worker's, with a fake queue
    assert len(outcomes) == 31


def test_every_broken_variant_is_caught_by_the_seam_it_breaks(tmp_path: Path, data_dir: Path) -> None:
    outcomes = run_example(tmp_path, data_dir, "--broken", "all", "-n", "2", "tests/integration")
    caught: dict[str, set[str]] = {name: set() for name in CATCHES}
    real_failures = []
    for test_id, outcome in outcomes.items():
        base, params = split(test_id)
        variant = variant_of(params)
        if variant == "real" and outcome != "passed":
            real_failures.append(test_id)
        elif variant in caught and outcome == "failed":
            caught[variant].add(base)
    assert real_failures == []
    assert caught == CATCHES
    ran = {split(test)[0] for test in outcomes if variant_of(split(test)[1]) not in (None, "real")}
    assert ran == SEAM_TESTS | QUERY_TESTS  # every seam and query test also ran broken
