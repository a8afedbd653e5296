"""Machine-readable reports: the versioned JSON document and the JSON Lines stream.

Both carry ``"schema": "testlane.report/1"`` (docs/feedback.md documents every field). Within one
schema version fields are only added, never renamed or removed; a change that breaks readers bumps
the version.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from testlane import __version__
from testlane.core.redact import redact_data
from testlane.reports.digest import render_digest, rerun_command, summary_line
from testlane.reports.model import SCHEMA, Failure, RunResult

__all__ = ["JsonLines", "document", "failure_dict"]


def failure_dict(failure: Failure) -> dict[str, Any]:
    """One failure as JSON-compatible data."""
    data = asdict(failure)
    data["location"] = failure.location
    return data


def document(result: RunResult, *, digest_budget: int = 4000) -> dict[str, Any]:
    """The report document (schema ``testlane.report/1``), credentials masked (:func:`redact_data`)."""
    verdict = result.verdict  # the same decision as the digest's summary line and the exit status
    groups = []
    for index, group in enumerate(result.groups):
        command, note = rerun_command(result, group, files_exact=False)
        first = group.first
        groups.append(
            {
                "id": index + 1,
                "kind": first.kind,
                "phase": first.phase,
                "exception": first.exc_type,
                "message": first.message,
                "location": first.location,
                "cause": first.cause,
                "count": group.count,
                "nodeids": group.nodeids,
                "rerun": command,
                "rerun_note": note,
                "failures": [failure_dict(f) for f in group.failures],
            }
        )
    return redact_data(
        {
            "schema": SCHEMA,
            "testlane_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "outcome": verdict.outcome,
            "success": verdict.success,
            "exit_code": verdict.exit_code,
            "pytest_exit_code": verdict.pytest_exit_code,
            "duration": round(result.duration, 3),
            "summary": {
                "collected": result.collected,
                "deselected": result.deselected,
                **result.counts,
                "root_causes": len(result.groups),
            },
            "summary_line": summary_line(result),
            "notes": list(result.notes),
            "findings": list(result.findings),
            "groups": groups,
            "tests": [
                {
                    "nodeid": t.nodeid,
                    "outcome": t.outcome,
                    "duration": round(t.duration, 4),
                    "lane": t.lane,
                    "findings": [f for f in result.findings if f.get("nodeid") == t.nodeid],
                }
                for t in result.tests
            ],
            "digest": render_digest(result, digest_budget),
        }
    )


class JsonLines:
    """Writes one JSON object per line and flushes it at once, so readers can follow the run."""

    def __init__(self, stream: IO[str], *, close: bool = False) -> None:
        self._stream = stream
        self._close = close
        self._lock = threading.Lock()

    @classmethod
    def to_file(cls, path: Path) -> JsonLines:
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(path.open("w", encoding="utf-8"), close=True)

    def emit(self, event: str, **fields: Any) -> None:
        record = {"event": event, "schema": SCHEMA, "time": round(time.time(), 3), **redact_data(fields)}
        line = json.dumps(record, default=str)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def close(self) -> None:
        if self._close:
            self._stream.close()
