"""The innermost project frame of an exception, a formatted traceback and a suspended coroutine."""

from __future__ import annotations

import asyncio
from pathlib import Path

from testlane.core.tracebacks import awaiting, describe, describe_text, project_frame

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().relative_to(ROOT).as_posix()


def _divide() -> float:
    return 1 / 0


def test_describe_names_the_exception_and_its_innermost_project_line() -> None:
    try:
        _divide()
    except ZeroDivisionError as exc:
        text = describe(exc, ROOT)
    assert text.startswith(f"ZeroDivisionError: division by zero at {HERE}:")
    assert text.endswith(" in _divide")


def test_describe_text_reads_the_last_traceback_of_a_chain() -> None:
    text = (
        "Exception in thread worker-1\n\nTraceback (most recent call last):\n"
        f'  File "{ROOT}/app/jobs.py", line 3, in load\n    return {{}}["k"]\nKeyError: \'k\'\n\n'
        "During handling of the above exception, another exception occurred:\n\n"
        "Traceback (most recent call last):\n"
        '  File "/usr/lib/python3.11/threading.py", line 1045, in _bootstrap_inner\n    self.run()\n'
        f'  File "{ROOT}/app/jobs.py", line 7, in run\n    raise RuntimeError("job 4 failed")\n'
        "RuntimeError: job 4 failed\n\nEnable tracemalloc to get traceback where the object was allocated.\n"
    )
    assert describe_text(text, ROOT) == "RuntimeError: job 4 failed at app/jobs.py:7 in run"


def test_awaiting_follows_the_await_chain_of_a_suspended_coroutine() -> None:
    async def inner(event: asyncio.Event) -> None:
        await event.wait()

    async def outer(event: asyncio.Event) -> None:
        await inner(event)

    async def main() -> list[str]:
        event = asyncio.Event()
        task = asyncio.create_task(outer(event))
        await asyncio.sleep(0)
        chain = awaiting(task.get_coro())
        event.set()
        await task
        frame = project_frame(chain, ROOT)
        assert frame is not None and frame.source() == "await event.wait()"
        return [f.function for f in chain]

    assert asyncio.run(main())[:3] == ["outer", "inner", "wait"]
