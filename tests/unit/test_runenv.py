"""RunEnv: the run variables, typed, read from and written to an environment."""

from __future__ import annotations

import pytest

from testlane.core import environment
from testlane.core.errors import ConfigError
from testlane.core.runenv import RUN_VARIABLES, RunEnv, restore


def test_reads_the_run_variables_typed() -> None:
    env = RunEnv.from_environ(
        {
            "TESTLANE_IT": "yes",
            "TESTLANE_RUN_ID": " 0a1b2c3d ",
            "TESTLANE_OWNER_PID": "4242",
            "TESTLANE_SERVICES_FILE": "",
            "PYTEST_XDIST_WORKER": "GW3",
            "PYTEST_XDIST_WORKER_COUNT": "4",
            "HOME": "/root",
        }
    )
    assert env.integration_lane is True
    assert env.run_id == "0a1b2c3d"  # stripped
    assert env.owner_pid == 4242 and env.owned_by(4242)
    assert env.services_file is None  # empty is unset
    assert (env.worker, env.workers) == ("gw3", 4)


def test_defaults_outside_a_run() -> None:
    env = RunEnv.from_environ({"TESTLANE_OWNER_PID": "not a pid"})
    assert env == RunEnv()
    assert (env.integration_lane, env.worker, env.workers, env.owner_pid) == (False, "main", 1, None)


def test_a_lane_value_that_is_neither_true_nor_false_fails_when_the_lane_is_read() -> None:
    env = RunEnv.from_environ({"TESTLANE_IT": "maybe", "TESTLANE_RUN_ID": "0a1b2c3d"})
    assert env.run_id == "0a1b2c3d"  # the other variables stay readable
    with pytest.raises(ConfigError, match="neither true nor false"):
        _ = env.integration_lane


def test_round_trips_through_an_environment() -> None:
    env = RunEnv(it="1", run_id="0a1b2c3d", owner_pid=7, reported_file="/tmp/r", xdist_worker="gw0")
    written = env.to_environ()
    assert written == {
        "TESTLANE_IT": "1",
        "TESTLANE_RUN_ID": "0a1b2c3d",
        "TESTLANE_OWNER_PID": "7",
        "TESTLANE_REPORTED_FILE": "/tmp/r",
    }  # pytest-xdist's own variables are never written
    assert RunEnv.from_environ(written) == env.replace(xdist_worker=None)


def test_a_child_environment_drops_the_outer_run() -> None:
    outer = {"HOME": "/root", "TESTLANE_RUN_ID": "deadbeef", "TESTLANE_POSTGRES_URL": "postgresql://x", "DROP": "1"}
    child = RunEnv(it="1").child_environ(outer, drop=("DROP",))
    assert child == {"HOME": "/root", "TESTLANE_IT": "1"}


def test_write_and_restore() -> None:
    environ = {"TESTLANE_RUN_ID": "deadbeef"}
    saved = RunEnv(run_id="0a1b2c3d", services_file="/s.json").write(environ)
    assert environ == {"TESTLANE_RUN_ID": "0a1b2c3d", "TESTLANE_SERVICES_FILE": "/s.json"}
    restore(environ, saved)
    assert environ == {"TESTLANE_RUN_ID": "deadbeef"}


def test_every_run_variable_is_declared_or_pytest_xdists() -> None:
    declared = environment.declared_names()
    assert {v for v in RUN_VARIABLES if not v.startswith("PYTEST_XDIST_")} <= declared
