"""What a run produced, as plain data: failures, root-cause groups, counts, and the run's outcome.

The digest (:mod:`testlane.reports.digest`) and the JSON document (:mod:`testlane.reports.jsonreport`)
are two renderings of one :class:`RunResult`. Nothing here imports pytest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from testlane.core.redact import redact, redact_data, redact_nodeid
from testlane.reports.verdict import Outcome, Verdict, decide

__all__ = ["SCHEMA", "Failure", "Group", "Outcome", "RunResult", "TestOutcome"]

SCHEMA = "testlane.report/1"

Kind = Literal["assertion", "failure", "error", "timeout", "crash", "collection", "internal"]


@dataclass
class Failure:
    """One failing report: a test's setup, call or teardown, a collection error, or a crash."""

    nodeid: str
    phase: str  # setup | call | teardown | collect | session
    kind: Kind
    exc_type: str
    message: str
    detail: list[str] = field(default_factory=list)  # the assertion's explanation / diff, the message's rest
    path: str | None = None  # the crash location: deepest frame in the project's own code
    line: int | None = None
    function: str | None = None
    source: str | None = None  # the statement at that line
    logs: list[str] = field(default_factory=list)  # captured log (all phases so far), tail
    output: list[str] = field(default_factory=list)  # captured stdout/stderr, tail
    servers: dict[str, list[str]] = field(default_factory=dict)  # server log lines written during the test
    lane: str | None = None  # "unit" | "it" when known
    own: bool = False  # message and detail are testlane's own text (an error, a hint): never cut
    hints: list[str] = field(default_factory=list)  # what testlane saw that explains it (an unmocked request)
    # testlane's own root cause (TestlaneError.cause: "migration m/002.sql:3", "service postgres"): the
    # failures that share it are one group, whatever their tests; path/line are then the file to fix.
    cause: str | None = None

    def __post_init__(self) -> None:
        # Every rendering (digest, JSON, JSON Lines) starts from here: mask credentials once, before
        # anything clips a line (a clipped URL would no longer be recognized as one). The node id too: a
        # test parametrized by the run's database URL has its password in its id (encode/databases does).
        self.nodeid = redact_nodeid(self.nodeid)
        self.message = redact(self.message)
        self.detail = redact_data(self.detail)
        self.source = redact(self.source) if self.source else self.source
        self.logs = redact_data(self.logs)
        self.output = redact_data(self.output)
        self.servers = redact_data(self.servers)
        self.hints = redact_data(self.hints)

    @property
    def location(self) -> str | None:
        if self.path is None:
            return None
        return f"{self.path}:{self.line}" if self.line else self.path


@dataclass
class Group:
    """Failures with one root cause: same kind of error, same normalized message, same place."""

    key: tuple[str, ...]
    failures: list[Failure] = field(default_factory=list)

    @property
    def first(self) -> Failure:
        return self.failures[0]

    @property
    def nodeids(self) -> list[str]:
        return list(dict.fromkeys(f.nodeid for f in self.failures))

    @property
    def count(self) -> int:
        return len(self.nodeids)


@dataclass(slots=True)  # one per test, kept to the end of the run: no __dict__ each
class TestOutcome:
    """A test's final outcome (the worst of its phases) and its duration."""

    __test__ = False

    nodeid: str
    outcome: str  # passed | failed | error | skipped | xfailed | xpassed | incomplete (never finished its call)
    duration: float = 0.0
    lane: str | None = None

    def __post_init__(self) -> None:
        # Masked as Failure.nodeid is (the two are matched by node id): every rendering starts masked.
        self.nodeid = redact_nodeid(self.nodeid)


@dataclass
class RunResult:
    """Everything one run reports."""

    exit_code: int | None  # pytest's; None when the process never said (crash). The run's own: verdict.exit_code
    duration: float = 0.0
    collected: int = 0
    deselected: int = 0
    tests: list[TestOutcome] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # interruptions, early stops, crashes, in plain words
    rerun_prefix: str = "pytest"
    it_flag: bool = False  # plain pytest needs --it to run integration tests again
    output_tail: list[str] = field(default_factory=list)  # pytest's own last lines, when they explain a failure
    findings: list[dict[str, str]] = field(default_factory=list)  # discipline findings: nodeid, kind, message, location
    # every test was an integration test skipped because the lane is off (LaneSelection.all_skipped)
    lane_off: bool = False
    all_skipped: str = "fail"  # lanes.all_skipped: whether such a run may pass
    listing: bool = False  # --collect-only, --setup-plan...: a run that never meant to run tests
    # under `testlane run`: the signal that interrupted the run; the process exits 128+N, as the shell's convention
    signal_exit: int | None = None
    # the run stopped because a service could not be started (its exit code 3 is not a crash)
    service_error: bool = False

    def count(self, outcome: str) -> int:
        return sum(1 for t in self.tests if t.outcome == outcome)

    @property
    def counts(self) -> dict[str, int]:
        names = ("passed", "failed", "error", "skipped", "xfailed", "xpassed", "incomplete")
        return {name: self.count(name) for name in names}

    @property
    def failure_count(self) -> int:
        return sum(g.count for g in self.groups)

    @property
    def verdict(self) -> Verdict:
        """The run's verdict and exit code (:func:`testlane.reports.verdict.decide`): every output reads it."""
        return decide(
            self.exit_code,
            self.counts,
            failures=self.failure_count,
            collection_errors=any(g.first.kind == "collection" for g in self.groups),
            lane_off=self.lane_off,
            all_skipped=self.all_skipped,
            listing=self.listing,
            signal_exit=self.signal_exit,
            service_error=self.service_error,
        )

    @property
    def outcome(self) -> Outcome:
        return self.verdict.outcome

    @property
    def success(self) -> bool:
        return self.verdict.success
