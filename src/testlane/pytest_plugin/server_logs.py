"""Where each of the session's server logs stood when a test started (``offsets_key`` on the test).

The failure context (:mod:`testlane.reports.context`) shows what a server logged from there on when the test
fails. The window is the test's: from the log's size when the test started, or — for a server started or
attached during the test's set-up — when its call started (so a failing call never shows the server's boot or
the template's build). Per test this costs one ``stat`` per running server when the test starts, nothing when
the session has none; the log is read only for a failure. Called by :mod:`testlane.pytest_plugin.runtest`.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from testlane.pytest_plugin.plugin import PLUGIN_NAME

__all__ = ["active_servers", "catch_up", "offsets_key", "record_offsets"]

# server name -> (its log file, the log's size when the test started)
offsets_key = pytest.StashKey[dict[str, tuple[str, int]]]()


def active_servers(config: pytest.Config) -> dict[str, Any]:
    """The servers the session knows so far (none started for asking)."""
    plugin = config.pluginmanager.get_plugin(PLUGIN_NAME)
    active = getattr(plugin, "active_servers", None)
    return dict(active()) if active is not None else {}


def _no_servers(config: pytest.Config) -> bool:
    """Whether the session has asked for no service yet (no provider): twice per test, so without a call of
    :func:`active_servers`."""
    return getattr(config.pluginmanager.get_plugin(PLUGIN_NAME), "_provider", None) is None


def _log_sizes(servers: dict[str, Any]) -> dict[str, tuple[str, int]]:
    sizes: dict[str, tuple[str, int]] = {}
    for name, server in servers.items():
        log_file = getattr(server, "log_file", None)
        if log_file is None:
            continue
        try:
            sizes[name] = (str(log_file), os.stat(log_file).st_size)
        except OSError:
            continue
    return sizes


def record_offsets(item: pytest.Item) -> None:
    """As the test's set-up starts: each running server's log size (nothing on the test when the session has
    no server: pytest keeps every test to the end of the run, and with it what is stored on it)."""
    if _no_servers(item.config):
        return
    servers = active_servers(item.config)
    if servers:
        item.stash[offsets_key] = _log_sizes(servers)


def catch_up(item: pytest.Item) -> None:
    """As the test's call starts: a server first used by its set-up (started, or attached) is measured now: its
    boot and the template's build are set-up's, not the call's."""
    if _no_servers(item.config):
        return
    servers = active_servers(item.config)
    if not servers:
        return
    offsets = item.stash.get(offsets_key, {})
    if servers.keys() - offsets.keys():
        for name, known in _log_sizes(servers).items():
            offsets.setdefault(name, known)
        item.stash[offsets_key] = offsets
