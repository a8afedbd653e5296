"""docs/seams.md's queue sections, run as written: every ``python`` code block under "Queues: who got
what", "Queues: RabbitMQ" and "Queues: JetStream" is extracted (as test_examples_it.py's ``readme_block``
does for the README), executed as a module, and each ``test_*`` function it defines runs here with the
fixtures it names (``rabbitmq_vhost``, ``jetstream``: testlane's own, as a user's test gets them)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from testlane.services.rabbitmq import DEFAULT_BINARY

SEAMS_MD = Path(__file__).resolve().parents[2] / "docs" / "seams.md"
SECTIONS = ("Queues: who got what", "Queues: RabbitMQ", "Queues: JetStream")
DOCSTRINGS = ("testlane.seams.rabbitmq", "testlane.seams.jetstream")

pytestmark = pytest.mark.timeout(120)


def section(heading: str) -> str:
    """The text of docs/seams.md's ``## heading`` section, up to the next ``## `` heading."""
    text = SEAMS_MD.read_text()
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def python_blocks(heading: str) -> list[str]:
    """The section's ``python`` code blocks, exactly as written."""
    return [b.split("```", 1)[0] for b in section(heading).split("```python\n")[1:]]


def docstring_block(module: str) -> str:
    """The example of ``module``'s docstring: the indented block after ``Example ...::``, dedented."""
    import importlib
    import textwrap

    doc = importlib.import_module(module).__doc__ or ""
    block = []
    for line in doc.split("::\n", 1)[1].split("\n"):
        if line and not line.startswith("    "):
            break
        block.append(line)
    return textwrap.dedent("\n".join(block))


def doc_tests(heading: str) -> dict[str, Callable[..., Any]]:
    """The ``test_*`` functions the section's code blocks define (each block a module of its own); a
    module heading (``testlane.seams.x``) means the example of that module's docstring."""
    tests: dict[str, Callable[..., Any]] = {}
    blocks = [docstring_block(heading)] if heading.startswith("testlane.") else python_blocks(heading)
    for n, block in enumerate(blocks):
        namespace: dict[str, Any] = {"__name__": f"seams_md_{n}"}
        exec(compile(block, f"{SEAMS_MD}::{heading}#{n}", "exec"), namespace)
        defined = {name: fn for name, fn in namespace.items() if name.startswith("test_") and callable(fn)}
        assert defined, f"a python block of '{heading}' defines no test: make it runnable, or not python"
        tests.update(defined)
    return tests


def _needs(heading: str) -> list[pytest.MarkDecorator]:
    if heading in ("Queues: RabbitMQ", "testlane.seams.rabbitmq"):
        return [pytest.mark.skipif(not Path(DEFAULT_BINARY).is_file(), reason="no local rabbitmq-server")]
    if heading in ("Queues: JetStream", "testlane.seams.jetstream"):
        import importlib.util

        return [pytest.mark.skipif(importlib.util.find_spec("nats") is None, reason="no nats-py")]
    return []


CASES = [
    pytest.param(heading, name, marks=_needs(heading), id=f"{heading}::{name}")
    for heading in (*SECTIONS, *DOCSTRINGS)
    for name in doc_tests(heading)
]


def test_each_broker_has_its_own_complete_section_with_runnable_examples() -> None:
    for heading in SECTIONS:
        assert python_blocks(heading), f"'{heading}' has no runnable example"
        text = section(heading)
        assert text.count("```") % 2 == 0, f"'{heading}' has an unclosed code block"
        assert not text.rstrip().endswith(":"), f"'{heading}' stops mid-sentence"
    assert "nats" not in section("Queues: RabbitMQ").lower()  # JetStream's story lives under its own heading
    assert "pika" not in section("Queues: JetStream").lower()
    # each handler's signature and argument type is stated
    assert "`handler(body: str) -> object`" in section("Queues: RabbitMQ")
    assert "`msg.data`, **bytes**" in section("Queues: JetStream")


@pytest.mark.parametrize(("heading", "name"), CASES)
def test_the_docs_example_passes_as_written(heading: str, name: str, request: pytest.FixtureRequest) -> None:
    fn = doc_tests(heading)[name]
    fn(*(request.getfixturevalue(param) for param in inspect.signature(fn).parameters))
