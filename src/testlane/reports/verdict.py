"""The run's verdict and its exit code, decided once (docs/feedback.md, "The verdict").

Every output reads the one :class:`Verdict` of a run: the digest's summary line, the line testlane
adds to pytest's own terminal output, the JSON document, the JSON Lines ``finish`` event, and the
process's exit status (the reports plugin sets ``session.exitstatus`` from it). So they cannot
disagree. Each outcome has one exit code:

=====================  ====  =========================================================
``passed``             0     nothing failed: something was tested, or the project's own skip marks
                             skipped every test (pytest's 0 stands; the tally says ``0 passed``)
``failed``             1     a test, a fixture or teardown failed (collection too, when pytest went on)
``interrupted``        2     Ctrl-C, SIGTERM, ``pytest.exit``; under ``testlane run`` a signal's shell
                             code instead, 130 (SIGINT) or 143 (SIGTERM): what ``testlane run`` exits with
``collection_error``   2     pytest stopped on errors during collection (its "Interrupted: N errors")
``internal_error``     3     pytest or a plugin crashed (INTERNALERROR)
``service_error``      3     a service could not be started (the run stopped at the first test that needed
                             it; ``testlane run`` exits 3 for it too, before pytest)
``usage_error``        4     pytest's command line was wrong
``no_tests``           5     nothing was tested: nothing collected, all deselected, or every test an
                             integration test skipped because the lane is off (``lanes.all_skipped``)
``crashed``            none  the process ended without reporting (``testlane run`` exits 128+signal)
=====================  ====  =========================================================

pytest's own code is where the decision starts, and its codes stand wherever pytest defines them; the
verdict says what the code means in this run (collection errors are "collection failed", not an
interruption). It differs from pytest's code in two cases, where pytest's 0 would mislead: every test
was an integration test skipped because the lane is off (testlane's skip: nothing was tested, so 5
unless ``lanes.all_skipped = "pass"``), and a failure recorded under a 0 (1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = ["EXIT_CODES", "Outcome", "Verdict", "decide"]

Outcome = Literal[
    "passed",
    "failed",
    "no_tests",
    "interrupted",
    "collection_error",
    "internal_error",
    "service_error",
    "usage_error",
    "crashed",
]

EXIT_CODES: dict[Outcome, int] = {
    "passed": 0,
    "failed": 1,
    "interrupted": 2,
    "collection_error": 2,  # pytest's code for it: an interruption of the run
    "internal_error": 3,
    "service_error": 3,  # testlane run's code when a service cannot be started (cli.main)
    "usage_error": 4,
    "no_tests": 5,
}
# pytest's codes, as pytest names them; the verdict may then say more precisely what the code means.
_BY_CODE: dict[int, Outcome] = {
    0: "passed",
    1: "failed",
    2: "interrupted",
    3: "internal_error",
    4: "usage_error",
    5: "no_tests",
}

_LABELS: dict[Outcome, str] = {
    "passed": "PASSED",
    "failed": "FAILED",
    "no_tests": "FAILED — no tests ran",
    "interrupted": "INTERRUPTED (not a success)",
    "collection_error": "ERROR — collection failed",
    "internal_error": "FAILED — pytest crashed (INTERNALERROR)",
    "service_error": "FAILED — a service could not be started",
    "usage_error": "FAILED — usage error (see pytest's error message)",
    "crashed": "FAILED — the run crashed",
}


@dataclass(frozen=True)
class Verdict:
    """What the run means and the exit code that says it."""

    outcome: Outcome
    exit_code: int | None  # None: the process never reported (killed)
    pytest_exit_code: int | None
    nothing_tested: bool = False  # no test passed, failed or xfailed (every one skipped, or none ran)
    lane_off: bool = False  # every test was an integration test skipped because the lane is off

    @property
    def success(self) -> bool:
        return self.outcome == "passed"

    @property
    def label(self) -> str:
        if self.outcome == "passed" and self.nothing_tested and self.lane_off:
            return 'PASSED — nothing was tested (lanes.all_skipped = "pass")'
        return _LABELS[self.outcome]


def decide(
    pytest_exit_code: int | None,
    counts: Mapping[str, int],
    *,
    failures: int = 0,
    collection_errors: bool = False,
    lane_off: bool = False,
    all_skipped: str = "fail",
    listing: bool = False,
    signal_exit: int | None = None,
    service_error: bool = False,
) -> Verdict:
    """The verdict of a run from pytest's exit code, the tests' final outcomes (``counts``, as in
    :attr:`RunResult.counts`), the number of recorded failures, whether every test was an integration
    test skipped because the lane is off (``lane_off``: ``LaneSelection.all_skipped``) and the
    ``lanes.all_skipped`` setting. ``listing``: the run was never meant to run tests (``--collect-only``,
    ``--setup-plan``): pytest's code stands. ``signal_exit``: the signal that interrupted the run when the
    process exits by the shell's convention for it (128+N, under ``testlane run``). ``service_error``: the run
    stopped because a service could not be started (pytest's 3 then says that, not a crash)."""
    code = pytest_exit_code
    tested = sum(counts.get(name, 0) for name in ("passed", "failed", "error", "xfailed", "xpassed"))
    if code is None:
        return Verdict("crashed", None, code, nothing_tested=not tested)
    outcome = _BY_CODE.get(code)
    if outcome is None:  # a code pytest never uses: the process was ended from inside
        return Verdict("crashed", code, code, nothing_tested=not tested)
    failed = bool(failures or counts.get("failed", 0) or counts.get("error", 0))
    if listing:
        return Verdict(outcome, code, code, nothing_tested=not tested)
    if outcome == "passed" and failed:
        outcome = "failed"  # a plugin swallowed the failure: the exit code says it again
    elif outcome == "internal_error" and service_error:
        outcome = "service_error"  # testlane's 3 (as `testlane run`'s), not pytest's INTERNALERROR
    elif outcome == "interrupted" and collection_errors:
        outcome = "collection_error"  # pytest's 2 ("Interrupted: N errors during collection"), said as what it is
    elif outcome == "passed" and not tested and lane_off and counts.get("skipped", 0):
        # Every test was an integration test testlane skipped (the lane is off): nothing was tested, and the
        # run must not pass for it. The project's own skip marks are its decision: pytest's 0 stands.
        if all_skipped == "pass":
            return Verdict("passed", 0, code, nothing_tested=True, lane_off=True)
        return Verdict("no_tests", EXIT_CODES["no_tests"], code, nothing_tested=True, lane_off=True)
    if outcome == "interrupted" and signal_exit is not None:
        return Verdict(outcome, 128 + signal_exit, code, nothing_tested=not tested)
    return Verdict(outcome, EXIT_CODES[outcome], code, nothing_tested=not tested)
