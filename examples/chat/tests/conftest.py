"""The example's whole test session: after the run, a few lines on what ran against what (`make demo`)."""

from __future__ import annotations

import pytest

from testlane.pytest_plugin.plugin import plugin_of

ROLE = {
    "postgres": "a database per test, cloned from the template migrated by {migrations}",
    "valkey": "a logical database per test",
}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    reports = [
        report
        for outcome in ("passed", "failed")
        for report in terminalreporter.stats.get(outcome, [])
        if getattr(report, "when", None) == "call"
    ]
    integration = sum("integration" in report.keywords for report in reports)
    unit = len(reports) - integration
    if not reports:
        return
    terminalreporter.write_sep("-", "chat example")
    if integration:
        plugin = plugin_of(config)
        terminalreporter.write_line(
            f"{integration} integration tests: the app on live servers (uvicorn, port 0), against"
        )
        for name, server in plugin.provider.active().items():
            role = ROLE.get(name, "").format(migrations=plugin.settings.db.migrations)
            engine = server.instance
            terminalreporter.write_line(
                f"  {engine.engine} {server.version} ({engine.backend}) at {engine.redacted_url}: {role}"
            )
    if unit:
        terminalreporter.write_line(
            f"{unit} unit tests: command handlers, protocol and providers with fakes, no server"
        )
