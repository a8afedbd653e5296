"""The run's verdict and its exit code, decided once (docs/feedback.md, "The verdict").

Every output reads the one :class:`Verdict` of a run: the digest's summary line, the line testlane
adds to pytest's own terminal output, the JSON document, the JSON Lines ``finish`` event, and the
process's exit status (the reports plugin sets ``session.exitstatus`` from it). So they cannot
disagree. Each outcome has one exit code:

=================  ====  =========================================================
``passed``         0     something was tested and nothing failed
``failed``         1     a test, a fixture, collection or teardown failed
``interrupted``    2     Ctrl-C, SIGTERM, ``pytest.exit``
``internal_error`` 3     pytest or a plugin crashed (INTERNALERROR)
``usage_error``    4     pytest's command line was wrong
``no_tests``       5     nothing was tested: nothing collected, all deselected, every test skipped
``crashed``        none  the process ended without reporting (``testlane run`` exits 128+signal)
=================  ====  =========================================================

pytest's own code is where the decision starts; the verdict differs from it when pytest's code
would mislead: every test skipped (pytest says 0: nothing was tested, so 5 unless
``lanes.all_skipped = "pass"``), a failure recorded under a 0 (1), collection errors that pytest
reports as an interruption (1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = ["EXIT_CODES", "Outcome", "Verdict", "decide"]

Outcome = Literal["passed", "failed", "no_tests", "interrupted", "internal_error", "usage_error", "crashed"]

EXIT_CODES: dict[Outcome, int] = {
    "passed": 0,
    "failed": 1,
    "interrupted": 2,
    "internal_error": 3,
    "usage_error": 4,
    "no_tests": 5,
}
_BY_CODE: dict[int, Outcome] = {code: outcome for outcome, code in EXIT_CODES.items()}

_LABELS: dict[Outcome, str] = {
    "passed": "PASSED",
    "failed": "FAILED",
    "no_tests": "FAILED — no tests ran",
    "interrupted": "INTERRUPTED (not a success)",
    "internal_error": "FAILED — pytest crashed (INTERNALERROR)",
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

    @property
    def success(self) -> bool:
        return self.outcome == "passed"

    @property
    def label(self) -> str:
        if self.outcome == "passed" and self.nothing_tested:
            return 'PASSED — nothing was tested (lanes.all_skipped = "pass")'
        return _LABELS[self.outcome]


def decide(
    pytest_exit_code: int | None,
    counts: Mapping[str, int],
    *,
    failures: int = 0,
    collection_errors: bool = False,
    all_skipped: str = "fail",
    listing: bool = False,
) -> Verdict:
    """The verdict of a run from pytest's exit code, the tests' final outcomes (``counts``, as in
    :attr:`RunResult.counts`), the number of recorded failures and the ``lanes.all_skipped`` setting.
    ``listing``: the run was never meant to run tests (``--collect-only``, ``--setup-plan``): pytest's
    code stands."""
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
    elif outcome == "interrupted" and collection_errors:
        outcome = "failed"  # pytest stops ("interrupts") the run on collection errors: a failure
    elif outcome == "passed" and not tested:
        # Every test was skipped (integration tests with the lane off, skip marks): nothing was tested.
        if all_skipped == "pass" and counts.get("skipped", 0):
            return Verdict("passed", 0, code, nothing_tested=True)
        outcome = "no_tests"
    return Verdict(outcome, EXIT_CODES[outcome], code, nothing_tested=not tested)
