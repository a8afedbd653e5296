"""``testlane hook stop|post-edit``: coding-agent hooks (Claude Code's hook contract).

Both read the hook's JSON from stdin and always exit 0; a problem is reported by printing
``{"decision": "block", "reason": ...}`` on stdout, which Claude Code feeds back to the agent (JSON
with exit 0 is the reliable channel: exit code 2 is ignored for hooks installed by plugins).

``stop`` — the quality gate before the agent may stop. When ``stop_hook_active`` is true the agent is
already continuing because of an earlier block: it may stop now, or it would loop forever on a
failure it cannot fix. Otherwise the gate runs (``hooks.stop_fast``: the fast gate) and, on
failure, blocks with its digest (under 10,000 characters) as the reason.

``post-edit`` — after an Edit/Write: runs ``hooks.post_edit`` (ruff) on the edited file only, no
tests (tests on every edit would report half-finished work). Silent for other files.

docs/agents.md shows the ``.claude/settings.json`` wiring and the equivalents for other agents.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import click

from testlane.cli.common import CliState, pass_state
from testlane.cli.gate import Check, run_check, run_gate
from testlane.core.errors import TestlaneError

__all__ = ["REASON_LIMIT", "block", "hook_group", "read_payload"]

REASON_LIMIT = 10_000  # Claude Code's limit on a hook's reason, in characters (kept strictly under)
POST_EDIT_TIMEOUT = 60.0


def read_payload(stream: Any = None) -> dict[str, Any]:
    """The hook's JSON input; an empty or unreadable input is an empty dict."""
    text = (stream or sys.stdin).read()
    try:
        payload = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        return {}
    return payload if isinstance(payload, dict) else {}


def block(reason: str) -> None:
    """Print the decision that keeps the agent working, with ``reason`` folded under the limit."""
    if len(reason) >= REASON_LIMIT:
        marker = "\n… (cut to fit the hook's limit)\n"
        head = REASON_LIMIT - len(marker) - 1 - 400
        reason = reason[:head] + marker + reason[-400:]
    sys.stdout.write(json.dumps({"decision": "block", "reason": reason}) + "\n")
    sys.stdout.flush()


def _enter_project(payload: dict[str, Any]) -> None:
    """Work where the agent works: the hook's ``cwd``, else ``$CLAUDE_PROJECT_DIR``, else here."""
    for candidate in (payload.get("cwd"), os.environ.get("CLAUDE_PROJECT_DIR")):
        if isinstance(candidate, str) and candidate and Path(candidate).is_dir():
            os.chdir(candidate)
            return


@click.group("hook")
def hook_group() -> None:
    """Hooks for coding agents (Claude Code's contract: JSON on stdin, a decision on stdout)."""


@hook_group.command("stop")
@click.option("--fast", is_flag=True, default=None, help="Run the fast gate (default: setting hooks.stop_fast).")
@pass_state
def stop_command(state: CliState, fast: bool | None) -> None:
    """Stop hook: run the gate; on failure keep the agent working with the digest as the reason."""
    payload = read_payload()
    if payload.get("stop_hook_active") in (True, "true"):
        raise SystemExit(0)  # already continuing after a block: let the agent stop
    _enter_project(payload)
    try:
        settings = state.settings()
        report = run_gate(settings, fast=settings.hooks.stop_fast if fast is None else fast)
    except TestlaneError as exc:
        block(f"testlane gate could not run: {exc}\nFix the configuration, or run `testlane gate` to see more.")
        raise SystemExit(0) from None
    if not report.passed:
        intro = "The quality gate (`testlane gate`) failed. Fix these before finishing:\n\n"
        block(intro + report.render())
    raise SystemExit(0)


@hook_group.command("post-edit")
@pass_state
def post_edit_command(state: CliState) -> None:
    """PostToolUse hook: lint the edited file only; report problems to the agent."""
    payload = read_payload()
    tool_input = payload.get("tool_input")
    file_path = tool_input.get("file_path") if isinstance(tool_input, dict) else None
    if not isinstance(file_path, str) or not file_path:
        raise SystemExit(0)
    _enter_project(payload)
    settings = state.settings()
    path = Path(file_path)
    path = path if path.is_absolute() else Path.cwd() / path
    if path.suffix not in settings.hooks.post_edit_suffixes or not path.is_file():
        raise SystemExit(0)
    try:
        relative = path.resolve().relative_to(settings.project_root.resolve())
    except ValueError:
        raise SystemExit(0) from None  # outside the project: not ours to lint
    command = settings.hooks.post_edit.replace("{file}", shlex.quote(relative.as_posix()))
    result = run_check(
        Check("post-edit", command),
        cwd=settings.project_root,
        exec_prefix=settings.gate.exec_prefix,
        timeout=POST_EDIT_TIMEOUT,
    )
    if result.failed:
        output = "\n".join(line for line in (result.stdout + result.stderr).splitlines() if line.strip())
        problem = f" ({result.problem})" if result.problem else ""
        block(f"`{command}` reported problems in {relative}{problem}:\n{output}")
    raise SystemExit(0)
