"""Grouping failures by root cause.

Two failures share a root cause when they are the same kind of error (exception type, or timeout,
crash...), raised at the same place (the deepest frame in the project's own code: the failing
assertion, or the line of the fixture that raised), with the same message once the parts that vary
from test to test are blanked out (numbers, quoted values, addresses, temporary paths). One broken
fixture that fails 200 tests is one group of 200; six unrelated assertions are six groups; a
parametrized test failing at one assertion with different values is one group.

A failure testlane caused on purpose (a service that cannot start, a template whose migration fails,
a set-up command that exits non-zero) carries its cause's identity (``Failure.cause``, from
``TestlaneError.cause``): failures that share it are one group however their tests and messages differ,
in one process or across xdist workers.

Groups are ordered by their first failure, so the run's first failure always leads.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from testlane.reports.model import Failure, Group

__all__ = ["group_failures", "normalize", "root_cause_key"]

_PATTERNS = [
    (re.compile(r"0x[0-9a-fA-F]+"), "0x…"),
    (re.compile(r"(/tmp|/dev/shm|/var/folders)/[^\s'\"]*"), "<tmp>"),
    (re.compile(r"'(?:[^'\\]|\\.)*'"), "'…'"),
    (re.compile(r'"(?:[^"\\]|\\.)*"'), '"…"'),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), "<uuid>"),
    (re.compile(r"\b(tl_|testlane-)\w+"), r"\1…"),
    (re.compile(r"\d+(?:\.\d+)?"), "N"),
]


def normalize(message: str) -> str:
    """The message with its test-specific parts blanked out (first line only, whitespace collapsed)."""
    first = message.strip().splitlines()[0] if message.strip() else ""
    for pattern, replacement in _PATTERNS:
        first = pattern.sub(replacement, first)
    return " ".join(first.split())[:300]


def root_cause_key(failure: Failure) -> tuple[str, ...]:
    """What two failures must share to be one group."""
    if failure.cause:
        return ("cause", failure.cause)
    kind = "error" if failure.kind in ("error", "assertion", "failure") else failure.kind
    return (
        kind,
        failure.exc_type,
        failure.path or "",
        str(failure.line or ""),
        normalize(failure.message),
    )


def group_failures(failures: Iterable[Failure]) -> list[Group]:
    """Failures grouped by :func:`root_cause_key`, in order of each group's first failure."""
    groups: dict[tuple[str, ...], Group] = {}
    for failure in failures:
        key = root_cause_key(failure)
        group = groups.get(key)
        if group is None:
            group = groups[key] = Group(key=key)
        group.failures.append(failure)
    return list(groups.values())
