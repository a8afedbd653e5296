"""The project's own variables, pointed at a test's lease for the test's duration: one place for every kind.

A per-test fixture (``jetstream``, ``rabbitmq_vhost``, ``mqtt_namespace``, ``s3_bucket``) hands the test a
namespace of its own; the application under test reads its coordinates from the variables the project maps in
``[tool.testlane.env]``. :func:`mapped_for_test` renders the variables that refer to the kind with the lease's
parts (``overrides``, or a handle whose coordinates are the lease's), sets them, and puts back what was there
when the block ends — the run-level values, or nothing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from testlane.core.runenv import restore

if TYPE_CHECKING:
    from testlane.pytest_plugin.plugin import TestlanePlugin
    from testlane.services.base import Server

__all__ = ["mapped_for_test"]


@contextlib.contextmanager
def mapped_for_test(
    plugin: TestlanePlugin,
    kind: str,
    server: Server,
    overrides: Mapping[tuple[str, str], str] | None = None,
) -> Iterator[dict[str, str]]:
    """Set the ``[tool.testlane.env]`` variables that refer to ``kind``, rendered against ``server`` with
    ``overrides`` (``{(kind, part): value}``: the lease's URL, user, prefix...), for the block; yields them
    (name -> value; empty when the project maps none). Restores the previous values on exit."""
    from testlane.services.env_mapping import render_mapping, variables_of

    mapping = plugin.settings.env
    saved: dict[str, str | None] = {}
    values: dict[str, str] = {}
    try:
        if variables_of(mapping, kind):
            servers = {**plugin.active_servers(), kind: server}
            values = render_mapping(mapping, servers, overrides=overrides, only=kind, only_available=True)
            for key, value in values.items():
                saved.setdefault(key, os.environ.get(key))
                os.environ[key] = value
        yield values
    finally:
        restore(os.environ, saved)
