"""docs/seams.md's queue sections, run as written: every ``python`` code block under "Queues: who got
what", "Queues: RabbitMQ" and "Queues: JetStream" is extracted (as test_examples_it.py's ``readme_block``
does for the README), executed as a module, and each ``test_*`` function it defines runs here with the
fixtures it names (``rabbitmq_vhost``, ``jetstream``: testlane's own, as a user's test gets them)."""

from __future__ import annotations

import inspect
import re
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


def output_blocks(heading: str) -> list[str]:
    """The section's plain code blocks (no language): the failure messages it shows."""
    blocks: list[tuple[str, list[str]]] = []
    inside = False
    for line in section(heading).split("\n"):
        if line.startswith("```"):
            if not inside:
                blocks.append((line[3:], []))
            inside = not inside
        elif inside:
            blocks[-1][1].append(line)
    plain = ["\n".join(lines) + "\n" for language, lines in blocks if language == ""]
    assert all(block.startswith("expected ") for block in plain), plain
    return plain


CONSUMER_LINE = re.compile(r"^  consumer (\S+) received (\d+): (.*)$")
REDELIVERED = re.compile(r"^expected (\S+) to reach (\S+), then to be redelivered (\d+) time\(s\) to (\S+), but")
ONCE = re.compile(r"^expected each of (\d+) messages to be delivered exactly once, but")


def _failure_for(block: str) -> str:
    """What testlane.seams.queue says for the deliveries ``block`` lists (rebuilt from its own lines)."""
    from testlane.seams.queue import Deliveries, assert_delivered_once, assert_redelivered

    head, *lines = block.rstrip("\n").split("\n")
    deliveries = Deliveries()
    for line in lines:
        match = CONSUMER_LINE.match(line)
        assert match, f"not a consumer line: {line!r}"
        name, count, items = match.groups()
        bodies = [] if items == "nothing" else items.split(", ")
        assert len(bodies) == int(count), line
        for body in bodies:
            deliveries.record(name, body.removesuffix(" (redelivered)"), redelivered=body.endswith("(redelivered)"))
    with pytest.raises(AssertionError) as failure:
        if match := REDELIVERED.match(head):
            body, first, times, then = match.groups()
            assert_redelivered(deliveries, body, first=first, then=then, times=int(times))
        else:
            once = ONCE.match(head)
            assert once, f"an output block that is no seam's failure: {head!r}"
            jobs = sorted({d.body for d in deliveries.all}, key=lambda job: int(job.rsplit("-", 1)[1]))
            assert len(jobs) == int(once.group(1)), head
            assert_delivered_once(deliveries, jobs)
    return str(failure.value)


OUTPUTS = [
    pytest.param(block, id=f"{heading}#{n}") for heading in SECTIONS for n, block in enumerate(output_blocks(heading))
]


@pytest.mark.parametrize("block", OUTPUTS)
def test_each_failure_shown_is_what_the_seams_say_for_those_deliveries(block: str) -> None:
    # The failures shown come from broker runs whose interleaving varies; each must be word for word what
    # the assertion says for the deliveries it lists.
    assert _failure_for(block) == block.rstrip("\n")


@pytest.mark.parametrize(("heading", "name"), CASES)
def test_the_docs_example_passes_as_written(heading: str, name: str, request: pytest.FixtureRequest) -> None:
    fn = doc_tests(heading)[name]
    fn(*(request.getfixturevalue(param) for param in inspect.signature(fn).parameters))
