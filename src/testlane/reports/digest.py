"""The failure digest: only failures, grouped by root cause, and one summary line.

For each group: what failed and how many tests, the file:line of the failing assertion or error and
its statement, the assertion's explanation (the diff), the tail of the captured log, the lines the
servers (Postgres, Valkey) logged during the test, and the exact command that re-runs those tests.
The summary line is last; it says the run's verdict (:mod:`testlane.reports.verdict`), the one
the exit status says too: PASSED only when nothing failed and something was tested (or the project's
own skip marks skipped everything: ``0 passed``). A crash, an interruption, a collection error or an
empty collection is said as such.

The size budget (characters) is met by folding the excerpts, in this order: detail of later groups
(logs, diffs, node ids), later groups to one line each, the first group's logs and longer diff, then
whole later groups, named in one line with the command that reruns them. testlane's own message and
hint (``Failure.own``) are never cut, at any level; the project's text may be shortened. The first
group keeps its location, message, the start of its diff and its rerun command; only if that alone
exceeds the budget are its excerpts cut, whole lines only.
"""

from __future__ import annotations

import shlex
from collections import defaultdict
from dataclasses import dataclass

from testlane.core.redact import redact, redact_data
from testlane.reports.failures import TIMEOUT_MESSAGE
from testlane.reports.model import Failure, Group, RunResult
from testlane.reports.rerun import rerun_target, widened

__all__ = ["render_cause", "render_digest", "rerun_command", "summary_line"]

# Detail per level: (message lines, diff lines, node ids listed, log lines, server log lines)
_LEVELS = {
    4: (3, 12, 3, 8, 8),
    3: (2, 6, 3, 4, 4),
    2: (1, 4, 2, 0, 2),
    1: (1, 2, 1, 0, 0),
}
_LABELS = {
    "assertion": "FAILED",
    "failure": "FAILED",
    "error": "ERROR",
    "timeout": "TIMEOUT",
    "crash": "CRASHED",
    "collection": "COLLECTION ERROR",
    "internal": "INTERNAL ERROR",
}
_RERUN_IDS = 3
_HINTS_SHOWN = 3


def _plural(n: int, word: str) -> str:
    if word == "error":
        return f"{n} error{'s' if n != 1 else ''}"
    return f"{n} {word}"


def summary_line(result: RunResult) -> str:
    """One line: the verdict, the counts, the time, the number of root causes."""
    counts = result.counts
    verdict = result.verdict  # the one decision: the exit code shown is the one the process exits with
    parts = [_plural(counts[name], name) for name in ("failed", "error", "passed") if counts[name]]
    if verdict.outcome == "passed" and verdict.nothing_tested and not verdict.lane_off:
        parts.insert(0, "0 passed")  # the project's own skip marks skipped everything: pytest's 0 stands
    parts += [f"{counts[name]} {name}" for name in ("skipped", "xfailed", "xpassed", "incomplete") if counts[name]]
    if result.deselected:
        parts.append(f"{result.deselected} deselected")
    tally = ", ".join(parts) or "0 tests ran"
    causes = len(result.groups)
    cause_text = f"; {causes} root cause{'s' if causes != 1 else ''}" if causes else ""
    if verdict.outcome == "passed":
        # Nothing to act on: the verdict and the counts, no time (the shortest line that says it).
        return f"testlane: {verdict.label} — {tally}"
    exit_text = f"exit {verdict.exit_code}" if verdict.exit_code is not None else "no exit code"
    return f"testlane: {verdict.label} — {tally} in {result.duration:.2f}s{cause_text} ({exit_text})"


# --------------------------------------------------------------------------- rerun


def _quote(arg: str) -> str:
    return shlex.quote(arg)


def rerun_command(result: RunResult, group: Group, files_exact: bool) -> tuple[str, str]:
    """The command that re-runs ``group``'s tests, and a note when it runs only some of them."""
    nodeids = [n for n in group.nodeids if n and not n.startswith("(")]
    if not nodeids:
        return "", ""
    prefix = result.rerun_prefix
    if result.it_flag and any(f.lane == "it" for f in group.failures):
        prefix += " --it"
    failing = len(set(nodeids))  # before parameter sets merge into their function's id
    nodeids = _whole_functions(result, nodeids)
    # A parameter set named by this run's URL or a secret is re-run by its function (reports.rerun.rerun_target).
    wider = [n for n in nodeids if widened(n)]
    nodeids = list(dict.fromkeys(rerun_target(n) for n in nodeids))
    note = ""
    if group.first.cause and not files_exact and len(nodeids) > 1:
        # One cause of testlane's (a migration, a service): after the fix every one of these tests must
        # run again, and their files hold them all (and maybe a few more, which the note counts).
        targets = list(dict.fromkeys(n.split("::", 1)[0] for n in nodeids))
        others = sum(1 for t in result.tests if t.nodeid.split("::", 1)[0] in targets) - failing
        note = f"and {others} other test{'s' if others != 1 else ''} in those files" if others > 0 else ""
    elif files_exact:
        targets = list(dict.fromkeys(n.split("::", 1)[0] for n in nodeids))
    elif len(nodeids) > _RERUN_IDS:
        targets = nodeids[:_RERUN_IDS]
        note = f"first {_RERUN_IDS} of {len(nodeids)}"
    else:
        targets = nodeids
    if wider and not files_exact:
        # said, not hidden: the command runs every parameter set of those functions, not only the failing ones
        whole = "all its parameters" if len(targets) == 1 else "all parameters of the tests named by function"
        note = f"{whole}; {note}" if note else whole
    return f"{prefix} {' '.join(_quote(t) for t in targets)}", note


def _whole_functions(result: RunResult, nodeids: list[str]) -> list[str]:
    """``nodeids`` with the parameter sets of one test function, when all of them are there, as that
    function's node id: it runs exactly those, in a fraction of the characters."""
    params: dict[str, set[str]] = defaultdict(set)
    for test in result.tests:
        base, bracket, _ = test.nodeid.partition("[")
        if bracket:
            params[base].add(test.nodeid)
    wanted = set(nodeids)
    out: list[str] = []
    for nodeid in nodeids:
        base, bracket, _ = nodeid.partition("[")
        whole = bracket and len(params.get(base, ())) > 1 and params[base] <= wanted
        out.append(base if whole else nodeid)
    return list(dict.fromkeys(out))


def _exact_files(result: RunResult) -> dict[int, bool]:
    """Per group: whether re-running its files runs exactly its tests (every test there failed so)."""
    by_file: dict[str, set[str]] = defaultdict(set)
    for test in result.tests:
        by_file[test.nodeid.split("::", 1)[0]].add(test.nodeid)
    exact: dict[int, bool] = {}
    for index, group in enumerate(result.groups):
        ids = set(group.nodeids)
        files = {n.split("::", 1)[0] for n in ids}
        exact[index] = len(ids) > 1 and all(by_file.get(f) and by_file[f] <= ids for f in files)
    return exact


# --------------------------------------------------------------------------- one group


@dataclass
class _GroupView:
    index: int
    group: Group
    rerun: tuple[str, str]

    def essentials(self) -> list[str]:
        """What is never cut: the headline, testlane's own message and hints whole, the rerun command."""
        lines = self.lines(1)
        command = self.rerun[0]
        first = self.group.first
        own = len(first.detail) if first.own else 0
        keep = lines[: 1 + (1 if first.location else 0) + len(self._hints()) + own]
        return [*keep, *(line for line in lines if command and line.startswith("    rerun: "))]

    def _hints(self) -> list[str]:
        """Hints are testlane's own explanation of the failure (the request http_mock did not match behind
        a 500): whole at every level, unless the message already says them."""
        first = self.group.first
        said = "\n".join([first.message, *first.detail])
        return [f"    {hint}" for hint in first.hints[:_HINTS_SHOWN] if hint.split(" — ")[-1] not in said]

    def lines(self, level: int) -> list[str]:
        first = self.group.first
        count = self.group.count
        label = _LABELS.get(first.kind, "FAILED")
        if first.kind == "error" and first.phase in ("setup", "teardown"):
            label = f"ERROR in {first.phase} of"
        what = first.nodeid if count == 1 else f"{count} tests"
        if count == 1 and level > 0 and self.rerun[0] and _quote(first.nodeid) in self.rerun[0]:
            what = ""  # the rerun line below names the test: said once (level 0 has no rerun line)
            label = label.removesuffix(" of")  # "ERROR in setup"
        if first.cause:  # one root cause of testlane's: said once, its tests are counted below
            label, what = "ERROR", ""
        message = _message(first)
        head = f"[{self.index + 1}] {label} {what} — {message}".replace("  ", " ").rstrip(" —")
        # testlane's own message and hint say what to do: whole at every level (the excerpts fold instead).
        own = [f"      {line}" for line in first.detail] if first.own else []
        hints = self._hints()
        if level == 0:
            where = f" at {first.location}" if first.location else ""
            return [head + where, *own, *hints] if first.own else [_clip(head, 160) + where, *hints]
        n_msg, n_diff, n_ids, n_log, n_srv = _LEVELS[level]
        out = [head if first.own else _clip(head, 240)]
        if first.location:
            where = f"    at {first.location}"
            if first.function and first.function != _test_function(first.nodeid):
                where += f" in {first.function}"  # a fixture's or a helper's: the test's own is in the node id
            if first.source and not _said(first):
                where += f": {first.source}"
            out.append(_clip(where, 200))
        out += hints
        detail = first.detail
        if n_msg > 1 and not detail and "\n" in first.message:
            detail = first.message.splitlines()[1:n_msg]
        out += own or _folded([_clip(f"      {line}", 200) for line in detail], n_diff)
        if first.cause and self.group.count and not first.nodeid.startswith("("):
            ids = self.group.nodeids
            listed = min(n_ids, 2)
            shown = _joined_ids(ids[:listed])
            more = f" … and {count - listed} more" if count > listed else ""
            verb = "errored" if first.phase in ("setup", "teardown") else "failed"
            tests = f"{count} tests {verb}" if count != 1 else f"1 test {verb}"
            out.append(_clip(f"    {tests} because of it: {shown}{more}", 400))
        elif count > 1:
            ids = self.group.nodeids
            shown = _joined_ids(ids[:n_ids])
            more = f" … and {count - n_ids} more" if count > n_ids else ""
            out.append(_clip(f"    tests: {shown}{more}", 400))
        if n_log:
            logs = first.logs or first.output
            if logs:
                kind = "captured log" if first.logs else "captured output"
                out.append(f"    {kind} (last lines):")
                out += [_clip(f"      {line}", 200) for line in logs[-n_log:]]
        if n_srv:
            for name, lines in first.servers.items():
                if lines:
                    out.append(f"    {name} log during the test:")
                    out += [_clip(f"      {line}", 240) for line in lines[-n_srv:]]
        command, note = self.rerun
        if command:
            out.append(f"    rerun: {command}" + (f"   ({note})" if note else ""))
        return out


def render_cause(failure: Failure) -> list[str]:
    """A root cause of testlane's that stopped the run before any test (``failures.failure_from_error``),
    as the digest's group for it says it: the error, the file:line to fix, testlane's message and hint."""
    lines = _GroupView(0, Group(key=("start-up",), failures=[failure]), ("", "")).lines(4)
    return [redact(line) for line in lines]


def _test_function(nodeid: str) -> str:
    return nodeid.rsplit("::", 1)[-1].split("[", 1)[0]


def _said(failure: Failure) -> bool:
    """Whether the failing statement adds nothing to the message: a rewritten ``assert`` (pytest's
    explanation shows the comparison and its values) or a ``raise`` (the message is what it raised)."""
    source = failure.source or ""
    return (failure.kind == "assertion" and source.startswith("assert ")) or source.startswith("raise ")


def _joined_ids(ids: list[str]) -> str:
    """Node ids, each parameter set of the same test after the first as ``[…]`` alone."""
    out: list[str] = []
    previous = ""
    for nodeid in ids:
        base, bracket, params = nodeid.partition("[")
        out.append(f"[{params}" if bracket and base == previous else nodeid)
        previous = base if bracket else ""
    return ", ".join(out)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _folded(lines: list[str], keep: int) -> list[str]:
    if len(lines) <= keep:
        return lines
    if keep <= 0:
        return []
    return [*lines[:keep], f"      … {len(lines) - keep} more lines"]


# --------------------------------------------------------------------------- the digest


def _size(blocks: list[list[str]]) -> int:
    return sum(len(line) + 1 for block in blocks for line in block)


def render_digest(result: RunResult, budget: int = 4000) -> str:
    """The digest text, at most ``budget`` characters unless the first failure alone needs more."""
    exact = _exact_files(result)
    views = [_GroupView(i, g, rerun_command(result, g, exact[i])) for i, g in enumerate(result.groups)]
    tail: list[str] = redact_data([*warnings_block(result.findings), *result.notes])
    if result.output_tail:
        tail.append("pytest's last output:")
        tail += [f"  {redact(line)}" for line in result.output_tail]
    tail.append(summary_line(result))
    levels = [4] * len(views)
    shown = len(views)

    def blocks() -> list[list[str]]:
        out = [views[i].lines(levels[i]) for i in range(shown)]
        if shown < len(views):
            out.append([_hidden_line(result, views[shown:])])
        return [*out, tail]

    # Fold: lower the last group that still has detail to spare; the first group stops at level 1. Then
    # drop whole later groups (said in one line with their rerun command): a message is never cut.
    while _size(blocks()) > budget:
        candidates = [i for i in range(shown) if levels[i] > (1 if i == 0 else 0)]
        if candidates:
            levels[candidates[-1]] -= 1
            continue
        if shown > 1:
            shown -= 1
            continue
        break
    text = "\n".join(line for block in blocks() for line in block)
    if len(text) > budget and views:
        # The first failure alone is over budget: keep what is never cut (its headline, testlane's own
        # message and hint, its rerun command), then as much of its excerpts as fits, whole lines only.
        first = views[0]
        hidden = [_hidden_line(result, views[1:])] if len(views) > 1 else []
        essentials = first.essentials()
        room = budget - _size([essentials, hidden, tail]) - 30
        kept: list[str] = []
        for line in first.lines(1):
            if line in essentials:
                kept.append(line)
            elif room - (len(line) + 1) >= 0:
                kept.append(line)
                room -= len(line) + 1
            elif kept[-1:] != ["    … (cut to the budget)"]:
                kept.append("    … (cut to the budget)")
        if first.group.first.own:
            text = "\n".join([*kept, *hidden, *tail])
        else:
            kept = [_clip(line, max(budget // 4, 80)) for line in kept]  # the project's text may be long
            text = "\n".join([*kept, *hidden, *tail])
    return text + "\n"


def _hidden_line(result: RunResult, hidden: list[_GroupView]) -> str:
    """One line for the groups the budget had no room for, with the command that shows them."""
    tests = sum(v.group.count for v in hidden)
    ids = [v.group.nodeids[0] for v in hidden if v.group.nodeids and not v.group.nodeids[0].startswith("(")]
    what = f"{len(hidden)} more root cause{'s' if len(hidden) != 1 else ''} ({tests} test{'s' if tests != 1 else ''})"
    if not ids:
        return f"… {what}: `--format json` lists them all"
    prefix = result.rerun_prefix
    if result.it_flag and any(f.lane == "it" for v in hidden for f in v.group.failures):
        prefix += " --it"
    ids = list(dict.fromkeys(rerun_target(n) for n in ids))
    command = f"{prefix} {' '.join(_quote(n) for n in ids[:_RERUN_IDS])}"
    first = f" (the first {_RERUN_IDS})" if len(ids) > _RERUN_IDS else ""
    return f"… {what} not shown: rerun them with `{command}`{first}; `--format json` lists them all"


_FINDINGS_SHOWN = 5


def warnings_block(findings: list[dict[str, str]]) -> list[str]:
    """The discipline findings set to ``warn`` (leaks, environment changes, background errors), each with
    its test: they do not change the verdict, so they are listed whole, never folded into a group."""
    if not findings:
        return []
    count = len(findings)
    out = [f"warnings: {count} finding{'s' if count != 1 else ''} (they do not fail the run):"]
    out += [f"  {f.get('nodeid', '')} {f.get('message', '')}" for f in findings[:_FINDINGS_SHOWN]]
    if count > _FINDINGS_SHOWN:
        out.append(f"  … and {count - _FINDINGS_SHOWN} more; `--format json` lists them all")
    return out


def _message(failure: Failure) -> str:
    """``Type: message``; a timeout's ``Failed:`` and pytest-timeout's wording say nothing the label
    does not: only its limit (``Timeout >1.0s``) stays."""
    if failure.kind == "timeout":
        text = failure.message
        # the limit, then what follows (testlane's "It is the unit-lane timeout, ...") as its own sentence
        message = TIMEOUT_MESSAGE.sub(
            lambda m: f"Timeout >{m.group(1)}" + ("." if text[m.end() :].strip() else ""), text
        )
        return message if failure.exc_type in ("", "Failed") else f"{failure.exc_type}: {message}"
    if not failure.exc_type:
        return failure.message
    return f"{failure.exc_type}: {failure.message}"


def failure_headline(failure: Failure) -> str:
    """A one-line description of a failure (used by the JSON Lines stream)."""
    message = _message(failure)
    where = f" at {failure.location}" if failure.location else ""
    return (message if failure.own else _clip(message, 200)) + where
