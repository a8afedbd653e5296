"""The public API is what `testlane.__all__` says, sorted, and every name resolves."""

from __future__ import annotations

import subprocess
import sys

import testlane


def test_all_is_sorted_and_resolves() -> None:
    assert testlane.__all__ == sorted(testlane.__all__)
    for name in testlane.__all__:
        assert getattr(testlane, name) is not None, name


def test_every_public_name_is_documented() -> None:
    for name in testlane.__all__:
        assert getattr(testlane, name).__doc__, f"testlane.{name} has no docstring"


def test_unknown_attribute_is_an_attribute_error() -> None:
    try:
        testlane.no_such_thing  # noqa: B018
    except AttributeError as exc:
        assert "no_such_thing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_importing_the_plugin_does_not_import_drivers() -> None:
    heavy = ("psycopg", "redis", "sqlalchemy", "psutil", "rich", "uvicorn", "websockets", "respx", "httpx")
    heavy += ("time_machine", "polyfactory", "fastapi", "starlette")
    code = (
        "import importlib, sys, testlane.pytest_plugin.plugin as plugin\n"
        "for name in plugin.FEATURES:\n"
        "    importlib.import_module(name)\n"
        f"heavy = [m for m in {heavy!r} if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
