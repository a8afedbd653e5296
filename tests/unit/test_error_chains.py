"""A user-facing error is one message: nothing in testlane raises a new error, or fails a test, inside an
``except`` block without cutting the chain, or pytest and Python print the caught error first and then, after
"During handling of the above exception, another exception occurred:", the same text again (a fresh user saw a
missing-extension error twice under ``pytest --it``). Re-raise with ``from None`` (or ``from exc`` when the cause
is worth showing), and fail tests with ``testlane.pytest_plugin.boundary.fail_test``."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "testlane"
FAILS = {"pytest.fail", "pytest.exit", "pytest.skip", "pytest.xfail"}


def chained_errors(source: str) -> list[str]:
    found = []
    for handler in ast.walk(ast.parse(source)):
        if not isinstance(handler, ast.ExceptHandler):
            continue
        for node in ast.walk(ast.Module(body=handler.body, type_ignores=[])):
            if isinstance(node, ast.Raise) and node.exc is not None and node.cause is None:
                found.append(f"{node.lineno}: raise {ast.unparse(node.exc)}")
            if isinstance(node, ast.Call) and ast.unparse(node.func) in FAILS:
                found.append(f"{node.lineno}: {ast.unparse(node.func)}(...)")
    return sorted(found)


def test_no_error_is_raised_inside_an_except_block_without_cutting_the_chain() -> None:
    problems = [
        f"{path.relative_to(SRC.parent)}:{problem}"
        for path in sorted(SRC.rglob("*.py"))
        for problem in chained_errors(path.read_text())
    ]
    assert problems == []


def test_the_check_finds_both_shapes() -> None:
    source = "try:\n    f()\nexcept E as exc:\n    pytest.fail(str(exc))\n    raise ConfigError('x')\n"
    assert chained_errors(source) == ["4: pytest.fail(...)", "5: raise ConfigError('x')"]
    assert chained_errors("try:\n    f()\nexcept E:\n    raise ConfigError('x') from None\n") == []
