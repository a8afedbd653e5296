"""Which ``tl_`` databases on a server that outlives its runs are leftovers (engine-independent)."""

from __future__ import annotations

from testlane.databases.leftovers import _classify_all, _of_run
from testlane.databases.owner import this_host
from tests.helpers import dead_pid


def test_an_unmarked_database_of_a_run_proven_gone_is_a_leftover_and_nothing_else_is() -> None:
    """CREATE DATABASE and its owner record are two statements: a run killed between them leaves a clone
    without a record. Its run's other databases prove the run gone; nothing else makes it a leftover."""
    gone = f"testlane:v1 run=1a2b3c4d host={this_host()} pid={dead_pid()} ctime=1.00 created=1700000000"
    rows = [
        ("tl_1a2b3c4d_main_1", gone),
        ("tl_1a2b3c4d_main_3", ""),  # killed between CREATE DATABASE and COMMENT
        ("tl_1a2b3c4d_main_4", "someone's note"),  # any other comment: never guessed at
        ("tl_0badc0de_main_1", ""),  # no run proven gone
    ]
    reaped = {lo.name for lo in _classify_all(rows, None, None) if lo.reason is not None}
    assert reaped == {"tl_1a2b3c4d_main_1", "tl_1a2b3c4d_main_3"}
    # The run's owner sweeping its own run at its end: its unmarked databases too, no other run's.
    swept = {lo.name for lo in _of_run(rows, "1a2b3c4d", this_host())}
    assert swept == {"tl_1a2b3c4d_main_1", "tl_1a2b3c4d_main_3"}
